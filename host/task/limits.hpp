#pragma once
// Flow-control limits per task type (docs/queue-engine.md, "Flow control"), as configured with
// WORKER_LIMITS. A limit names a type pattern and any of: concurrency on this worker,
// concurrency across the fleet (every worker on the same Redis), and a fleet-wide rate. A task
// needs a permit of every limit whose pattern matches its type.
//
// Syntax: limits separated by `;`, each a pattern followed by `key=value` words:
//
//   ai:execute fleet=3 rate=60/m burst=5; worktree:* concurrency=2
//
// A pattern is an exact type, `prefix*` (every type starting with prefix) or `*`.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wk::task {

struct TypeLimit {
  std::string pattern;
  uint32_t concurrency = 0;  // on this worker; 0 = no limit
  uint32_t fleet = 0;        // across the fleet; 0 = no limit
  double rate = 0;           // tasks started per second across the fleet; 0 = no limit
  uint32_t burst = 0;        // starts allowed at once above the rate; 0 = 1
  std::string rate_text;     // as configured ("60/m"), for display

  bool matches(std::string_view type) const;
  bool fleet_wide() const { return fleet > 0 || rate > 0; }
  uint32_t effective_burst() const { return burst == 0 ? 1 : burst; }
  // The limit in the configuration syntax.
  std::string text() const;
};

// Parses WORKER_LIMITS; throws std::invalid_argument naming the first problem.
std::vector<TypeLimit> parse_type_limits(std::string_view text);

}  // namespace wk::task
