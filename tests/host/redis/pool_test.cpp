// redis::Pool across a Redis restart, a connection given back with replies unread, and a
// connection that reached a replica.
#include <gtest/gtest.h>

#include "redis/redis.hpp"
#include "support/private_redis.hpp"

namespace wk::test {
namespace {

// One connection that fails because the server restarted resets the idle ones: the next user of
// another connection gets an answer at once instead of one more failure on its dead socket.
TEST(RedisPool, AFailureAfterARestartResetsTheIdleConnections) {
  PrivateRedis server;
  redis::Pool pool(server.settings(), 2);
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    EXPECT_EQ(a->command({"PING"}).str(), "PONG");
    EXPECT_EQ(b->command({"PING"}).str(), "PONG");
  }  // both idle, both connected
  server.stop();
  server.start();
  {
    auto first = pool.acquire();
    try {
      first->command({"PING"});
      FAIL() << "the old socket answered after a restart";
    } catch (const redis::Error& e) {
      EXPECT_TRUE(e.is_connection()) << e.what();
    }
  }                             // given back broken: the idle one is reset
  auto again = pool.acquire();  // the same connection (most recently returned), reconnecting
  auto other = pool.acquire();  // the idle one the failure reset
  EXPECT_EQ(other->command({"PING"}).str(), "PONG");
  EXPECT_EQ(again->command({"PING"}).str(), "PONG");
}

// A pipeline abandoned half-way (replies appended for, never read) must not hand the next user
// the previous user's replies.
TEST(RedisPool, AConnectionReturnedWithUnreadRepliesStartsClean) {
  PrivateRedis server;
  redis::Pool pool(server.settings(), 1);
  {
    auto lease = pool.acquire();
    lease->append({"ECHO", "stale"});
    EXPECT_TRUE(lease->has_unread_replies());
  }
  auto lease = pool.acquire();
  EXPECT_FALSE(lease->has_unread_replies());
  EXPECT_EQ(lease->command({"ECHO", "fresh"}).str(), "fresh");
}

// A write to a replica (a master a failover demoted) is refused with READONLY: that is the wrong
// server, not a failed command, so the connection drops and its next command reconnects.
TEST(RedisConnection, AReadonlyReplyIsAConnectionErrorAndTheNextCommandReconnects) {
  PrivateRedis master;
  PrivateRedis::Options replica_options;
  replica_options.extra_args = {"--replicaof", "127.0.0.1", std::to_string(master.port())};
  PrivateRedis replica(replica_options);
  redis::Connection conn(replica.settings());
  try {
    conn.command({"SET", "k", "v"});
    FAIL() << "a replica took a write";
  } catch (const redis::Error& e) {
    EXPECT_TRUE(e.is_connection()) << e.what();
    EXPECT_NE(std::string(e.what()).find("READONLY"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(conn.broken());
  EXPECT_EQ(conn.command({"PING"}).str(), "PONG");  // reconnected
}

}  // namespace
}  // namespace wk::test
