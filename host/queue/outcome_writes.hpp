#pragma once
// The outcome writes of finished attempts. A handler thread defers its task's write; the
// processor loop sends every deferred write together with its next dequeue, in one round trip
// (Broker::exchange), or on its own when it is not about to dequeue. Each write is then settled
// in one place: reported, left to the recoverer when its task moved (NotFound), or handed to the
// syncer when Redis did not answer. A task stays registered (InFlight) until its write is
// settled, so a shutdown waiting for the registry cannot slip through in between.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "queue/context.hpp"
#include "queue/syncer.hpp"

namespace wk::queue {

class OutcomeWrites {
 public:
  struct Write {
    std::shared_ptr<InFlightTask> task;
    OutcomeWrite write;  // write.msg points into task, write.followups into followups
    TaskResult result = TaskResult::done;
    const char* op = "";
    bool retry_if_unanswered = true;  // the syncer retries it when Redis did not answer
    std::vector<task::EnqueueRequest> followups;
  };

  OutcomeWrites(EngineContext& ctx, Syncer& syncer) : ctx_(ctx), syncer_(syncer) {}

  // Any thread: queues `w` for the processor loop's next round trip.
  void defer(Write w);
  // The loop: whether writes wait.
  bool pending() const;
  // The loop: sends the waiting writes, then dequeues up to `max` tasks of `queues` into `got`
  // (cleared first), in one round trip; settles the writes. A failed dequeue throws (after the
  // writes are settled).
  void send_with_dequeue(const std::vector<std::string>& queues, std::chrono::seconds lease, size_t max,
                         std::vector<Dequeued>& got);
  // The loop: sends the waiting writes on their own.
  void send_now();
  // Any thread: writes `w` at once, on the calling thread (shutdown requeues, overruns).
  void write_now(Write w);

 private:
  // Moves the waiting writes into batch_, leaving those whose local lease has expired to the
  // recoverer (§7.6: no outcome is written once it has).
  void take();
  // `sent`: when the write went out (see RedisHealth::succeeded).
  void settle(Write& w, const std::exception_ptr& error, SteadyClock::time_point sent);

  EngineContext& ctx_;
  Syncer& syncer_;
  mutable std::mutex mu_;
  std::vector<Write> waiting_;
  // The loop's own: the batch being sent, and the data the broker gets (kept for their capacity).
  std::vector<Write> batch_;
  std::vector<OutcomeWrite> sent_;
  std::vector<std::exception_ptr> errors_;
};

// The observer's task_finished for `t`.
void report_finished(EngineContext& ctx, const InFlightTask& t, TaskResult result);

}  // namespace wk::queue
