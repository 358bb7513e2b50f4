// redis::Reply / ReplyView over replies parsed from RESP bytes by hiredis's own reader (the
// parser every connection uses), and Script's id, without a server.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <string>

#include "redis/redis.hpp"

namespace wk::redis {
namespace {

// The reply RESP `bytes` decode to.
Reply parse(const std::string& bytes) {
  redisReader* reader = redisReaderCreate();
  EXPECT_EQ(redisReaderFeed(reader, bytes.data(), bytes.size()), REDIS_OK);
  void* raw = nullptr;
  EXPECT_EQ(redisReaderGetReply(reader, &raw), REDIS_OK);
  redisReaderFree(reader);
  EXPECT_NE(raw, nullptr) << "incomplete RESP: " << bytes;
  return Reply(static_cast<redisReply*>(raw));
}

TEST(Reply, ScalarsReadAsWhatTheyAre) {
  const Reply bulk = parse("$5\r\nhello\r\n");
  EXPECT_TRUE(bulk.is_string());
  EXPECT_EQ(bulk.str(), "hello");
  const Reply binary = parse(std::string("$5\r\nhe\0lo\r\n", 11));
  EXPECT_EQ(binary.str(), std::string_view("he\0lo", 5)) << "binary-safe";
  const Reply status = parse("+OK\r\n");
  EXPECT_TRUE(status.is_string());
  EXPECT_EQ(status.str(), "OK");
  const Reply number = parse(":-42\r\n");
  EXPECT_TRUE(number.is_integer());
  EXPECT_EQ(number.integer(), -42);
  const Reply nil = parse("$-1\r\n");
  EXPECT_TRUE(nil.is_nil());
  EXPECT_FALSE(nil.is_string());
}

TEST(Reply, AnErrorReplyThrowsAReplyErrorWithRedisText) {
  const Reply error = parse("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  EXPECT_TRUE(error.is_error());
  try {
    error.throw_if_error();
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is_reply());
    EXPECT_FALSE(e.is_connection());
    EXPECT_EQ(std::string(e.what()), "WRONGTYPE Operation against a key holding the wrong kind of value");
  }
  EXPECT_NO_THROW(parse("+OK\r\n").throw_if_error());
}

TEST(Reply, AskingForTheWrongKindThrows) {
  EXPECT_ANY_THROW(parse(":1\r\n").str());
  EXPECT_ANY_THROW(parse("$1\r\nx\r\n").integer());
  EXPECT_EQ(parse(":1\r\n").size(), 0u);  // not an array: no elements
}

TEST(Reply, NestedArraysAreWalkedByIndex) {
  // [["id-1", "msg"], 7, nil]: the shape of the dequeue script's reply.
  const Reply r = parse("*3\r\n*2\r\n$4\r\nid-1\r\n$3\r\nmsg\r\n:7\r\n$-1\r\n");
  ASSERT_TRUE(r.is_array());
  ASSERT_EQ(r.size(), 3u);
  ASSERT_EQ(r[0].size(), 2u);
  EXPECT_EQ(r[0][0].str(), "id-1");
  EXPECT_EQ(r[0][1].str(), "msg");
  EXPECT_EQ(r[1].integer(), 7);
  EXPECT_TRUE(r[2].is_nil());
  EXPECT_EQ(parse("*0\r\n").size(), 0u);
}

TEST(Reply, MovedRepliesKeepTheirReplyAndFreeItOnce) {
  Reply a = parse("$3\r\nabc\r\n");
  Reply b = std::move(a);
  EXPECT_EQ(b.str(), "abc");
  Reply c = parse(":1\r\n");
  c = std::move(b);
  EXPECT_EQ(c.str(), "abc");  // ASan reports a double free or leak here if ownership is wrong
}

TEST(Script, ItsIdIsRedisSha1OfTheSource) {
  // What SCRIPT LOAD "return 1" answers on any Redis.
  EXPECT_EQ(Script("return 1").sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

}  // namespace
}  // namespace wk::redis

namespace wk::redis {
namespace {

// The examples of the Redis Cluster specification, and asynq's keys: one queue, one slot.
TEST(KeySlot, MatchesRedisClusterHashing) {
  EXPECT_EQ(key_slot("123456789"), 0x31C3);  // the CRC16 check value
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
  EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));      // an empty tag: the whole key counts
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));  // the tag ends at the first '}'
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));   // only the first tag counts
  EXPECT_EQ(key_slot("asynq:{default}:pending"), key_slot("asynq:{default}:t:0190-task"));
  EXPECT_EQ(key_slot("asynq:{default}:pending"), key_slot("default"));
}

}  // namespace
}  // namespace wk::redis
