#pragma once
// The processor (spec §7.3, §7.4): `concurrency` handler threads, each one a slot. A free thread
// dequeues in queue order, taking one task for itself plus one for every idle thread in the same
// script call (Broker::dequeue_batch), registers them all at once (leases start at dequeue) and
// hands the extra ones to the idle threads. When nothing is found, one idle thread blocks in
// Redis (Broker::wait_for_work) and the others sleep on a condition variable; a thread that gets
// work passes a baton to one more sleeper, so a burst fans out to every slot. No thread ever
// sleeps on a timer waiting for work.
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "queue/context.hpp"
#include "queue/syncer.hpp"

namespace wk::queue {

// One thread that cancels tasks with reason `deadline` when their effective deadline passes.
// Cancels a task at its deadline (reason deadline) and, `grace` later, calls `overrun` for it
// unless the handle was removed (the handler returned) by then.
class DeadlineTimer {
 public:
  using Handle = std::pair<Clock::time_point, uint64_t>;  // (deadline, sequence): a unique key
  using OverrunFn = std::function<void(const std::shared_ptr<InFlightTask>&)>;
  DeadlineTimer(std::chrono::milliseconds grace, OverrunFn overrun);
  ~DeadlineTimer();
  Handle add(Clock::time_point deadline, const std::shared_ptr<InFlightTask>& t);
  void remove(Handle h);

 private:
  void run();
  struct Due {
    std::weak_ptr<InFlightTask> task;
    bool cancelled = false;  // the deadline passed; this entry is the overrun check
  };
  const std::chrono::milliseconds grace_;
  const OverrunFn overrun_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Handle, Due> due_;  // a cancelled entry is re-keyed (deadline + grace, same sequence)
  Clock::time_point waiting_until_ = Clock::time_point::max();  // what the timer thread sleeps until
  uint64_t next_seq_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

class Processor {
 public:
  Processor(EngineContext& ctx, Syncer& syncer);
  ~Processor();
  void start();
  // No more dequeues; running tasks continue.
  void stop_fetching();
  // Cancels every running task with reason shutdown and requeues it now if its lease is valid
  // (spec §7.9 step 3). The handler threads skip their own write when they return.
  void abort_running();
  // Waits for the handler threads to return, up to `until`. True when all have.
  bool join_until(SteadyClock::time_point until);
  bool healthy() const;

 private:
  void worker_loop(unsigned index);
  bool idle_wait();
  void pause(std::chrono::milliseconds d);
  // An attempt's outcome write that waits to go out in the same round trip as its thread's next
  // dequeue (Broker::dequeue_after). The task stays registered until the write's reply is in.
  struct PendingWrite {
    std::shared_ptr<InFlightTask> task;  // null: nothing pending
    OutcomeWrite write;
    TaskResult result = TaskResult::done;
    const char* op = "";
    bool queue_on_failure = true;
    std::vector<task::EnqueueRequest> followups;  // write.followups points here
  };
  std::shared_ptr<InFlightTask> admit(Dequeued dequeued);  // registers it (lease clock running)
  // Runs it and writes the outcome, or leaves the write in `pending` (when given) for the
  // thread's next dequeue.
  void execute(const std::shared_ptr<InFlightTask>& t, PendingWrite* pending);
  // The outcome of a task whose type no handler here serves.
  task::Outcome unhandled(const InFlightTask& t);
  void finish(const std::shared_ptr<InFlightTask>& t, const task::Outcome& outcome,
              std::vector<task::EnqueueRequest> staged, PendingWrite* pending);
  void fail(const std::shared_ptr<InFlightTask>& t, const std::string& error,
            std::optional<Clock::time_point> retry_at, bool skip_retry, PendingWrite* pending);
  // §7.6 lease check, then the write now (pending == null) or deferred into `pending`.
  void write(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op, OutcomeWrite w,
             std::vector<task::EnqueueRequest> followups, bool queue_on_failure, PendingWrite* pending);
  // Handles a write's result (error == null: success): report, NotFound, syncer hand-off.
  void written(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op,
               const OutcomeWrite& w, std::vector<task::EnqueueRequest>& followups, bool queue_on_failure,
               const std::exception_ptr& error);
  // §7.6 again right before a deferred write goes out: true (and the task left to the recoverer,
  // `pending` emptied) when the lease has expired meanwhile.
  bool abandon_if_lease_expired(PendingWrite& pending);
  // Sends a pending write on its own (the thread is not about to dequeue) and settles it.
  void flush_pending(PendingWrite& pending);
  // Settles a pending write whose result is `error` and unregisters its task.
  void settle_pending(PendingWrite& pending, const std::exception_ptr& error);
  void report(const std::shared_ptr<InFlightTask>& t, TaskResult result);
  // The deadline timer's overrun: fails the task and starts a thread in place of its own.
  void overrun(const std::shared_ptr<InFlightTask>& t);

  EngineContext& ctx_;
  Syncer& syncer_;
  std::vector<std::thread> threads_;

  std::mutex mu_;
  std::condition_variable cv_;  // sleepers wait here for a baton or the waiter role
  std::condition_variable exited_cv_;
  bool stopping_ = false;
  bool waiter_busy_ = false;  // some thread is blocked in wait_for_work
  int batons_ = 0;            // "work may be there" tokens for sleepers
  int sleepers_ = 0;
  long reserved_ = 0;                                  // idle threads counted into a dequeue still in flight
  std::deque<std::shared_ptr<InFlightTask>> handoff_;  // dequeued for idle threads, not started
  unsigned live_threads_ = 0;
  unsigned next_thread_index_ = 0;
  std::atomic<SteadyClock::rep> last_tick_{0};
  // Last: destroyed first, so its thread never calls overrun() on a half-destroyed processor.
  DeadlineTimer timer_;
};

}  // namespace wk::queue
