// Redis authentication (issue 3, item 8): a password (AUTH <password>), an ACL user
// (AUTH <user> <password>) and a database index, through a bare connection and through the whole
// broker (its pool, its blocking waiters); a wrong password is a clear error that does not show
// the password. Runs against a private redis-server whose passwords the test sets.
#include <gtest/gtest.h>

#include <string>

#include "log/log.hpp"
#include "queue/broker_redis.hpp"
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
  EXPECT_FALSE(broker.wait_for_work(queues, 50ms));  // the blocking waiter authenticates too
  task::EnqueueRequest request;
  request.type = "auth:test";
  request.queue = "auth";
  const std::string id = broker.client().enqueue(request);
  EXPECT_TRUE(broker.wait_for_work(queues, 5s));
  const auto taken = broker.dequeue(queues, 30s);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->msg.id, id);

  redis::Connection db4(with(kAclUser, kAclPassword, 4));
  EXPECT_EQ(db4.command({"HGET", "asynq:{auth}:t:" + id, "state"}).str(), "active");
}

}  // namespace
}  // namespace wk::test
