#pragma once
// The processor (protocol §7.3, §7.4): its share of the engine's slots as handler threads that
// only run tasks, and one loop that does their Redis work (an engine has one processor per loop,
// Settings::loops). A task whose handler runs in another process (a plugin
// runner) takes no thread: the loop starts it through Dispatcher::start, a batch of them in one
// write, and its outcome joins the deferred writes straight from the dispatcher's thread, which
// wakes the loop once per burst of outcomes; a round waits (briefly) for the rest of a batch
// that is still coming back, so that one round trip carries them all. A handler thread
// takes a dequeued task, runs it, defers its outcome write (OutcomeWrites) and waits for the next task. The
// loop sends, in one round trip, every outcome deferred since its last one together with a dequeue of as many
// tasks as there are idle handler threads, and hands those tasks out. So under load one round trip finishes
// and starts many tasks, and one script call completes the successes of a queue; when nothing
// is pending the loop blocks in Redis (Broker::wait_for_work), never on a timer.
//
// Flow control (docs/queue-engine.md): a dequeued task goes to a handler thread only with the
// permits of its type (FlowControl). One refused is parked by the loop, still registered (its
// lease extended, its cancellation and deadline honoured) but holding no thread, and tried again
// when a permit may be free; past `parked_max` parked tasks, further refused ones are handed
// back to the back of their queue without an attempt counted.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "queue/context.hpp"
#include "queue/outcome_writes.hpp"
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
  // `slots`: the tasks it runs at a time, `parked_max`: the tasks it parks at most (its shares
  // of the engine's concurrency and parking bound, Settings::loops); `waker`: its own in
  // Broker::wait_for_work.
  Processor(EngineContext& ctx, Syncer& syncer, int slots, int parked_max, unsigned waker);
  ~Processor();
  void start();
  // No more dequeues; running tasks continue, and their outcomes are still written.
  void stop_fetching();
  // Cancels every running task with reason shutdown and requeues it now if its lease is valid
  // (protocol §7.9 step 3). The handler threads skip their own write when they return.
  void abort_running();
  // Waits for the handler threads and the loop to finish, up to `until`. True when all have.
  bool join_until(SteadyClock::time_point until);
  bool healthy() const;
  // A local permit was given back, perhaps by another loop's task: parked tasks may go now.
  void permit_released();

 private:
  // ---- the loop: the processor's Redis work ----
  void loop();
  // Waits until there is something to send: a deferred write, a slot to fill, a stop.
  void await_round();

  // What the loop does after a round.
  struct RoundResult {
    enum class Then { next, pause, wait_for_work } then = Then::next;
    std::chrono::milliseconds pause{0};
    Clock::time_point parked_retry = Clock::time_point::max();  // wait_for_work: until then at most
    bool got = false;                                           // the dequeue gave tasks
    bool full = true;  // it gave as many as there were slots (else the queues may be empty)
  };
  // One round trip: the deferred writes with a dequeue for the free slots; starts what it got.
  RoundResult round();
  size_t free_slots() const;  // mu_ held
  // mu_ held: until when a round should wait for the outcomes of the attempts started together
  // with those that came (max(): it should not wait).
  SteadyClock::time_point coalesce_until() const;
  bool coalesced() const;  // mu_ held: a round waiting for batch-mates may go
  // Gives each dequeued task to the handler threads, or parks it, or hands it back; returns how
  // many went to the handler threads.
  size_t hand_out(std::vector<Dequeued>& got);
  // Blocks until work may be there (true), a write or a stop needs the loop, or the timeout or
  // `until` (a parked task's retry) passes.
  bool idle_wait(Clock::time_point until);
  void pause(std::chrono::milliseconds d);  // interruptible by a stop or a deferred write
  void wake_loop(bool has_write);
  bool finished() const;  // mu_ held: stopped, no handler left, nothing to write or parked

  // ---- parking (the loop's own) ----
  struct ParkedTask {
    std::shared_ptr<InFlightTask> task;
    Clock::time_point retry_at;  // max(): when a local permit is given back
    DeadlineTimer::Handle deadline;
    task::Cancellation::Token cancel_token = 0;
  };
  // Parked tasks: admits the due ones (up to `want`, in order, each type's in turn), ends the
  // cancelled ones, hands all back on a stop. Returns how many went to the handler threads.
  size_t tend_parked(size_t want);
  void park_or_hand_back(const std::shared_ptr<InFlightTask>& t, const FlowControl::Admission& refused);
  void unpark(ParkedTask& p);
  // Settles `t` with a requeue (`op`: requeue, hand_back), no attempt counted.
  void give_back(const std::shared_ptr<InFlightTask>& t, OutcomeWrite::Op op);
  Clock::time_point next_parked_retry() const;
  void start_tasks(std::vector<std::shared_ptr<InFlightTask>>& tasks);

  // ---- attempts whose handler runs in another process (Dispatcher::start) ----
  struct RemoteAttempt;
  // Starts `t` through Dispatcher::start; false when a handler thread must run it instead.
  bool start_remote(const std::shared_ptr<InFlightTask>& t);
  // Its outcome came (on a thread of the dispatcher's): written as a handler thread's would be.
  void finish_remote(RemoteAttempt& attempt, const task::Outcome& outcome);
  void release_remote_slot(InFlightTask& t);
  // A burst of remote outcomes was delivered (task::OutcomeBurstListener): one wake of the loop
  // for all of them, none while it waits for their batch-mates.
  void outcomes_delivered(size_t outcomes);
  struct BurstListener final : task::OutcomeBurstListener {
    explicit BurstListener(Processor& p) : processor(p) {}
    void burst_over(size_t outcomes) override { processor.outcomes_delivered(outcomes); }
    Processor& processor;
  };

  // ---- the handler threads ----
  void handler_loop();
  std::shared_ptr<InFlightTask> next_task(bool wrote);     // null: exit
  std::shared_ptr<InFlightTask> admit(Dequeued dequeued);  // registers it (lease clock running)
  // Runs the task; true when its outcome write was deferred to the loop.
  bool execute(const std::shared_ptr<InFlightTask>& t);
  // The outcome of a task whose type no handler here serves.
  task::Outcome unhandled(const InFlightTask& t);
  bool finish(const std::shared_ptr<InFlightTask>& t, const task::Outcome& outcome,
              std::vector<task::EnqueueRequest> staged, bool defer);
  bool fail(const std::shared_ptr<InFlightTask>& t, const std::string& error,
            std::optional<Clock::time_point> retry_at, bool skip_retry, bool defer);
  // §7.6 lease check, then the write deferred to the loop (true) or done now (false).
  bool write(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op, OutcomeWrite w,
             std::vector<task::EnqueueRequest> followups, bool retry_if_unanswered, bool defer);
  // The deadline timer's overrun: fails the task and starts a thread in place of its own.
  void overrun(const std::shared_ptr<InFlightTask>& t);

  EngineContext& ctx_;
  OutcomeWrites writes_;
  BurstListener burst_listener_{*this};

  struct RoundState {  // the loop's
    std::mt19937_64 rng{std::random_device{}()};
    std::vector<Dequeued> got;       // reused: no allocation per round once grown
    std::vector<std::string> order;  // reused
    std::chrono::milliseconds error_backoff{0};
    std::chrono::milliseconds spill_backoff{0};
    SteadyClock::time_point host_queue_first_again{};  // while in the future: the host queue goes last
  } round_;
  std::thread loop_thread_;
  std::vector<std::thread> handler_threads_;

  mutable std::mutex mu_;
  std::condition_variable loop_cv_;     // the loop waits here for writes and idle handlers
  std::condition_variable handler_cv_;  // idle handlers wait here for tasks
  std::condition_variable exited_cv_;
  bool stopping_ = false;
  bool signalled_ = false;                           // a write was deferred since the loop last looked
  size_t idle_ = 0;                                  // handler threads waiting for a task
  std::deque<std::shared_ptr<InFlightTask>> ready_;  // dequeued for them, not started
  unsigned live_handlers_ = 0;
  size_t remote_slots_ = 0;        // slots held by remote attempts
  size_t remote_outstanding_ = 0;  // remote attempts whose outcome has not come (the loop waits)
  // Coalescing (docs/queue-engine.md, "A round waits for its batch-mates"): the remote attempts
  // started before the last flush whose outcome has not come, those of the flush being built,
  // when it went out, and how long a remote attempt takes (a moving average; 0: none yet).
  uint64_t flush_generation_ = 0;
  size_t batch_outstanding_ = 0;
  size_t building_outstanding_ = 0;
  SteadyClock::time_point batch_flushed_at_{};
  std::chrono::nanoseconds remote_latency_{0};
  bool loop_coalescing_ = false;
  // Outcomes whose burst_over() has not come yet: a stop does not finish (and the processor go)
  // while a dispatcher's thread still has to call it.
  size_t bursts_owed_ = 0;
  bool loop_running_ = false;
  std::atomic<bool> loop_waiting_for_work_{false};
  std::atomic<SteadyClock::rep> last_tick_{0};
  const int slots_;
  const unsigned waker_;
  const size_t parked_max_;
  std::deque<ParkedTask> parked_;                              // the loop's
  std::map<std::string, size_t, std::less<>> parked_by_type_;  // the loop's
  std::atomic<size_t> parked_count_{0};                        // parked_.size(), for finished()
  uint64_t seen_local_releases_ = 0;                           // the loop's
  // Last: destroyed first, so its thread never calls overrun() on a half-destroyed processor.
  DeadlineTimer timer_;
};

}  // namespace wk::queue
