#pragma once
// Waiting for work without polling (Broker::wait_for_work): one waiter thread per queue, each on
// its own connection, parks in `BLMOVE pending pending RIGHT RIGHT <t>` (a no-op rotation that
// returns as soon as the list is non-empty) while armed. Paused queues are never armed, so they
// cannot cause a busy loop.
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

  // As Broker::wait_for_work: true when some queue may have a pending task; false on timeout or
  // wake(). Throws redis::Error when the paused checks fail.
  bool wait(const std::vector<std::string>& queues, std::chrono::milliseconds timeout);
  // Makes the current (or, if none, the next) wait() return false at once.
  void wake();

 private:
  struct Waiter;
  Waiter& waiter_for(const std::string& queue);  // mu_ held
  void waiter_loop(Waiter& waiter);

  const redis::Settings settings_;
  redis::Pool& pool_;
  log::Logger log_;
  std::mutex mu_;
  std::condition_variable work_cv_;    // waiters -> wait() callers
  std::condition_variable waiter_cv_;  // wait() -> waiters (armed) and shutdown
  uint64_t work_signals_ = 0;
  bool wake_pending_ = false;
  bool stopping_ = false;
  std::map<std::string, std::unique_ptr<Waiter>> waiters_;
};

}  // namespace wk::queue
