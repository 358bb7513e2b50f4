// Redis authentication (docs/configuration.md): a password (AUTH <password>), an ACL user
// (AUTH <user> <password>) and a database index, through a bare connection and through the whole
// broker (its pool, its blocking waiters); a wrong password is a clear error that does not show
// the password. Runs against a private redis-server whose passwords the test sets.
// ACL also lets Redis answer a chosen command with an error reply (NOPERM), which is how the last
// tests reproduce what a restarting server does (LOADING replies) without timing luck.
#include <gtest/gtest.h>

#include <string>

#include "log/log.hpp"
#include "queue/broker_redis.hpp"
#include "redis/redis.hpp"
#include "support/private_redis.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kDefaultPassword = "default-pw-7f3a";
constexpr const char* kAclUser = "wk_worker";
constexpr const char* kAclPassword = "acl-pw-91c2";

class RedisAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto admin = redis_.connect();
    admin.command({"ACL", "SETUSER", kAclUser, "on", std::string(">") + kAclPassword, "~*", "&*", "+@all"});
    admin.command({"CONFIG", "SET", "requirepass", kDefaultPassword});
  }

  redis::Settings with(std::string username, std::string password, int db) const {
    redis::Settings s = redis_.settings();
    s.username = std::move(username);
    s.password = std::move(password);
    s.db = db;
    return s;
  }

  PrivateRedis redis_;
};

TEST_F(RedisAuthTest, PasswordAndAclUserSelectTheirDatabase) {
  redis::Connection by_password(with("", kDefaultPassword, 3));
  by_password.command({"SET", "k", "from-password"});
  redis::Connection by_acl_user(with(kAclUser, kAclPassword, 2));
  by_acl_user.command({"SET", "k", "from-acl-user"});

  redis::Connection db3(with("", kDefaultPassword, 3));
  EXPECT_EQ(db3.command({"GET", "k"}).str(), "from-password");
  redis::Connection db2(with(kAclUser, kAclPassword, 2));
  EXPECT_EQ(db2.command({"GET", "k"}).str(), "from-acl-user");
  EXPECT_EQ(db2.command({"ACL", "WHOAMI"}).str(), kAclUser);
}

TEST_F(RedisAuthTest, WrongPasswordIsAClearErrorWithoutThePassword) {
  const std::string wrong = "not-the-password-5d1e";
  for (const auto& settings : {with("", wrong, 0), with(kAclUser, wrong, 0)}) {
    try {
      redis::Connection conn(settings);
      conn.command({"PING"});
      FAIL() << "a wrong password was accepted";
    } catch (const redis::Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find(wrong), std::string::npos) << what;
      EXPECT_NE(what.find(redis_.settings().address()), std::string::npos) << what;
    }
  }
}

TEST_F(RedisAuthTest, TheBrokerServesThroughAnAclUser) {
  queue::RedisBrokerSettings settings;
  settings.redis = with(kAclUser, kAclPassword, 4);
  queue::RedisBroker broker(settings, log::Logger::in_memory(log::Level::warn, log::Format::logfmt));

  const std::vector<std::string> queues = {"auth"};
  EXPECT_FALSE(broker.wait_for_work(queues, 50ms, 0));  // the blocking waiter authenticates too
  task::EnqueueRequest request;
  request.type = "auth:test";
  request.queue = "auth";
  const std::string id = broker.client().enqueue(request);
  EXPECT_TRUE(broker.wait_for_work(queues, 5s, 0));
  const auto taken = broker.dequeue(queues, 30s);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->msg.id, id);

  redis::Connection db4(with(kAclUser, kAclPassword, 4));
  EXPECT_EQ(db4.command({"HGET", "asynq:{auth}:t:" + id, "state"}).str(), "active");
}

// An error reply to the waiter's paused-queue check (LOADING while a restarted server reads its
// data) is an outage: it throws, so the engine logs it and backs off. It used to read as "this
// queue is paused", and the engine then called Redis available again mid-restart.
TEST_F(RedisAuthTest, AnErrorReplyToTheWaitersPausedCheckIsAnOutage) {
  auto admin = redis_.connect();
  admin.command({"AUTH", kDefaultPassword});
  admin.command({"ACL", "SETUSER", "no_exists", "on", ">pw-no-exists", "~*", "&*", "+@all", "-exists"});
  queue::RedisBrokerSettings settings;
  settings.redis = with("no_exists", "pw-no-exists", 0);
  queue::RedisBroker broker(settings, log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
  try {
    broker.wait_for_work({"q1", "q2"}, 50ms, 0);
    FAIL() << "an error reply was taken for a paused queue";
  } catch (const redis::Error& e) {
    EXPECT_TRUE(e.is_reply());
    EXPECT_NE(std::string(e.what()).find("NOPERM"), std::string::npos) << e.what();
  }
}

// A waiter whose BLMOVE is refused (an ACL without blocking commands, a proxy) cannot tell
// whether work is there: it answers "maybe" instead of letting the wait run out, so the engine
// asks with a dequeue rather than never again while idle.
TEST_F(RedisAuthTest, AWaiterWhoseBlmoveIsRefusedAnswersMaybe) {
  auto admin = redis_.connect();
  admin.command({"AUTH", kDefaultPassword});
  admin.command({"ACL", "SETUSER", "no_blmove", "on", ">pw-no-blmove", "~*", "&*", "+@all", "-blmove"});
  queue::RedisBrokerSettings settings;
  settings.redis = with("no_blmove", "pw-no-blmove", 0);
  queue::RedisBroker broker(settings, log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
  EXPECT_TRUE(broker.wait_for_work({"q1", "q2"}, 60s, 0)) << "a refused BLMOVE read as \"no work\"";
}

// A pipeline abandoned half-way (an exception between two reads) must not hand its unread replies
// to the pool's next user: that connection is dropped and the next lease reconnects.
TEST_F(RedisAuthTest, APipelineAbandonedHalfWayNeverLeaksRepliesToTheNextLease) {
  redis::Pool pool(with("", kDefaultPassword, 0), 1);
  {
    auto conn = pool.acquire();
    conn->append({"SET", "abandoned", "first"});
    conn->append({"GET", "abandoned"});
    EXPECT_EQ(conn->read_reply().str(), "OK");
    EXPECT_TRUE(conn->has_unread_replies());
  }  // the GET's reply is still on the socket
  auto conn = pool.acquire();
  EXPECT_FALSE(conn->has_unread_replies());
  EXPECT_EQ(conn->command({"ECHO", "mine"}).str(), "mine");
}

}  // namespace
}  // namespace wk::test
