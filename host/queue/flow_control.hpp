#pragma once
// Flow control per task type (docs/queue-engine.md, "Flow control"). Before a handler thread may
// take a task, the processor loop asks FlowControl for every permit the task's type needs: its
// type not paused across the fleet, a local permit of each limit with `concurrency` (or of the
// handler's own max_concurrency), a fleet permit of each limit with `fleet` or `rate`. A task
// refused is parked by the processor (it never holds a handler thread); the permits of a task
// that ran are given back once its handler has returned.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "log/log.hpp"
#include "queue/broker.hpp"
#include "queue/engine.hpp"
#include "task/limits.hpp"
#include "task/task.hpp"

namespace wk::queue {

struct InFlightTask;
class RedisHealth;

// The failure code with which a handler says the service it calls is rate limiting us (an HTTP
// 429): its retry_after pauses the type across the fleet.
inline constexpr std::string_view kRateLimitedCode = "rate_limited";

class FlowControl {
 public:
  struct Options {
    std::vector<task::TypeLimit> limits;
    std::string server_id;                   // names this worker's fleet permits
    std::chrono::milliseconds lease{30000};  // of a fleet permit; the heartbeat extends it
  };
  FlowControl(Broker& broker, task::Dispatcher& dispatcher, RedisHealth& health, log::Logger log,
              Options options);

  struct Admission {
    bool admitted = false;
    // Refused: when to ask again (time_point::max(): when a local permit is given back).
    Clock::time_point retry_at{};
    std::string reason;  // refused: "paused", "concurrency", "fleet" or "rate"
    std::string limit;   // refused: the limit's pattern (the type, for a pause or a handler's own)
  };
  // The processor loop: takes every permit `t` needs, or none.
  Admission try_admit(const InFlightTask& t);
  // Gives back the permits `t` holds (none held: nothing happens). Any thread.
  void release(const InFlightTask& t);
  // Bumped at every release of a local permit: parked tasks waiting for one may try again.
  uint64_t local_releases() const { return local_releases_.load(std::memory_order_acquire); }
  // Called (on the releasing thread, holding no lock of ours) after each release of a local
  // permit: the engine wakes the loops whose parked tasks wait for one. Set before any release.
  void on_local_release(std::function<void()> released) { on_local_release_ = std::move(released); }
  // The heartbeat: moves the leases of the fleet permits held to now + lease.
  void extend_fleet_permits();
  // A handler answered rate_limited: no worker of the fleet starts `type` for `duration`.
  void pause(const std::string& type, std::chrono::milliseconds duration);

  // The processor's parking, for the log lines and /metrics.
  void parked(const std::string& type, const std::string& reason, const std::string& limit);
  void unparked(const std::string& type);

  std::vector<FlowLimitState> limits() const;
  std::vector<FlowTypeState> types() const;
  const std::vector<task::TypeLimit>& configured() const { return options_.limits; }

 private:
  struct Held {
    std::vector<size_t> local;  // limits with a local permit taken
    std::vector<size_t> fleet;  // limits with a fleet permit held (rate tokens are spent, not held)
    std::string own_type;       // the handler's own max_concurrency taken (empty: none)
  };
  struct Throttled {
    uint32_t parked = 0;
    std::chrono::steady_clock::time_point since{};
    std::chrono::steady_clock::duration total{};
  };
  const std::vector<size_t>& matching(const std::string& type);  // mu_ held
  std::string member(const InFlightTask& t) const;
  // Redis-backed pause lookup; refreshed at most every kPauseRefresh when asked.
  std::chrono::milliseconds paused_for(const std::string& type);

  Broker& broker_;
  task::Dispatcher& dispatcher_;
  RedisHealth& health_;
  log::Logger log_;
  Options options_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<size_t>> matching_;  // type -> limits
  std::vector<uint32_t> local_in_use_;                             // per limit
  std::map<std::string, uint32_t, std::less<>> own_in_use_;        // type -> handler's own
  std::unordered_map<const InFlightTask*, Held> held_;
  std::vector<std::vector<std::string>> fleet_members_;  // per limit: the permits held here
  std::map<std::string, Throttled, std::less<>> throttled_;
  std::atomic<uint64_t> local_releases_{0};
  std::function<void()> on_local_release_;

  std::mutex pause_mu_;
  std::map<std::string, Clock::time_point, std::less<>> paused_;  // type -> pause end (local clock)
  std::chrono::steady_clock::time_point paused_read_{};
};

}  // namespace wk::queue
