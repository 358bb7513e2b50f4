#pragma once
// Internals shared by the engine's loops: the registry of running tasks, Redis health
// tracking, a stoppable periodic loop, and the EngineContext that wires them together.
// Not part of the public API (include engine.hpp instead).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "queue/engine.hpp"
#include "queue/flow_control.hpp"
#include "queue/queue_order.hpp"
#include "queue/retry_delay.hpp"

namespace wk::queue {

using SteadyClock = std::chrono::steady_clock;

// One attempt in flight. The processor creates it, the heartbeat extends its local lease, the
// subscriber / deadline timer / shutdown cancel it. `settle()` makes sure only one party writes
// the attempt's outcome to Redis.
struct InFlightTask {
  asynq::TaskMessage msg;
  task::Task task;
  task::Cancellation cancellation;
  SteadyClock::time_point started_steady;

  bool lease_valid(Clock::time_point now) const { return now <= lease_expiry(); }
  Clock::time_point lease_expiry() const {
    return Clock::time_point(Clock::duration(lease_expiry_ticks.load()));
  }
  // Moves the local lease to `expiry`, unless it has already expired (never revived, §7.6).
  void extend_lease(Clock::time_point expiry, Clock::time_point now);
  bool settle() { return !settled.exchange(true); }
  // The handler reports from its thread, the heartbeat loop reads from its own.
  void set_progress(task::Progress p);
  task::Progress progress() const;

  std::atomic<Clock::rep> lease_expiry_ticks{0};
  std::atomic<bool> lease_lost_notified{false};
  std::atomic<bool> settled{false};
  std::atomic<bool> overran{false};  // failed past its deadline; its thread leaves the pool after
  // A handler thread took it. One that never did (parked, then cancelled or handed back) is not
  // reported to the observer: for metrics it neither started nor finished.
  std::atomic<bool> started{false};
  // Its handler runs in another process (Dispatcher::start): no thread of ours waits for it, and
  // it holds one of the processor's slots until its outcome comes or its deadline overran.
  std::atomic<bool> remote{false};
  std::atomic<bool> holds_remote_slot{false};

 private:
  mutable std::mutex progress_mu_;
  task::Progress progress_;
};

// The task a handler sees for a dequeued message (deadline and start time are the processor's).
task::Task task_of(const asynq::TaskMessage& msg);

// The error asynq records when a task's lease ran out (protocol §7.6, §7.7): written by the
// processor for a task whose own lease expired and by the recoverer for one it takes back.
inline constexpr const char* kLeaseExpired = "asynq: task lease expired";

class InFlight {
 public:
  void add(const std::shared_ptr<InFlightTask>& t);
  // Unregisters `t`, and only `t`: the same task id may be registered again by a later attempt
  // (after a deadline overrun, the old handler can outlive its retry).
  void remove(const std::shared_ptr<InFlightTask>& t);
  std::shared_ptr<InFlightTask> find(const std::string& id) const;
  std::vector<std::shared_ptr<InFlightTask>> snapshot() const;
  int size() const;
  // Blocks until nothing runs or `until` passes; true when empty.
  bool wait_empty_until(SteadyClock::time_point until) const;
  void notify();  // wakes wait_empty_until (abort)

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::unordered_map<std::string, std::shared_ptr<InFlightTask>> tasks_;
  bool interrupted_ = false;
};

// Tracks whether Redis answers, so that an outage gives one log line when it starts and one
// when it ends, however many operations fail in between.
class RedisHealth {
 public:
  RedisHealth(log::Logger logger) : log_(std::move(logger)) {}
  void set_observer(EngineObserver* observer) { observer_ = observer; }
  void failed(std::string_view operation, const std::exception& error);
  // An operation that began at `started` got its answer. One that began before the outage was
  // noticed says nothing about Redis now (its answer may predate the outage), so it cannot end it.
  void succeeded(SteadyClock::time_point started = SteadyClock::now());
  bool up() const { return up_.load(); }

 private:
  log::Logger log_;
  EngineObserver* observer_ = nullptr;
  std::mutex mu_;
  std::atomic<bool> up_{true};
  SteadyClock::time_point down_since_{};  // mu_
};

// Where this server stands among the live servers of asynq:servers (ours and asynq's), sorted by
// key: the heartbeat refreshes it, the loops whose work any one server can do for all take turns
// by it (fleet_slot_delay).
struct FleetPosition {
  std::atomic<int> rank{0};
  std::atomic<int> size{1};
};

// The wait until this server's next turn: turns fall on wall-clock multiples of `period`, and
// turn k belongs to the server of rank k mod size, so the fleet as a whole does the work once
// per `period` however many servers it has. (A server that died keeps its turns until its entry
// expires, server_ttl at most.)
std::chrono::milliseconds fleet_slot_delay(std::chrono::milliseconds period, const FleetPosition& fleet,
                                           Clock::time_point now);

// Runs `tick` on its own thread until stop(), waiting between ticks as long as the last tick
// returned (`interval` before the first, unless run_at_start). The wait is interruptible, so
// stop() returns promptly. Records when it last ticked, for Engine::healthy().
class PeriodicLoop {
 public:
  using Tick = std::function<std::chrono::milliseconds()>;
  PeriodicLoop(std::string name, std::chrono::milliseconds interval, bool run_at_start, Tick tick)
      : name_(std::move(name)), interval_(interval), run_at_start_(run_at_start), tick_(std::move(tick)) {}
  ~PeriodicLoop() { stop(); }
  void start();
  void stop();
  // Healthy when not running (nothing to check) or when it ticked within 3 waits + 5 s.
  bool healthy() const;
  const std::string& name() const { return name_; }

 private:
  void run();
  std::string name_;
  std::chrono::milliseconds interval_;  // the wait before the first tick (unless run_at_start)
  bool run_at_start_;
  Tick tick_;
  std::atomic<std::chrono::milliseconds::rep> wait_ms_{0};  // the wait now under way
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<SteadyClock::rep> last_tick_{0};
  std::atomic<bool> running_{false};
};

// Everything the loops share. Owned by the Engine, outlives every loop.
struct EngineContext {
  EngineContext(Broker& b, task::Dispatcher& d, log::Logger l, Settings s);

  Broker& broker;
  task::Dispatcher& dispatcher;
  log::Logger log;
  Settings settings;
  QueueOrder order;
  InFlight inflight;
  RedisHealth health;
  FleetPosition fleet;
  FlowControl flow;
  EngineObserver* observer = nullptr;
  std::atomic<ServerStatus> status{ServerStatus::active};
  DefaultRetryDelay default_delay;
  Clock::time_point started_at = Clock::now();

  std::chrono::seconds retry_delay(int32_t retried, const std::string& error, const task::Task& t);
  // Logger with the task fields every task line carries.
  log::Logger task_log(const task::Task& t) const;
};

// Waits on `cv` until `stopping` or `timeout`; a sleep that stop() can cut short.
template <class Pred>
void wait_or_stop(std::mutex& mu, std::condition_variable& cv, std::chrono::milliseconds timeout,
                  Pred stopping) {
  std::unique_lock lock(mu);
  cv.wait_for(lock, timeout, stopping);
}

}  // namespace wk::queue
