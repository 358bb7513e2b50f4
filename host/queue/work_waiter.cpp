#include "queue/work_waiter.hpp"

#include <algorithm>
#include <cstdio>

#include "asynq/keys.hpp"

namespace wk::queue {

using Clock = std::chrono::system_clock;

constexpr auto kResumeCheckInterval = std::chrono::seconds(1);

struct WorkWaiter::Waiter {
  std::string pending_key;
  std::string paused_key;
  bool paused = false;                      // guarded by mu_; set by the waiter thread, cleared by wait()
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
    slot->paused_key = asynq::paused_key(queue);
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
    bool paused = false;
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
      const std::string_view paused_check[] = {"EXISTS", w.paused_key};
      // Tasks are there; a paused queue's tasks are not work (and would return at once again).
      // The check rides behind the BLMOVE: answered as it returns, no round trip of its own.
      auto [reply, paused_reply] = conn.blocking_command_then(argv, paused_check, remaining);
      got_work = !reply.is_nil();
      if (got_work) paused = paused_reply.throw_if_error().integer() != 0;
      lock.lock();
    } catch (const redis::Error& e) {
      if (!lock.owns_lock()) lock.lock();
      failed = true;
      // Reconnect through the path above, which sees a shutdown begun meanwhile.
      w.conn.reset();
      if (!stopping_) log_.debug("wait for work failed", {{"key", w.pending_key}, {"error", e.what()}});
    }
    if (got_work) {
      w.armed_until = {};
      if (paused) {
        w.paused = true;
        ++paused_signals_;
      } else {
        ++work_signals_;
      }
      work_cv_.notify_all();
    } else if (failed && !stopping_) {
      // The wait cannot tell whether work is there (Redis away, or BLMOVE refused): the caller
      // is told "maybe", so it asks with a dequeue, which reports the outage or finds the work.
      ++work_signals_;
      work_cv_.notify_all();
      waiter_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
    }
  }
}

bool WorkWaiter::wait(const std::vector<std::string>& queues, std::chrono::milliseconds timeout,
                      unsigned waker) {
  const uint64_t woken = uint64_t{1} << (waker % 64);
  std::unique_lock lock(mu_);
  if (!paused_known_) {
    // Once: which queues are paused now. Later pauses are found when a BLMOVE returns.
    std::vector<Waiter*> all;
    all.reserve(queues.size());
    for (const std::string& q : queues) all.push_back(&waiter_for(q));
    lock.unlock();
    const std::vector<Waiter*> open = unpaused(all);  // throws redis::Error: an outage
    lock.lock();
    for (Waiter* w : all) w->paused = std::find(open.begin(), open.end(), w) == open.end();
    paused_known_ = true;
  }
  const Clock::time_point until = Clock::now() + timeout;
  const uint64_t start = work_signals_;
  while (true) {
    if ((wakes_pending_ & woken) != 0) {
      wakes_pending_ &= ~woken;
      return false;
    }
    if (work_signals_ != start) return true;
    if (stopping_ || Clock::now() >= until) return false;
    std::vector<Waiter*> paused;
    for (const std::string& q : queues) {
      Waiter& w = waiter_for(q);
      if (w.paused) {
        paused.push_back(&w);
      } else {
        w.armed_until = until;
      }
    }
    waiter_cv_.notify_all();
    const uint64_t paused_before = paused_signals_;
    const auto next = paused.empty() ? until : std::min(until, Clock::now() + kResumeCheckInterval);
    work_cv_.wait_until(lock, next, [&] {
      return work_signals_ != start || (wakes_pending_ & woken) != 0 || stopping_ ||
             paused_signals_ != paused_before;
    });
    if (paused.empty() || work_signals_ != start || (wakes_pending_ & woken) != 0 || stopping_) continue;
    lock.unlock();
    const std::vector<Waiter*> back = unpaused(paused);  // throws redis::Error: an outage
    lock.lock();
    for (Waiter* w : back) w->paused = false;
    if (!back.empty()) return true;  // resumed: its pending tasks are work now
  }
}

std::vector<WorkWaiter::Waiter*> WorkWaiter::unpaused(const std::vector<Waiter*>& waiters) {
  std::vector<Waiter*> out;
  auto conn = pool_.acquire();
  for (const Waiter* w : waiters) conn->append({"EXISTS", w->paused_key});
  for (Waiter* w : waiters) {
    // An error here (LOADING after a restart) is an outage like any other, not "paused".
    if (conn->read_reply().throw_if_error().integer() == 0) out.push_back(w);
  }
  return out;
}

void WorkWaiter::wake(unsigned waker) {
  std::lock_guard lock(mu_);
  wakes_pending_ |= uint64_t{1} << (waker % 64);
  work_cv_.notify_all();
}

}  // namespace wk::queue
