#include "engine_fixture.hpp"

#include <gtest/gtest.h>

#include "support/redis_env.hpp"
#include "support/test_env.hpp"

namespace wk::test {

redis::Settings redis_settings() { return test_redis_settings(kRedisDb); }

queue::Settings fast_settings(std::vector<queue::QueueWeight> queues, int concurrency) {
  queue::Settings s;
  s.queues = std::move(queues);
  s.concurrency = concurrency;
  s.heartbeat_interval = std::chrono::milliseconds(100);
  s.forwarder_interval = std::chrono::milliseconds(100);
  s.recoverer_interval = std::chrono::milliseconds(200);
  s.janitor_interval = std::chrono::milliseconds(200);
  s.sync_interval = std::chrono::milliseconds(100);
  s.shutdown_timeout = std::chrono::milliseconds(300);
  s.wait_timeout = std::chrono::milliseconds(500);
  s.resubscribe_delay = std::chrono::milliseconds(200);
  return s;
}

RedisProbe::RedisProbe() : conn(redis_settings()) {}

void RedisProbe::clean(const std::vector<std::string>& queues) {
  for (const auto& q : queues) {
    std::string cursor = "0";
    do {
      auto r = conn.command({"SCAN", cursor, "MATCH", "asynq:{" + q + "}:*", "COUNT", "1000"});
      cursor = std::string(r[0].str());
      for (size_t i = 0; i < r[1].size(); ++i) conn.command({"DEL", r[1][i].str()});
    } while (cursor != "0");
  }
}

long long RedisProbe::llen(const std::string& key) { return conn.command({"LLEN", key}).integer(); }
long long RedisProbe::zcard(const std::string& key) { return conn.command({"ZCARD", key}).integer(); }
bool RedisProbe::exists(const std::string& key) { return conn.command({"EXISTS", key}).integer() == 1; }

long long RedisProbe::counter(const std::string& key) {
  auto r = conn.command({"GET", key});
  return r.is_nil() ? 0 : std::stoll(std::string(r.str()));
}

std::optional<double> RedisProbe::zscore(const std::string& key, const std::string& member) {
  auto r = conn.command({"ZSCORE", key, member});
  if (r.is_nil()) return std::nullopt;
  return std::stod(std::string(r.str()));
}

std::string RedisProbe::hget(const std::string& key, const std::string& field) {
  auto r = conn.command({"HGET", key, field});
  return r.is_nil() ? std::string() : std::string(r.str());
}

asynq::TaskMessage RedisProbe::message(const std::string& queue, const std::string& id) {
  return asynq::decode_task_message(hget("asynq:{" + queue + "}:t:" + id, "msg"));
}

std::string test_queue(const std::string& suffix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string("eng_") + info->test_suite_name() + "_" + info->name() + "_" + suffix;
}

}  // namespace wk::test
