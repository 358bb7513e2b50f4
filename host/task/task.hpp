#pragma once
// The contract between the queue engine and whoever runs tasks (the plugin layer).
// The engine decodes a task, builds an Execution and calls Dispatcher::dispatch on a handler
// thread; the dispatcher returns an Outcome. Neither side knows the other's internals:
// queue/ never includes plugins/, plugins/ never includes queue/ or redis/.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wk::task {

using Clock = std::chrono::system_clock;
using Headers = std::vector<std::pair<std::string, std::string>>;

// What a handler sees of an asynq TaskMessage, plus the attempt's timing.
struct Task {
  std::string id;
  std::string type;
  std::string queue;
  std::string payload;
  Headers headers;
  int32_t retried = 0;
  int32_t max_retry = 0;
  Clock::time_point deadline{};  // effective deadline (protocol §7.3); epoch = none
  Clock::time_point started_at{};
};

enum class CancelReason : int32_t { none = 0, shutdown = 1, deadline = 2, requested = 3, lease_lost = 4 };

// A one-shot cancellation signal with a reason: the first cancel() wins. Waiters wake at once;
// callbacks registered with on_cancel run on the cancelling thread (or at once, if already
// cancelled). Callbacks must not block.
class Cancellation {
 public:
  using Callback = std::function<void(CancelReason)>;
  using Token = uint64_t;

  bool cancel(CancelReason reason);
  CancelReason reason() const noexcept {
    return static_cast<CancelReason>(reason_.load(std::memory_order_acquire));
  }
  bool cancelled() const noexcept { return reason() != CancelReason::none; }
  // Waits until cancelled or `timeout` passes; returns the reason (none on timeout).
  CancelReason wait_for(std::chrono::milliseconds timeout) const;
  // Returns a token for remove(); runs `cb` at once if already cancelled (and returns 0).
  Token on_cancel(Callback cb);
  void remove(Token token);

 private:
  std::atomic<int32_t> reason_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Token next_token_ = 1;
  std::vector<std::pair<Token, Callback>> callbacks_;
};

// A follow-up (or any) enqueue, in asynq's option vocabulary (protocol §5.1).
struct EnqueueRequest {
  std::string type;
  std::string queue;  // empty = "default"
  std::string payload;
  std::string task_id;  // empty = random UUID v4
  Headers headers;
  std::optional<Clock::time_point> process_at;
  std::optional<int32_t> max_retry;             // default 25
  std::optional<std::chrono::seconds> timeout;  // default 30 min if neither timeout nor deadline
  std::optional<Clock::time_point> deadline;
  std::optional<std::chrono::milliseconds> unique_ttl;
  std::optional<std::chrono::seconds> retention;
};

// A request that could never be enqueued, whatever Redis says (blank type, bad queue name, a
// unique TTL under a second, ...): the caller's mistake, never an outage, so never retried.
class InvalidRequest : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Publishes tasks now. Implemented by the queue engine's client; returns the task id.
// Throws InvalidRequest for bad input, std::runtime_error with a clear message otherwise
// (duplicate, id conflict, Redis down).
class Enqueuer {
 public:
  virtual ~Enqueuer() = default;
  virtual std::string enqueue(const EnqueueRequest& request) = 0;
  // Throws InvalidRequest when `request` could never be enqueued (blank type, bad queue
  // name, ...). Staged follow-ups are checked when the handler stages them: at completion it
  // would be too late to tell the handler, and the task's success could not be written.
  virtual void validate(const EnqueueRequest& /*request*/) const {}
};

// `requeue` hands the task back to its queue without counting an attempt (as a shutdown does):
// for faults the task did not cause, such as its plugin runner crashing beside it. With a
// retry_after it waits that long first (in asynq's retry set, `retried` unchanged): a
// dependency outage, where coming straight back would only fail again.
enum class Disposition { succeeded, retry, retry_after, fail_no_retry, cancelled, requeue };

struct Outcome {
  Disposition disposition = Disposition::succeeded;
  std::string error;                         // error_msg for asynq (failures only)
  std::chrono::milliseconds retry_after{0};  // retry_after; requeue: wait this long first
  // The handler's machine-readable failure code (wk_failure.code), empty when it gave none.
  // `rate_limited` on a retry_after pauses the task's type across the fleet (docs/queue-engine.md).
  std::string code;
};

// The one answer for a task whose type no handler here serves: back to its queue, no attempt
// counted. A dispatcher returns it when its plugin went away between handles() and dispatch();
// the engine gives it (with a hold-off) until the type has gone unserved for long enough, then
// applies asynq's rule (docs/queue-engine.md, "Tasks no plugin serves").
Outcome unhandled_type(std::string_view type);

// A handler's report of how far it got (the SDK's heartbeat(done, total, note)).
struct Progress {
  std::uint64_t done = 0;
  std::uint64_t total = 0;  // 0 = unknown
  std::string note;         // short status line, may be empty
};

// What the engine offers a running task besides cancellation.
class TaskServices {
 public:
  virtual ~TaskServices() = default;
  // HSET the task's `result` field. Returns false (and logs) when the task can no longer write
  // (cancelled, past its deadline, lease lost, Redis away).
  virtual bool write_result(std::string_view data) = 0;
  // The handler's latest progress. The engine publishes it with the task's WorkerInfo at its
  // next heartbeat; leases are extended by the heartbeat loop whether handlers report or not.
  virtual void heartbeat(const Progress& progress) = 0;
};

// One attempt of one task, as handed to the dispatcher. `staged` collects follow-ups that the
// engine publishes only if the outcome is `succeeded`.
struct Execution {
  const Task& task;
  Cancellation& cancellation;
  TaskServices& services;
  std::vector<EnqueueRequest>& staged;
};

// Told by a dispatcher that a burst of outcomes is over: the finished() calls it made on this
// thread since it last blocked. The engine may use the thread for its own Redis round trip now
// (write those outcomes, dequeue what fills their slots) instead of waking its loop for it.
class OutcomeBurstListener {
 public:
  virtual ~OutcomeBurstListener() = default;
  // Called on the thread that called finished(), holding none of the dispatcher's locks (the
  // engine may call start() and flush_started() from here). `outcomes`: how many finished()
  // calls of attempts that named this listener the burst had.
  virtual void burst_over(size_t outcomes) = 0;
};

// Told once when an attempt started with Dispatcher::start has its outcome.
class AttemptCompletion {
 public:
  virtual ~AttemptCompletion() = default;
  // Called exactly once, on a thread of the dispatcher's (never inside start()). Once it returns,
  // the dispatcher touches neither the attempt's Execution nor this object again.
  virtual void finished(Outcome outcome) = 0;
  // Who must hear burst_over() after finished(); null: nobody. A dispatcher reads it before it
  // calls finished() and calls burst_over() on that thread before the thread blocks or returns,
  // once for all the attempts of the same listener that it finished meanwhile.
  virtual OutcomeBurstListener* burst_listener() { return nullptr; }
};

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // Whether some handler serves `type`.
  virtual bool handles(std::string_view type) const = 0;
  // Whether any handler serves at all: a worker with none takes no tasks.
  virtual bool serving() const { return true; }
  // The handler's own bound on one attempt of `type` (zero: none). An attempt's deadline is the
  // earlier of the task's own and its start plus this bound.
  virtual std::chrono::milliseconds attempt_timeout(std::string_view /*type*/) const {
    return std::chrono::milliseconds(0);
  }
  // The handler's own bound on concurrent runs of `type` on this worker (zero: none): the queue
  // engine applies it as the type's local limit unless WORKER_LIMITS sets one.
  virtual uint32_t max_concurrency(std::string_view /*type*/) const { return 0; }
  // Runs the handler. Never throws: everything is mapped to an Outcome.
  virtual Outcome dispatch(Execution& execution) = 0;
  // Starts the handler without holding the calling thread, when the handler runs elsewhere (a
  // runner process, docs/plugin-isolation.md): true, and `done` gets the outcome later. The
  // caller keeps `execution`'s referents and `done` alive until then. False, having done
  // nothing, when the caller must run dispatch() on a thread of its own instead. Never throws.
  virtual bool start(Execution& /*execution*/, AttemptCompletion& /*done*/) { return false; }
  // Sends what start() calls since the last flush have queued: the caller starts a batch of
  // attempts, then flushes once, so that they cost one write rather than one each.
  virtual void flush_started() {}
};

// Counts the crashes of a plugin's runner that a task caused, where that can be told (the task
// ran alone in a fresh runner; docs/plugin-isolation.md). Kept in Redis by the queue engine, so
// counts hold across restarts and across hosts.
class CrashLedger {
 public:
  virtual ~CrashLedger() = default;
  // Records one crash caused by `task`; returns how many it has caused so far. Throws when the
  // count cannot be kept (Redis away).
  virtual int64_t record_crash(const Task& task) = 0;
};

// Random UUID v4, lowercase hyphenated (asynq's default task id form).
std::string new_uuid();

// The queue of one machine's workers, "host:<host id>" (docs/operations.md, "Several machines"):
// every worker serves its own first, and a step that needs that machine's files (a worktree)
// is enqueued there. The SDK spells the same prefix WK_HOST_QUEUE_PREFIX.
inline constexpr std::string_view kHostQueuePrefix = "host:";
std::string host_queue(std::string_view host_id);
// The host id of a host queue's name; empty when `queue` is not one.
std::string_view host_of_queue(std::string_view queue);

}  // namespace wk::task
