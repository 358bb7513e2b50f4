#pragma once
// The server-side operations of the asynq wire protocol (protocol §6), one method each, atomic in
// Redis where asynq does (Lua via EVALSHA). The engine's loops (processor, heartbeat,
// forwarder, recoverer, janitor, subscriber) call only this; nothing else in the engine knows
// key names or scripts.
//
// Thread-safety: every method may be called from any thread concurrently (the broker holds a
// pool of Redis connections). Methods throw redis::Error on connection trouble and
// queue::NotFound when a completion script answers NOT FOUND (the task moved under us).
#include <chrono>
#include <exception>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "asynq/messages.hpp"  // asynq::TaskMessage, ServerInfo, WorkerInfo
#include "task/limits.hpp"
#include "task/task.hpp"

namespace wk::queue {

using Clock = std::chrono::system_clock;

struct NotFound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What recover_orphan() found (asynq #1144).
enum class OrphanRecovery {
  recovered,   // was in active with no lease: moved to retry / archived, counters as Retry / Archive
  leased,      // has a lease entry now: a live worker owns it; nothing written
  not_active,  // no longer in active; nothing written
};

// The answer to a fleet permit request (Broker::acquire_permit).
struct PermitGrant {
  bool granted = false;
  std::chrono::milliseconds retry_in{0};  // not granted: when asking again may succeed
  const char* reason = "";                // not granted: "fleet" (all permits held) or "rate"
};

struct Dequeued {
  asynq::TaskMessage msg;
  Clock::time_point lease_expiry;  // precise: now + lease duration
};

// One attempt's outcome write (§6.9-§6.13) as data, so that it can be sent later, retried by the
// syncer, or sent in the processor's next round trip (Broker::exchange).
struct OutcomeWrite {
  enum class Op { done, mark_complete, retry, archive, requeue, hand_back };
  Op op = Op::done;
  const asynq::TaskMessage* msg = nullptr;                       // must outlive the write
  const std::vector<task::EnqueueRequest>* followups = nullptr;  // done / mark_complete; may be null
  Clock::time_point retry_at{};                                  // retry
  std::string error;                                             // retry / archive
  bool is_failure = true;                                        // retry

  bool has_followups() const { return followups != nullptr && !followups->empty(); }
};

class Broker {
 public:
  virtual ~Broker() = default;

  // Performs `w` through done / mark_complete / retry / archive / requeue (throws as they do).
  void write_outcome(const OutcomeWrite& w);
  // The processor's round trip: performs every write of `writes` (the i-th one's failure, such
  // as NotFound or redis::Error, stored in errors[i], never thrown), then, when `max` > 0,
  // dequeues as dequeue_batch() into `out` (cleared first; a failure of the dequeue is thrown).
  // Each script stays its own atomic call. RedisBroker sends everything in one round trip and
  // completes the plain successes of one queue in one script call.
  virtual void exchange(std::span<const OutcomeWrite> writes, std::span<std::exception_ptr> errors,
                        const std::vector<std::string>& queues, std::chrono::seconds lease, size_t max,
                        std::vector<Dequeued>& out) {
    for (size_t i = 0; i < writes.size(); ++i) {
      try {
        write_outcome(writes[i]);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
    out.clear();
    if (max > 0) out = dequeue_batch(queues, lease, max);
  }

  // §6.7, trying `queues` in the given order; nullopt when none has work (or all are paused).
  virtual std::optional<Dequeued> dequeue(const std::vector<std::string>& queues,
                                          std::chrono::seconds lease) = 0;
  // Added by the redis owner: up to `max` tasks from the first queue (in the given order) that
  // has any, in one script call (per-task semantics as §6.7). Empty when none has work.
  // The default takes one task through dequeue().
  virtual std::vector<Dequeued> dequeue_batch(const std::vector<std::string>& queues,
                                              std::chrono::seconds lease, size_t max) {
    std::vector<Dequeued> out;
    if (max == 0) return out;
    if (auto one = dequeue(queues, lease)) out.push_back(std::move(*one));
    return out;
  }
  // Blocks (without consuming and without busy polling) until some queue in `queues` may have a
  // pending task, or `timeout` passes, or wake(waker) is called. Returns true if work may be
  // there. `waker` (0 to kWakers - 1) names the caller: loops sharing a broker each wait as their
  // own waker, so that a wake meant for one is not taken by another.
  static constexpr unsigned kWakers = 64;
  virtual bool wait_for_work(const std::vector<std::string>& queues, std::chrono::milliseconds timeout,
                             unsigned waker) = 0;
  // Makes the current wait_for_work of `waker` return at once, or its next one if it waits not.
  virtual void wake(unsigned waker) = 0;

  // §6.8: returns the new expiry for the ids of one queue.
  virtual Clock::time_point extend_leases(const std::string& queue, const std::vector<std::string>& ids,
                                          std::chrono::seconds lease) = 0;

  // §6.9 Done, with the follow-ups published in the same MULTI/EXEC as the completion.
  virtual void done(const asynq::TaskMessage& msg, const std::vector<task::EnqueueRequest>& followups) = 0;
  // §6.10 MarkAsComplete (retention > 0), with follow-ups as in done().
  virtual void mark_complete(const asynq::TaskMessage& msg,
                             const std::vector<task::EnqueueRequest>& followups) = 0;
  // §6.11
  virtual void retry(const asynq::TaskMessage& msg, Clock::time_point retry_at, const std::string& error,
                     bool is_failure) = 0;
  // §6.12
  virtual void archive(const asynq::TaskMessage& msg, const std::string& error) = 0;
  // §6.13
  virtual void requeue(const asynq::TaskMessage& msg) = 0;
  // requeue() to the back of pending: no attempt counted, and the queue moves on meanwhile.
  virtual void hand_back(const asynq::TaskMessage& msg) = 0;
  // §6.18
  virtual void write_result(const std::string& queue, const std::string& id, std::string_view data) = 0;

  // §6.14 for one queue, scheduled then retry; returns the number of tasks moved.
  virtual int forward(const std::string& queue) = 0;
  // §6.15 with the given cutoff, over the given queues.
  virtual std::vector<asynq::TaskMessage> list_lease_expired(const std::vector<std::string>& queues,
                                                             Clock::time_point cutoff) = 0;
  // Ids that sit in `active` with no lease entry at all (asynq #1144), per queue.
  virtual std::vector<asynq::TaskMessage> list_active_without_lease(const std::string& queue) = 0;
  // asynq #1144: atomically, only if `msg.id` is in active AND has no lease entry, Retry (§6.11,
  // isFailure, when `retry_at` is set) or Archive (§6.12, when it is not) with `error`. The
  // check and the move are one script, so a task a live worker holds is never touched.
  virtual OrphanRecovery recover_orphan(const asynq::TaskMessage& msg,
                                        std::optional<Clock::time_point> retry_at,
                                        const std::string& error) = 0;
  // §6.19 for one queue; returns the number deleted.
  virtual int delete_expired_completed(const std::string& queue, int batch) = 0;

  // §6.16 / §6.17
  virtual void write_server_state(const asynq::ServerInfo& info,
                                  const std::vector<asynq::WorkerInfo>& workers,
                                  std::chrono::seconds ttl) = 0;
  virtual void clear_server_state(const std::string& host, int pid, const std::string& server_id) = 0;
  // The keys of the live servers (asynq:servers entries not yet expired), sorted.
  virtual std::vector<std::string> live_servers() = 0;
  // The ServerInfo stored under a server key; none when it expired or cannot be decoded.
  virtual std::optional<asynq::ServerInfo> server_info(const std::string& key) = 0;

  // Cheap probes for the periodic loops (plain single-key reads, no script): for each key of
  // `sorted_sets`, whether it holds a member with a score <= `now` (a due scheduled or retry
  // task, an expired completed one).
  virtual std::vector<bool> any_due(const std::vector<std::string>& sorted_sets, Clock::time_point now) = 0;
  // For each queue: the earliest lease expiry (none when no task holds a lease) and how many
  // tasks are active.
  struct LeaseProbe {
    std::optional<Clock::time_point> earliest_expiry;
    long long active = 0;
  };
  virtual std::vector<LeaseProbe> probe_leases(const std::vector<std::string>& queues) = 0;

  // Flow control across the fleet (docs/queue-engine.md, "Flow control"), under keys of our own
  // outside asynq's namespace. A permit is a member name (server and task) held under a lease:
  // one of a dead worker's is free again once its lease runs out.
  // Takes a permit of `limit` (its fleet concurrency and its rate), atomically.
  virtual PermitGrant acquire_permit(const task::TypeLimit& limit, const std::string& member,
                                     std::chrono::milliseconds lease) = 0;
  virtual void release_permit(const task::TypeLimit& limit, const std::string& member) = 0;
  // Moves the lease of each held permit of `members` to now + `lease`.
  virtual void extend_permits(const task::TypeLimit& limit, const std::vector<std::string>& members,
                              std::chrono::milliseconds lease) = 0;
  // Pauses `type` across the fleet for `duration` (a pause that ends later stays as it is).
  virtual void pause_type(const std::string& type, std::chrono::milliseconds duration) = 0;
  // The types paused now, each with how much longer.
  virtual std::vector<std::pair<std::string, std::chrono::milliseconds>> paused_types() = 0;

  // Every queue asynq knows (asynq:queues).
  virtual std::vector<std::string> all_queues() = 0;
  // For each queue: its tasks pending or active, and those scheduled or to be retried that are
  // due (not yet due: not waiting yet).
  virtual std::vector<long long> backlogs(const std::vector<std::string>& queues) = 0;

  // PING; false when Redis does not answer.
  virtual bool ping() = 0;
  // When some worker first found no handler for this task (recorded now if none did), kept
  // under a key of ours beside the task's queue for `keep`.
  virtual Clock::time_point first_unhandled(const asynq::TaskMessage& msg, std::chrono::seconds keep) = 0;
};

inline void Broker::write_outcome(const OutcomeWrite& w) {
  static const std::vector<task::EnqueueRequest> kNone;
  const auto& followups = w.followups != nullptr ? *w.followups : kNone;
  switch (w.op) {
    case OutcomeWrite::Op::done:
      done(*w.msg, followups);
      return;
    case OutcomeWrite::Op::mark_complete:
      mark_complete(*w.msg, followups);
      return;
    case OutcomeWrite::Op::retry:
      retry(*w.msg, w.retry_at, w.error, w.is_failure);
      return;
    case OutcomeWrite::Op::archive:
      archive(*w.msg, w.error);
      return;
    case OutcomeWrite::Op::requeue:
      requeue(*w.msg);
      return;
    case OutcomeWrite::Op::hand_back:
      hand_back(*w.msg);
      return;
  }
}

}  // namespace wk::queue
