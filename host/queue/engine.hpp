#pragma once
// The queue engine: the loops of an asynq server (protocol §7), wired around a Broker (the §6
// operations) and a task::Dispatcher (who runs handlers).
//
//   processor   concurrency handler threads; dequeue in queue order, run, apply the outcome
//               (one per Settings::loops, each with its share of the slots)
//   heartbeat   extends leases (one call per queue), writes server/worker info
//   forwarder   scheduled/retry -> pending
//   recoverer   lease-expired (and lease-less active) tasks -> retry/archive
//   janitor     deletes expired completed tasks
//   subscriber  asynq:cancel -> cancels the matching running task
//   syncer      retries completion writes that failed while Redis was away
//
// Lifecycle: start() once; stop() stops fetching (status "stopped"); shutdown() runs protocol §7.9
// (waits up to shutdown_timeout, then cancels and requeues what still runs); abort() (or a
// second shutdown() from another thread) ends the wait at once. The destructor shuts down.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "log/log.hpp"
#include "queue/broker.hpp"
#include "queue/queue_order.hpp"
#include "task/limits.hpp"
#include "task/task.hpp"

namespace wk::queue {

struct ServerIdentity {
  std::string host;
  int pid = 0;
  std::string server_id;  // UUID v4, fixed for the life of the engine
  // Host name (or "unknown-host"), getpid(), a fresh UUID.
  static ServerIdentity of_this_process();
};

// Delay before the next attempt of a failed task; `retried` is the count before the increment.
using RetryDelayFn =
    std::function<std::chrono::seconds(int32_t retried, const std::string& error, const task::Task& task)>;

// Every timing is overridable so tests run fast; the defaults are asynq's (protocol §7.1).
// Slots per processor loop when Settings::loops is 0: a round trip carrying the outcomes and the
// dequeue of eight tasks keeps its per-call costs small, and beyond that a second loop's rounds
// in flight beside the first's do more than longer rounds (docs/queue-engine.md, "Several loops").
inline constexpr int kSlotsPerLoop = 8;

struct Settings {
  std::vector<QueueWeight> queues{{"default", 1}};
  bool strict_priority = false;
  // This machine's queue (task::host_queue), tried before `queues`; empty: none.
  std::string host_queue;
  int concurrency = 4;
  std::chrono::seconds lease{30};
  std::chrono::milliseconds heartbeat_interval{5000};
  std::chrono::seconds server_ttl{10};  // TTL of the server/worker keys (2 x heartbeat)
  std::chrono::milliseconds forwarder_interval{5000};
  // A dead worker's tasks are taken back within the lease plus about 7 s (docs/queue-engine.md):
  // asynq looks once a minute, 30 s past expiry, and its servers keep doing so beside ours.
  std::chrono::milliseconds recoverer_interval{5000};
  std::chrono::seconds lease_expiry_cutoff{2};    // recover when lease score <= now - this (clock skew)
  std::chrono::milliseconds orphan_grace{60000};  // active without lease for this long -> recover
  std::chrono::milliseconds janitor_interval{8000};
  int janitor_batch = 100;
  std::chrono::milliseconds shutdown_timeout{8000};
  // A handler still running this long after its task's deadline (it was cancelled at the
  // deadline) no longer holds the task: it is failed with "context deadline exceeded", as asynq
  // does at once, and its thread is replaced until the handler returns.
  std::chrono::milliseconds deadline_grace{5000};
  std::chrono::milliseconds sync_interval{5000};      // syncer retry period
  std::chrono::milliseconds resubscribe_delay{5000};  // longest subscriber back-off
  std::chrono::milliseconds wait_timeout{30000};      // longest single blocking wait for work
  // A task whose type no handler here serves goes back (not counted) for unhandled_holdoff,
  // for other workers to run; once it has gone unhandled for unhandled_timeout, asynq's rule
  // applies: retried as "handler not found" (docs/queue-engine.md).
  std::chrono::milliseconds unhandled_holdoff{5000};
  std::chrono::milliseconds unhandled_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds redis_backoff{1000};  // longest back-off after a Redis error
  // Flow control per task type (docs/queue-engine.md, "Flow control"): the limits, and how many
  // tasks refused a permit this worker holds aside (parks) before it hands further ones back to
  // their queue; negative: as many as `concurrency`.
  std::vector<task::TypeLimit> limits;
  int parked_max = -1;
  // Processor loops the concurrency is split over (docs/queue-engine.md, "Several loops"): each
  // has its own share of the slots, handler threads and round trips; at most `concurrency` and
  // Broker::kWakers. 0: one per kSlotsPerLoop slots.
  int loops = 0;
  ServerIdentity identity = ServerIdentity::of_this_process();
  RetryDelayFn retry_delay;  // empty: asynq's default (§7.5)
};

// Flow control's state on this worker (docs/queue-engine.md, "Flow control"), for /metrics.
struct FlowLimitState {
  task::TypeLimit limit;
  uint32_t local_in_use = 0;  // local permits held here
  uint32_t fleet_in_use = 0;  // fleet permits held by this worker (the fleet's: their sum)
};
struct FlowTypeState {
  std::string type;
  uint32_t parked = 0;           // tasks of the type parked now
  double throttled_seconds = 0;  // total time with a task of the type parked
};

enum class ServerStatus { active, stopped, closed };
const char* to_string(ServerStatus status);

// How an attempt ended, as far as Redis is concerned.
enum class TaskResult {
  done,       // deleted (success without retention)
  completed,  // kept in completed (retention)
  retried,    // in the retry set
  archived,   // in the archived set
  requeued,   // back to pending (shutdown)
  abandoned,  // local lease lost or task moved under us: nothing written, the recoverer owns it
};
const char* to_string(TaskResult result);

// Hooks for metrics. Called from engine threads; implementations must be thread-safe and quick.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void task_started(std::string_view /*type*/, std::string_view /*queue*/) {}
  virtual void task_finished(std::string_view /*type*/, std::string_view /*queue*/, TaskResult /*result*/,
                             std::chrono::nanoseconds /*duration*/) {}
  virtual void redis_down() {}
  virtual void redis_up() {}
};

// Source of asynq:cancel messages (protocol §6.20). next() subscribes on first use (and again after
// an error), waits up to `timeout` and returns a task id or nullopt; it throws on connection
// trouble. interrupt() makes a blocked next() return nullopt promptly.
class CancelSource {
 public:
  virtual ~CancelSource() = default;
  virtual std::optional<std::string> next(std::chrono::milliseconds timeout) = 0;
  virtual void interrupt() = 0;
};

struct EngineContext;
class Processor;
class Heartbeat;
class Forwarder;
class Recoverer;
class Janitor;
class Subscriber;
class Syncer;

class Engine {
 public:
  // `cancels` may be null (no cancellation channel). Throws std::invalid_argument for bad settings.
  Engine(Broker& broker, task::Dispatcher& dispatcher, log::Logger logger, Settings settings,
         std::unique_ptr<CancelSource> cancels = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Must be called before start().
  void set_observer(EngineObserver* observer);

  void start();
  void stop();
  void shutdown();
  void abort();

  // Every running loop has ticked recently (for /healthz).
  bool healthy() const;
  // The last Redis operation succeeded (for /readyz).
  bool redis_up() const;
  ServerStatus status() const;
  int running_tasks() const;
  std::vector<FlowLimitState> flow_limits() const;
  std::vector<FlowTypeState> flow_types() const;
  const ServerIdentity& identity() const;

 private:
  std::unique_ptr<EngineContext> ctx_;
  std::unique_ptr<Syncer> syncer_;
  std::vector<std::unique_ptr<Processor>> processors_;
  std::unique_ptr<Heartbeat> heartbeat_;
  std::unique_ptr<Forwarder> forwarder_;
  std::unique_ptr<Recoverer> recoverer_;
  std::unique_ptr<Janitor> janitor_;
  std::unique_ptr<Subscriber> subscriber_;
  std::atomic<int> phase_{0};  // 0 new, 1 started, 2 shutting down, 3 shut down
};

}  // namespace wk::queue
