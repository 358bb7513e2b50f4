#pragma once
// The processor (spec §7.3, §7.4): `concurrency` handler threads, each one a slot. A free thread
// dequeues in queue order and runs the task itself. When nothing is found, one idle thread
// blocks in Redis (Broker::wait_for_work) and the others sleep on a condition variable; a thread
// that gets a task passes a baton to one sleeper, so a burst fans out to every slot. No thread
// ever sleeps on a timer waiting for work.
#include <condition_variable>
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
class DeadlineTimer {
 public:
  using Handle = std::pair<Clock::time_point, uint64_t>;  // (deadline, sequence): a unique key
  DeadlineTimer();
  ~DeadlineTimer();
  Handle add(Clock::time_point deadline, const std::shared_ptr<InFlightTask>& t);
  void remove(Handle h);

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Handle, std::weak_ptr<InFlightTask>> due_;
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
  void pass_baton();
  void pause(std::chrono::milliseconds d);
  void run(Dequeued dequeued);
  void finish(const std::shared_ptr<InFlightTask>& t, const task::Outcome& outcome,
              std::vector<task::EnqueueRequest> staged);
  void fail(const std::shared_ptr<InFlightTask>& t, const std::string& error,
            std::optional<Clock::time_point> retry_at, bool skip_retry);
  void write(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op,
             std::function<void()> write_fn, bool queue_on_failure);
  void report(const std::shared_ptr<InFlightTask>& t, TaskResult result);

  EngineContext& ctx_;
  Syncer& syncer_;
  DeadlineTimer timer_;
  std::vector<std::thread> threads_;

  std::mutex mu_;
  std::condition_variable cv_;        // sleepers wait here for a baton or the waiter role
  std::condition_variable exited_cv_;
  bool stopping_ = false;
  bool waiter_busy_ = false;          // some thread is blocked in wait_for_work
  int batons_ = 0;                    // "work may be there" tokens for sleepers
  int sleepers_ = 0;
  unsigned live_threads_ = 0;
  std::atomic<SteadyClock::rep> last_tick_{0};
};

}  // namespace wk::queue
