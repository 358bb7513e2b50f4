#pragma once
// Shared pieces of the engine integration tests: a Redis DB of our own (kRedisDb), queue names
// unique per test (so ctest may run test cases in parallel against one Redis), a test Dispatcher
// whose handlers are lambdas, and small Redis inspection helpers.
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "queue/broker_redis.hpp"
#include "queue/engine.hpp"
#include "redis/redis.hpp"

namespace wk::test {

// The engine engineer's Redis DB index for tests (other suites use other indexes).
inline constexpr int kRedisDb = 3;

redis::Settings redis_settings();

class FuncDispatcher : public task::Dispatcher {
 public:
  using Handler = std::function<task::Outcome(task::Execution&)>;
  void on(const std::string& type, Handler h) { handlers_[type] = std::move(h); }
  bool handles(std::string_view type) const override { return handlers_.count(std::string(type)) > 0; }
  task::Outcome dispatch(task::Execution& ex) override { return handlers_.at(ex.task.type)(ex); }
  void bound(const std::string& type, std::chrono::milliseconds t) { bounds_[type] = t; }
  void max_concurrency(const std::string& type, uint32_t n) { max_[type] = n; }
  uint32_t max_concurrency(std::string_view type) const override {
    const auto it = max_.find(std::string(type));
    return it == max_.end() ? 0 : it->second;
  }
  std::chrono::milliseconds attempt_timeout(std::string_view type) const override {
    const auto it = bounds_.find(std::string(type));
    return it == bounds_.end() ? std::chrono::milliseconds(0) : it->second;
  }

 private:
  std::map<std::string, Handler> handlers_;
  std::map<std::string, std::chrono::milliseconds> bounds_;
  std::map<std::string, uint32_t> max_;
};

// Fast timings for tests; queues as given.
queue::Settings fast_settings(std::vector<queue::QueueWeight> queues, int concurrency = 2);

struct RedisProbe {
  RedisProbe();
  redis::Connection conn;
  // Deletes every asynq:{q}:* key of these queues.
  void clean(const std::vector<std::string>& queues);
  long long llen(const std::string& key);
  long long zcard(const std::string& key);
  long long counter(const std::string& key);  // GET as integer, 0 when missing
  bool exists(const std::string& key);
  std::optional<double> zscore(const std::string& key, const std::string& member);
  std::string hget(const std::string& key, const std::string& field);
  asynq::TaskMessage message(const std::string& queue, const std::string& id);
};

// A unique prefix for this test's queues: "<suite>_<test>".
std::string test_queue(const std::string& suffix);

}  // namespace wk::test
