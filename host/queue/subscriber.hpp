#pragma once
// Cancellation (protocol §6.20): a loop that reads asynq:cancel and cancels the matching running
// task with reason `requested`; unknown ids are ignored. On connection trouble it logs once,
// backs off (doubling up to resubscribe_delay) and subscribes again.
//
// RedisCancelSource is the Redis implementation of CancelSource: a redis::Subscription to
// asynq's cancel channel.
#include <memory>

#include "queue/context.hpp"
#include "redis/redis.hpp"

namespace wk::queue {

class RedisCancelSource final : public CancelSource {
 public:
  explicit RedisCancelSource(redis::Settings settings);
  std::optional<std::string> next(std::chrono::milliseconds timeout) override;
  void interrupt() override;

 private:
  redis::Subscription subscription_;
};

class Subscriber {
 public:
  Subscriber(EngineContext& ctx, std::unique_ptr<CancelSource> source);
  ~Subscriber();
  void start();
  void stop();
  bool healthy() const;

 private:
  void run();
  EngineContext& ctx_;
  std::unique_ptr<CancelSource> source_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  std::atomic<SteadyClock::rep> last_tick_{0};
};

}  // namespace wk::queue
