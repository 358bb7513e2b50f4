#pragma once
// The order in which queues are tried for one dequeue attempt (protocol §7.2).
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "asynq/keys.hpp"

namespace wk::queue {

using asynq::QueueWeight;

// Immutable after construction; next() is const and takes the caller's RNG, so one QueueOrder can
// be shared by every fetching thread, each with its own generator.
class QueueOrder {
 public:
  // Throws std::invalid_argument for an empty list, a blank name, a duplicate or priority <= 0.
  // `first`, when not empty, is tried before all others in every order (this host's queue,
  // docs/operations.md, "Several machines"); it must not be one of `queues`.
  QueueOrder(std::vector<QueueWeight> queues, bool strict, std::string first = {});

  // `first`, then: weighted: each priority divided by the GCD, expanded, shuffled, deduplicated
  // (first occurrence kept), so queue q comes first with probability priority_q / sum. Strict:
  // by priority, highest first (ties keep configuration order). One queue: just that queue.
  std::vector<std::string> next(std::mt19937_64& rng) const;
  // Same, into `out` (its strings keep their capacity: no allocation per call once warm).
  void next(std::mt19937_64& rng, std::vector<std::string>& out) const;

  // Every queue name, `first` then configuration order (for the loops that visit all queues).
  const std::vector<std::string>& names() const noexcept { return names_; }
  const std::vector<QueueWeight>& weights() const noexcept { return queues_; }
  bool strict() const noexcept { return strict_; }

 private:
  std::vector<QueueWeight> queues_;
  std::string first_;
  std::vector<std::string> names_;
  bool strict_;
  std::vector<std::string> strict_order_;  // precomputed for strict mode
  std::vector<std::size_t> expanded_;      // indices into queues_, each repeated priority/gcd times
};

}  // namespace wk::queue
