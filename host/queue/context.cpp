#include "queue/context.hpp"

#include <algorithm>

namespace wk::queue {

task::Task task_of(const asynq::TaskMessage& msg) {
  task::Task t;
  t.id = msg.id;
  t.type = msg.type;
  t.queue = msg.queue;
  t.payload = msg.payload;
  t.headers = msg.headers;
  t.retried = msg.retried;
  t.max_retry = msg.retry;
  return t;
}

void InFlightTask::extend_lease(Clock::time_point expiry, Clock::time_point now) {
  auto current = lease_expiry_ticks.load();
  const auto wanted = expiry.time_since_epoch().count();
  // CAS loop: a concurrent reader must never see an expired lease come back to life.
  while (Clock::time_point(Clock::duration(current)) >= now && current < wanted) {
    if (lease_expiry_ticks.compare_exchange_weak(current, wanted)) return;
  }
}

void InFlightTask::set_progress(task::Progress p) {
  std::lock_guard lock(progress_mu_);
  progress_ = std::move(p);
}

task::Progress InFlightTask::progress() const {
  std::lock_guard lock(progress_mu_);
  return progress_;
}

void InFlight::add(const std::shared_ptr<InFlightTask>& t) {
  std::lock_guard lock(mu_);
  tasks_[t->msg.id] = t;
}

void InFlight::remove(const std::shared_ptr<InFlightTask>& t) {
  {
    std::lock_guard lock(mu_);
    if (auto it = tasks_.find(t->msg.id); it != tasks_.end() && it->second == t) tasks_.erase(it);
  }
  cv_.notify_all();
}

std::shared_ptr<InFlightTask> InFlight::find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<InFlightTask>> InFlight::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<InFlightTask>> out;
  out.reserve(tasks_.size());
  for (const auto& [id, t] : tasks_) out.push_back(t);
  return out;
}

int InFlight::size() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(tasks_.size());
}

bool InFlight::wait_empty_until(SteadyClock::time_point until) const {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, until, [&] { return tasks_.empty() || interrupted_; });
  return tasks_.empty();
}

void InFlight::notify() {
  {
    std::lock_guard lock(mu_);
    interrupted_ = true;
  }
  cv_.notify_all();
}

void RedisHealth::failed(std::string_view operation, const std::exception& error) {
  std::lock_guard lock(mu_);
  if (!up_.exchange(false)) return;
  down_since_ = SteadyClock::now();
  log_.error("Redis unavailable", {{"op", operation}, {"error", error.what()}});
  if (observer_ != nullptr) observer_->redis_down();
}

void RedisHealth::succeeded(SteadyClock::time_point started) {
  if (up_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mu_);
  if (up_.load() || started < down_since_) return;
  up_ = true;
  log_.info("Redis available again");
  if (observer_ != nullptr) observer_->redis_up();
}

void PeriodicLoop::start() {
  stopping_ = false;
  running_ = true;
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  thread_ = std::thread([this] { run(); });
}

void PeriodicLoop::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  running_ = false;
}

bool PeriodicLoop::healthy() const {
  if (!running_) return true;
  const auto last = SteadyClock::time_point(SteadyClock::duration(last_tick_.load()));
  const auto wait = std::max(interval_, std::chrono::milliseconds(wait_ms_.load()));
  return SteadyClock::now() - last <= 3 * wait + std::chrono::seconds(5);
}

void PeriodicLoop::run() {
  std::chrono::milliseconds wait = run_at_start_ ? std::chrono::milliseconds(0) : interval_;
  while (true) {
    wait_ms_ = wait.count();
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, wait, [&] { return stopping_; })) return;
    }
    wait = std::max(std::chrono::milliseconds(1), tick_());
    last_tick_ = SteadyClock::now().time_since_epoch().count();
  }
}

std::chrono::milliseconds fleet_slot_delay(std::chrono::milliseconds period, const FleetPosition& fleet,
                                           Clock::time_point now) {
  const int64_t size = std::max(1, fleet.size.load());
  const int64_t rank = std::clamp<int64_t>(fleet.rank.load(), 0, size - 1);
  const int64_t p = std::max<int64_t>(1, period.count());
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  int64_t turn = now_ms / p + 1;                 // the next turn of anyone
  turn += ((rank - turn) % size + size) % size;  // the next of ours
  return std::chrono::milliseconds(turn * p - now_ms);
}

EngineContext::EngineContext(Broker& b, task::Dispatcher& d, log::Logger l, Settings s)
    : broker(b),
      dispatcher(d),
      log(std::move(l)),
      settings(std::move(s)),
      order(settings.queues, settings.strict_priority, settings.host_queue),
      health(log),
      flow(b, d, health, log,
           FlowControl::Options{settings.limits, settings.identity.server_id,
                                std::chrono::milliseconds(settings.lease)}) {}

std::chrono::seconds EngineContext::retry_delay(int32_t retried, const std::string& error,
                                                const task::Task& t) {
  if (settings.retry_delay) return settings.retry_delay(retried, error, t);
  return default_delay(retried);
}

log::Logger EngineContext::task_log(const task::Task& t) const {
  return log.with({{"task_id", t.id}, {"task_type", t.type}, {"queue", t.queue}, {"attempt", t.retried + 1}});
}

}  // namespace wk::queue
