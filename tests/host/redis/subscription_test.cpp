// redis::Subscription against a private redis-server: messages, interrupt(), and a restart.
#include <gtest/gtest.h>

#include <future>

#include "redis/redis.hpp"
#include "support/private_redis.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;

// Publishes `payload` on `channel` until a subscriber has received it (a message published before
// the SUBSCRIBE is lost, as pub/sub is), at most 10 s.
std::optional<std::string> deliver(redis::Subscription& sub, PrivateRedis& server, const std::string& channel,
                                   const std::string& payload) {
  auto publisher = server.connect();
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < give_up) {
    publisher.command({"PUBLISH", channel, payload});
    if (auto got = sub.next(200ms)) return got;
  }
  return std::nullopt;
}

TEST(RedisSubscription, ReceivesWhatIsPublishedOnItsChannelOnly) {
  PrivateRedis server;
  redis::Subscription sub(server.settings(), "wk:test:channel");
  EXPECT_FALSE(sub.next(50ms).has_value());  // subscribes; nothing yet
  server.connect().command({"PUBLISH", "wk:test:other", "not for us"});
  EXPECT_EQ(deliver(sub, server, "wk:test:channel", "task-1"), "task-1");
}

TEST(RedisSubscription, InterruptEndsAWaitAtOnce) {
  PrivateRedis server;
  redis::Subscription sub(server.settings(), "wk:test:channel");
  EXPECT_FALSE(sub.next(10ms).has_value());
  auto waiting = std::async(std::launch::async, [&] { return sub.next(60s); });
  sub.interrupt();
  ASSERT_EQ(waiting.wait_for(10s), std::future_status::ready) << "interrupt() did not end next()";
  EXPECT_FALSE(waiting.get().has_value());
}

TEST(RedisSubscription, ALostServerIsAConnectionErrorAndTheNextCallSubscribesAgain) {
  PrivateRedis server;
  redis::Subscription sub(server.settings(), "wk:test:channel");
  EXPECT_FALSE(sub.next(10ms).has_value());
  server.stop();
  try {
    for (int i = 0; i < 100; ++i) (void)sub.next(100ms);  // the server's close is seen at once
    FAIL() << "no error while the server was gone";
  } catch (const redis::Error& e) {
    EXPECT_TRUE(e.is_connection()) << e.what();
  }
  server.start();
  EXPECT_EQ(deliver(sub, server, "wk:test:channel", "after restart"), "after restart");
}

}  // namespace
}  // namespace wk::test
