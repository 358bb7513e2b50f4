// A dequeue whose reply never reaches the worker (the connection timed out or dropped after Redis
// ran the script): the tasks it took are handed back, no attempt counted, before the thread's
// next dequeue, instead of waiting out their lease and being retried as failures. Runs against a
// private redis-server, because the test holds the server busy with a long script for a moment.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "asynq/keys.hpp"
#include "log/log.hpp"
#include "queue/broker_redis.hpp"
#include "support/private_redis.hpp"

namespace wk::queue {
namespace {

using namespace std::chrono_literals;

// Keeps the server busy running one script for `ms`: commands sent meanwhile run after it.
void hold_server_busy(const redis::Settings& settings, int ms) {
  redis::Connection conn(settings);
  const std::string duration = std::to_string(ms);
  const std::string_view argv[] = {duration};
  const redis::Script busy(R"lua(
local t = redis.call("TIME")
local until_us = (tonumber(t[1]) * 1000000 + tonumber(t[2])) + tonumber(ARGV[1]) * 1000
repeat t = redis.call("TIME") until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= until_us
return 1
)lua");
  conn.eval(busy, argv, 0);
}

// Three tasks in `queue`; a dequeue over `queues` that Redis runs after its caller gave up; then
// the thread's next dequeue. What it took must come back uncounted, before it is taken again.
void expect_lost_dequeue_handed_back(const std::string& queue, const std::vector<std::string>& queues) {
  test::PrivateRedis redis;
  redis::Settings settings = redis.settings();
  settings.command_timeout = 200ms;
  auto logger = log::Logger::in_memory(log::Level::info, log::Format::logfmt);
  RedisBroker broker(RedisBrokerSettings{.redis = settings, .pool_size = 2}, logger);
  for (int i = 0; i < 3; ++i) {
    task::EnqueueRequest r;
    r.type = "email:send";
    r.queue = queue;
    r.task_id = "t" + std::to_string(i);
    broker.client().enqueue(r);
  }
  // Connected, and the script cached (a NOSCRIPT reply would mean it never ran).
  ASSERT_TRUE(broker.dequeue_batch({"warm-up"}, 30s, 1).empty());
  redis::Connection raw(redis.settings());
  auto busy = std::async(std::launch::async, [&] { hold_server_busy(redis.settings(), 1000); });
  // The busy script has started once PING from another connection stops answering at once.
  ASSERT_TRUE([&] {
    const auto give_up = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < give_up) {
      redis::Settings quick = redis.settings();
      quick.command_timeout = 50ms;
      try {
        redis::Connection probe(quick);
        probe.command({"PING"});
      } catch (const redis::Error&) {
        return true;
      }
    }
    return false;
  }());
  // Sent while the server is busy: it times out here, and Redis runs it once the script ends.
  EXPECT_THROW(broker.dequeue_batch(queues, 30s, 3), redis::Error);
  busy.get();
  const auto active = raw.command({"LLEN", asynq::active_key(queue)}).integer();
  ASSERT_EQ(active, 3) << "the dequeue ran in Redis after its caller gave up";

  // The next dequeue of that thread hands them back first (to the back of pending), then takes them.
  const auto got = broker.dequeue_batch(queues, 30s, 3);
  ASSERT_EQ(got.size(), 3U);
  for (const auto& d : got) EXPECT_EQ(d.msg.retried, 0) << d.msg.id;
  EXPECT_EQ(raw.command({"ZCARD", asynq::lease_key(queue)}).integer(), 3);
  EXPECT_TRUE(raw.command({"GET", asynq::failed_total_key(queue)}).is_nil());
  int handed_back = 0;
  for (const auto& line : logger.lines()) {
    if (line.find("dequeue reply was lost") != std::string::npos &&
        line.find("tasks=3") != std::string::npos && line.find("queue=" + queue) != std::string::npos)
      ++handed_back;
  }
  EXPECT_EQ(handed_back, 1);
}

TEST(LostDequeueReply, TheTasksItTookAreHandedBackUncountedBeforeTheNextDequeue) {
  expect_lost_dequeue_handed_back("default", {"default"});
}

// One call tries every queue in order (docs/queue-engine.md "Dequeue"): the lost call's tasks may
// come from any of them.
TEST(LostDequeueReply, ACallOverSeveralQueuesHandsBackWhatItTookFromAnyOfThem) {
  expect_lost_dequeue_handed_back("low", {"critical", "default", "low"});
}

// A claim is only honoured for the call that made it: tasks a later dequeue of the same thread
// took (and holds) are never handed back.
TEST(LostDequeueReply, ALostCallThatTookNothingHandsNothingBack) {
  test::PrivateRedis redis;
  redis::Settings settings = redis.settings();
  settings.command_timeout = 200ms;
  RedisBroker broker(RedisBrokerSettings{.redis = settings, .pool_size = 2},
                     log::Logger::in_memory(log::Level::info, log::Format::logfmt));
  task::EnqueueRequest r;
  r.type = "email:send";
  r.task_id = "held";
  broker.client().enqueue(r);
  ASSERT_EQ(broker.dequeue_batch({"default"}, 30s, 1).size(), 1U);  // claimed and held
  redis.signal(SIGSTOP);
  EXPECT_THROW(broker.dequeue_batch({"default"}, 30s, 1), redis::Error);  // never ran
  redis.signal(SIGCONT);
  r.task_id = "next";
  broker.client().enqueue(r);
  const auto got = broker.dequeue_batch({"default"}, 30s, 2);
  ASSERT_EQ(got.size(), 1U);
  EXPECT_EQ(got[0].msg.id, "next");
  redis::Connection raw(redis.settings());
  EXPECT_EQ(raw.command({"LLEN", asynq::active_key("default")}).integer(), 2) << "the held task stays active";
}

}  // namespace
}  // namespace wk::queue
