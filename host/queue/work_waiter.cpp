#include "queue/work_waiter.hpp"

#include <cstdio>

#include "asynq/keys.hpp"

namespace wk::queue {

using Clock = std::chrono::system_clock;

struct WorkWaiter::Waiter {
  std::string pending_key;
  std::unique_ptr<redis::Connection> conn;  // created by the waiter thread; guarded by mu_
  Clock::time_point armed_until{};
  std::thread thread;
};

WorkWaiter::WorkWaiter(redis::Settings settings, redis::Pool& pool, log::Logger logger)
    : settings_(std::move(settings)), pool_(pool), log_(std::move(logger)) {}

WorkWaiter::~WorkWaiter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [queue, waiter] : waiters_) {
      if (waiter->conn) waiter->conn->interrupt();
    }
  }
  waiter_cv_.notify_all();
  work_cv_.notify_all();
  for (auto& [queue, waiter] : waiters_) {
    if (waiter->thread.joinable()) waiter->thread.join();
  }
}

WorkWaiter::Waiter& WorkWaiter::waiter_for(const std::string& queue) {
  auto& slot = waiters_[queue];
  if (!slot) {
    slot = std::make_unique<Waiter>();
    slot->pending_key = asynq::pending_key(queue);
    Waiter* w = slot.get();
    slot->thread = std::thread([this, w] { waiter_loop(*w); });
  }
  return *slot;
}

void WorkWaiter::waiter_loop(Waiter& w) {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    waiter_cv_.wait(lock, [&] { return stopping_ || w.armed_until > Clock::now(); });
    if (stopping_) break;
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(w.armed_until - Clock::now());
    if (remaining.count() <= 0) continue;
    bool got_work = false;
    bool failed = false;
    try {
      if (!w.conn) {
        lock.unlock();
        auto conn = std::make_unique<redis::Connection>(settings_);
        lock.lock();
        w.conn = std::move(conn);
        if (stopping_) break;
      }
      redis::Connection& conn = *w.conn;
      lock.unlock();
      char timeout[32];
      std::snprintf(timeout, sizeof timeout, "%.3f", static_cast<double>(remaining.count()) / 1000.0);
      const std::string_view argv[] = {"BLMOVE", w.pending_key, w.pending_key, "RIGHT", "RIGHT", timeout};
      redis::Reply reply = conn.blocking_command(argv, remaining);
      got_work = !reply.is_nil();
      lock.lock();
    } catch (const redis::Error& e) {
      if (!lock.owns_lock()) lock.lock();
      failed = true;
      if (!stopping_) log_.debug("wait for work failed", {{"key", w.pending_key}, {"error", e.what()}});
    }
    if (got_work) {
      ++work_signals_;
      w.armed_until = {};
      work_cv_.notify_all();
    } else if (failed && !stopping_) {
      // Redis away: do not spin; callers fall back to their own timeout.
      waiter_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
    }
  }
}

bool WorkWaiter::wait(const std::vector<std::string>& queues, std::chrono::milliseconds timeout) {
  // Paused queues are not waited on: BLMOVE would return at once for them (protocol §6.7).
  std::vector<const std::string*> unpaused;
  {
    auto conn = pool_.acquire();
    for (const std::string& q : queues) conn->append({"EXISTS", asynq::paused_key(q)});
    for (const std::string& q : queues) {
      // An error here (LOADING after a restart) is an outage like any other, not "paused".
      if (conn->read_reply().throw_if_error().integer() == 0) unpaused.push_back(&q);
    }
  }
  std::unique_lock lock(mu_);
  if (wake_pending_) {
    wake_pending_ = false;
    return false;
  }
  const uint64_t start = work_signals_;
  const Clock::time_point until = Clock::now() + timeout;
  for (const std::string* q : unpaused) waiter_for(*q).armed_until = until;
  waiter_cv_.notify_all();
  work_cv_.wait_until(lock, until, [&] { return work_signals_ != start || wake_pending_ || stopping_; });
  if (wake_pending_) {
    wake_pending_ = false;
    return false;
  }
  return work_signals_ != start;
}

void WorkWaiter::wake() {
  std::lock_guard lock(mu_);
  wake_pending_ = true;
  work_cv_.notify_all();
}

}  // namespace wk::queue
