#pragma once
// Waiting for work without polling (Broker::wait_for_work): one waiter thread per queue, each on
// its own connection, parks in `BLMOVE pending pending RIGHT RIGHT <t>` (a no-op rotation that
// returns as soon as the list is non-empty) while armed. An idle worker costs Redis one BLMOVE per
// queue per wait, nothing else.
//
// Paused queues: BLMOVE would return at once for a paused queue with pending tasks, so a waiter
// whose BLMOVE returns first checks the queue's paused key; a paused queue is not reported and no
// longer armed, and while any queue is known paused, wait() checks those keys once a second so a
// resume is seen within a second. Queues nobody paused cost no paused checks at all.
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "log/log.hpp"
#include "redis/redis.hpp"

namespace wk::queue {

class WorkWaiter {
 public:
  // `pool` answers the paused checks; each queue's waiter opens a connection of its own.
  WorkWaiter(redis::Settings settings, redis::Pool& pool, log::Logger logger);
  ~WorkWaiter();  // interrupts and joins the waiter threads
  WorkWaiter(const WorkWaiter&) = delete;
  WorkWaiter& operator=(const WorkWaiter&) = delete;

  // As Broker::wait_for_work: true when some queue may have a pending task, or when a waiter's
  // BLMOVE failed (the caller's dequeue then finds out); false on timeout or wake(waker). Throws
  // redis::Error when the paused checks fail. `waker` < Broker::kWakers names the caller.
  bool wait(const std::vector<std::string>& queues, std::chrono::milliseconds timeout, unsigned waker);
  // Makes the current (or, if none, the next) wait() of `waker` return false at once.
  void wake(unsigned waker);

 private:
  struct Waiter;
  Waiter& waiter_for(const std::string& queue);  // mu_ held
  void waiter_loop(Waiter& waiter);
  // Of `waiters`, the ones whose queue has no paused key; mu_ not held. Throws redis::Error.
  std::vector<Waiter*> unpaused(const std::vector<Waiter*>& waiters);

  const redis::Settings settings_;
  redis::Pool& pool_;
  log::Logger log_;
  std::mutex mu_;
  std::condition_variable work_cv_;    // waiters -> wait() callers
  std::condition_variable waiter_cv_;  // wait() -> waiters (armed) and shutdown
  uint64_t work_signals_ = 0;          // work may be there: a BLMOVE returned, or failed and cannot tell
  uint64_t paused_signals_ = 0;        // a waiter found its queue paused
  uint64_t wakes_pending_ = 0;         // a bit per waker
  bool paused_known_ = false;          // the first wait() has checked every queue
  bool stopping_ = false;
  std::map<std::string, std::unique_ptr<Waiter>> waiters_;
};

}  // namespace wk::queue
