#include "queue/subscriber.hpp"

#include "asynq/keys.hpp"

namespace wk::queue {

RedisCancelSource::RedisCancelSource(redis::Settings settings)
    : subscription_(std::move(settings), std::string(asynq::kCancelChannel)) {}

std::optional<std::string> RedisCancelSource::next(std::chrono::milliseconds timeout) {
  return subscription_.next(timeout);
}

void RedisCancelSource::interrupt() { subscription_.interrupt(); }

Subscriber::Subscriber(EngineContext& ctx, std::unique_ptr<CancelSource> source)
    : ctx_(ctx), source_(std::move(source)) {}

Subscriber::~Subscriber() { stop(); }

void Subscriber::start() {
  if (!source_) return;
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  thread_ = std::thread([this] { run(); });
}

void Subscriber::stop() {
  stopping_ = true;
  cv_.notify_all();
  if (source_) source_->interrupt();
  if (thread_.joinable()) thread_.join();
}

bool Subscriber::healthy() const {
  if (!thread_.joinable()) return true;
  const auto last = SteadyClock::time_point(SteadyClock::duration(last_tick_.load()));
  return SteadyClock::now() - last <= 3 * ctx_.settings.resubscribe_delay + std::chrono::seconds(10);
}

void Subscriber::run() {
  const auto max_backoff = std::max(std::chrono::milliseconds(1), ctx_.settings.resubscribe_delay);
  std::chrono::milliseconds backoff{0};
  bool broken = false;
  while (!stopping_) {
    last_tick_ = SteadyClock::now().time_since_epoch().count();
    try {
      auto id = source_->next(std::chrono::seconds(1));
      if (broken) {
        ctx_.log.info("Cancellation channel subscribed again");
        broken = false;
      }
      backoff = std::chrono::milliseconds(0);
      if (!id) continue;
      if (auto t = ctx_.inflight.find(*id)) {
        ctx_.task_log(t->task).info("Cancel requested");
        t->cancellation.cancel(task::CancelReason::requested);
      }
    } catch (const std::exception& e) {
      if (!broken) ctx_.log.warn("Cancellation channel lost; resubscribing", {{"error", e.what()}});
      broken = true;
      backoff = std::min(max_backoff, std::max(max_backoff / 32, backoff * 2));
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, backoff, [&] { return stopping_.load(); });
    }
  }
}

}  // namespace wk::queue
