#pragma once
// Cancellation (protocol §6.20): a loop that reads asynq:cancel and cancels the matching running
// task with reason `requested`; unknown ids are ignored. On connection trouble it logs once,
// backs off (doubling up to resubscribe_delay) and subscribes again.
//
// RedisCancelSource is the Redis implementation of CancelSource: SUBSCRIBE on a connection of
// its own, waiting with poll(2) on the socket and an eventfd so interrupt() is immediate, and a
// PING when the connection has been silent for a while so a dead peer is noticed.
#include <memory>

#include "queue/context.hpp"
#include "redis/redis.hpp"

struct redisContext;

namespace wk::queue {

class RedisCancelSource final : public CancelSource {
 public:
  explicit RedisCancelSource(redis::Settings settings);
  ~RedisCancelSource() override;
  std::optional<std::string> next(std::chrono::milliseconds timeout) override;
  void interrupt() override;

 private:
  void connect();
  void disconnect();
  [[noreturn]] void fail(const std::string& what);

  redis::Settings settings_;
  redisContext* ctx_ = nullptr;
  int wake_fd_ = -1;  // eventfd
  SteadyClock::time_point last_traffic_{};
  bool ping_outstanding_ = false;
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
