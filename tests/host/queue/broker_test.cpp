// RedisBroker and Client against a real redis-server, checked key by key (protocol §6).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "asynq/keys.hpp"
#include "digest/digest.hpp"
#include "queue/broker_redis.hpp"
#include "support/redis_env.hpp"
#include "support/test_env.hpp"

namespace wk::queue {
namespace {

using namespace std::chrono_literals;
constexpr int kTestDb = 1;  // owned by these tests; other suites use other indexes

redis::Settings test_settings() { return test::test_redis_settings(kTestDb); }

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    raw_ = std::make_unique<redis::Connection>(test_settings());
    raw_->command({"FLUSHDB"});
    broker_ = std::make_unique<RedisBroker>(RedisBrokerSettings{.redis = test_settings(), .pool_size = 4},
                                            log::Logger::in_memory(log::Level::debug, log::Format::logfmt));
  }
  std::string hget(const std::string& key, const std::string& field) {
    redis::Reply r = raw_->command({"HGET", key, field});
    return r.is_nil() ? std::string("<nil>") : std::string(r.str());
  }
  bool exists(const std::string& key) { return raw_->command({"EXISTS", key}).integer() == 1; }
  std::string get(const std::string& key) {
    redis::Reply r = raw_->command({"GET", key});
    return r.is_nil() ? std::string("<nil>") : std::string(r.str());
  }
  long long ttl(const std::string& key) { return raw_->command({"TTL", key}).integer(); }
  std::vector<std::string> lrange(const std::string& key) {
    redis::Reply r = raw_->command({"LRANGE", key, "0", "-1"});
    std::vector<std::string> out;
    for (size_t i = 0; i < r.size(); ++i) out.emplace_back(r[i].str());
    return out;
  }
  std::optional<long long> zscore(const std::string& key, const std::string& member) {
    redis::Reply r = raw_->command({"ZSCORE", key, member});
    if (r.is_nil()) return std::nullopt;
    return std::stoll(std::string(r.str()));
  }
  // True when some client of our DB is parked in BLMOVE (the shared redis has other users).
  bool blocked_in_blmove() {
    const std::string list(raw_->command({"CLIENT", "LIST"}).str());
    size_t start = 0;
    while (start < list.size()) {
      size_t end = list.find('\n', start);
      if (end == std::string::npos) end = list.size();
      const std::string_view line(list.data() + start, end - start);
      if (line.find(" db=" + std::to_string(kTestDb) + " ") != std::string_view::npos &&
          line.find("cmd=blmove") != std::string_view::npos)
        return true;
      start = end + 1;
    }
    return false;
  }
  static long long now_s() {
    return std::chrono::floor<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
  }

  std::string enqueue(const std::string& id, std::string queue = "default") {
    task::EnqueueRequest r;
    r.type = "email:send";
    r.payload = R"({"to":"a@example.com"})";
    r.task_id = id;
    r.queue = std::move(queue);
    return broker_->client().enqueue(r);
  }
  Dequeued dequeue_one(const std::string& queue = "default") {
    auto d = broker_->dequeue({queue}, 30s);
    if (!d) throw std::runtime_error("nothing dequeued");
    return std::move(*d);
  }

  std::unique_ptr<redis::Connection> raw_;
  std::unique_ptr<RedisBroker> broker_;
};

TEST_F(BrokerTest, EnqueueMinimalWritesAsynqDefaults) {
  const auto before_ns = Clock::now().time_since_epoch().count();
  enqueue("t1");
  EXPECT_EQ(hget("asynq:{default}:t:t1", "state"), "pending");
  EXPECT_GE(std::stoll(hget("asynq:{default}:t:t1", "pending_since")), before_ns);  // ns
  EXPECT_EQ(lrange("asynq:{default}:pending"), std::vector<std::string>{"t1"});
  EXPECT_EQ(raw_->command({"SISMEMBER", "asynq:queues", "default"}).integer(), 1);
  const auto m = asynq::decode_task_message(hget("asynq:{default}:t:t1", "msg"));
  EXPECT_EQ(m.retry, 25);
  EXPECT_EQ(m.timeout, 1800);
  EXPECT_EQ(m.deadline, 0);
  EXPECT_EQ(m.id, "t1");
  EXPECT_EQ(m.queue, "default");
}

TEST_F(BrokerTest, EnqueueWithEveryOptionDecodesBackIdentically) {
  task::EnqueueRequest r;
  r.type = "report:build";
  r.queue = "critical";
  r.payload = std::string("\x00\xff", 2);
  r.task_id = "custom-id";
  r.headers = {{"trace-id", "abc"}, {"tenant", "t1"}};
  r.max_retry = 3;
  r.timeout = 90s;
  r.deadline = Clock::time_point(std::chrono::seconds(1906545600));
  r.unique_ttl = 600s;
  r.retention = 3600s;
  EXPECT_EQ(broker_->client().enqueue(r), "custom-id");
  const auto m = asynq::decode_task_message(hget("asynq:{critical}:t:custom-id", "msg"));
  EXPECT_EQ(m.type, r.type);
  EXPECT_EQ(m.payload, r.payload);
  EXPECT_EQ(m.headers, r.headers);
  EXPECT_EQ(m.retry, 3);
  EXPECT_EQ(m.timeout, 90);
  EXPECT_EQ(m.deadline, 1906545600);
  EXPECT_EQ(m.retention, 3600);
  const std::string lock = "asynq:{critical}:unique:report:build:" + digest::md5_hex(r.payload);
  EXPECT_EQ(m.unique_key, lock);
  EXPECT_EQ(hget("asynq:{critical}:t:custom-id", "unique_key"), lock);
  EXPECT_EQ(get(lock), "custom-id");
  EXPECT_EQ(ttl(lock), 600);

  // The same unique task again: duplicate. Same id, no unique: conflict.
  r.task_id = "other-id";
  EXPECT_THROW(broker_->client().enqueue(r), DuplicateTask);
  r.unique_ttl.reset();
  r.task_id = "custom-id";
  EXPECT_THROW(broker_->client().enqueue(r), TaskIdConflict);
  // Deadline without timeout leaves timeout 0.
  task::EnqueueRequest d;
  d.type = "x";
  d.deadline = Clock::now() + 1h;
  const auto id = broker_->client().enqueue(d);
  EXPECT_EQ(asynq::decode_task_message(hget("asynq:{default}:t:" + id, "msg")).timeout, 0);
}

TEST_F(BrokerTest, ScheduleGoesToScheduledAndForwarderMovesItWithPendingSince) {
  task::EnqueueRequest r;
  r.type = "later";
  r.task_id = "s1";
  r.process_at = Clock::now() + 1h;
  broker_->client().enqueue(r);
  EXPECT_EQ(hget("asynq:{default}:t:s1", "state"), "scheduled");
  EXPECT_EQ(hget("asynq:{default}:t:s1", "pending_since"), "<nil>");
  EXPECT_EQ(zscore("asynq:{default}:scheduled", "s1"),
            std::chrono::floor<std::chrono::seconds>(r.process_at->time_since_epoch()).count());
  EXPECT_EQ(broker_->forward("default"), 0);
  raw_->command({"ZADD", "asynq:{default}:scheduled", "XX", std::to_string(now_s() - 1), "s1"});
  EXPECT_EQ(broker_->forward("default"), 1);
  EXPECT_EQ(hget("asynq:{default}:t:s1", "state"), "pending");
  EXPECT_GT(std::stoll(hget("asynq:{default}:t:s1", "pending_since")), now_s() * 1000000000LL - 5000000000LL);
  EXPECT_EQ(lrange("asynq:{default}:pending"), std::vector<std::string>{"s1"});
}

TEST_F(BrokerTest, ForwarderMovesDueRetriesToPendingWithPendingSince) {
  enqueue("fr1");
  enqueue("fr2");
  broker_->retry(dequeue_one().msg, Clock::now() - 2s, "due", true);
  broker_->retry(dequeue_one().msg, Clock::now() + 1h, "not yet", true);
  const long long before_ns = now_s() * 1000000000LL;
  EXPECT_EQ(broker_->forward("default"), 1);
  EXPECT_EQ(lrange("asynq:{default}:pending"), std::vector<std::string>{"fr1"});
  EXPECT_EQ(hget("asynq:{default}:t:fr1", "state"), "pending");
  EXPECT_GE(std::stoll(hget("asynq:{default}:t:fr1", "pending_since")), before_ns);
  EXPECT_FALSE(zscore("asynq:{default}:retry", "fr1"));
  EXPECT_TRUE(zscore("asynq:{default}:retry", "fr2"));
  EXPECT_EQ(hget("asynq:{default}:t:fr2", "state"), "retry");
  EXPECT_EQ(asynq::decode_task_message(hget("asynq:{default}:t:fr1", "msg")).retried, 1);
}

TEST_F(BrokerTest, DequeueMovesToActiveWithLeaseAndSkipsPausedQueues) {
  enqueue("a1");
  enqueue("a2");
  raw_->command({"SET", "asynq:{default}:paused", "1"});
  EXPECT_FALSE(broker_->dequeue({"default"}, 30s));
  raw_->command({"DEL", "asynq:{default}:paused"});
  const auto d = dequeue_one();
  EXPECT_EQ(d.msg.id, "a1");  // FIFO: first enqueued first
  EXPECT_EQ(hget("asynq:{default}:t:a1", "state"), "active");
  EXPECT_EQ(hget("asynq:{default}:t:a1", "pending_since"), "<nil>");
  EXPECT_EQ(lrange("asynq:{default}:active"), std::vector<std::string>{"a1"});
  EXPECT_EQ(zscore("asynq:{default}:lease", "a1"),
            std::chrono::ceil<std::chrono::seconds>(d.lease_expiry.time_since_epoch()).count());
  const auto batch = broker_->dequeue_batch({"empty", "default"}, 30s, 5);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].msg.id, "a2");
}

// One dequeue call asks the queues in their order (docs/queue-engine.md "Dequeue"): it takes from
// the first that is not paused and has tasks, and from that one only.
TEST_F(BrokerTest, ADequeueTakesFromTheFirstQueueInOrderThatIsNotPausedAndHasTasks) {
  enqueue("h1", "high");
  enqueue("m1", "mid");
  enqueue("m2", "mid");
  enqueue("l1", "low");
  raw_->command({"SET", "asynq:{high}:paused", "1"});
  const auto batch = broker_->dequeue_batch({"empty", "high", "mid", "low"}, 30s, 5);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].msg.id, "m1");
  EXPECT_EQ(batch[1].msg.id, "m2");
  EXPECT_EQ(lrange("asynq:{low}:pending"), std::vector<std::string>{"l1"});
  EXPECT_EQ(lrange("asynq:{high}:pending"), std::vector<std::string>{"h1"});
  EXPECT_EQ(lrange("asynq:{mid}:active"), (std::vector<std::string>{"m2", "m1"}));
  // In the order given: low before mid now finds low's task.
  enqueue("m3", "mid");
  const auto next = broker_->dequeue_batch({"low", "mid"}, 30s, 5);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].msg.id, "l1");
  EXPECT_TRUE(broker_->dequeue_batch({"empty", "high"}, 30s, 5).empty());
}

TEST_F(BrokerTest, DoneDeletesTaskCountsAndReleasesOwnUniqueLock) {
  task::EnqueueRequest r;
  r.type = "u";
  r.task_id = "d1";
  r.unique_ttl = 1h;
  broker_->client().enqueue(r);
  const auto d = dequeue_one();
  broker_->done(d.msg, {});
  EXPECT_FALSE(exists("asynq:{default}:t:d1"));
  EXPECT_FALSE(exists(d.msg.unique_key));
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
  EXPECT_FALSE(zscore("asynq:{default}:lease", "d1"));
  const std::string daily = asynq::processed_key("default", asynq::utc_date(now_s()));
  EXPECT_EQ(get(daily), "1");
  EXPECT_GT(ttl(daily), 90LL * 86400 - 10);
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_FALSE(exists("asynq:{default}:failed"));
  // A second completion of the same task: NOT FOUND.
  EXPECT_THROW(broker_->done(d.msg, {}), NotFound);
}

TEST_F(BrokerTest, ProcessedTotalWrapsAtMaxInt64) {
  enqueue("w1");
  raw_->command({"SET", "asynq:{default}:processed", "9223372036854775807"});
  broker_->done(dequeue_one().msg, {});
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
}

TEST_F(BrokerTest, RetryKeepsHeadersAndUnknownFieldsAndCountsFailure) {
  enqueue("r1");
  // Rewrite the stored message with headers and an unknown field (a newer producer).
  auto m = asynq::decode_task_message(hget("asynq:{default}:t:r1", "msg"));
  m.headers = {{"trace-id", "0af7"}};
  m.unknown = std::string("\x80\x01\x2a", 3);
  raw_->command({"HSET", "asynq:{default}:t:r1", "msg", asynq::encode(m)});
  const auto d = dequeue_one();
  const auto at = Clock::now() + 40s;
  broker_->retry(d.msg, at, "smtp: 451 \xff", true);
  EXPECT_EQ(hget("asynq:{default}:t:r1", "state"), "retry");
  EXPECT_EQ(zscore("asynq:{default}:retry", "r1"),
            std::chrono::floor<std::chrono::seconds>(at.time_since_epoch()).count());
  const auto back = asynq::decode_task_message(hget("asynq:{default}:t:r1", "msg"));
  EXPECT_EQ(back.retried, 1);
  EXPECT_EQ(back.error_msg, "smtp: 451 \xef\xbf\xbd");
  EXPECT_NEAR(back.last_failed_at, now_s(), 2);
  EXPECT_EQ(back.headers, m.headers);
  EXPECT_EQ(back.unknown, m.unknown);
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_GT(ttl(asynq::failed_key("default", asynq::utc_date(now_s()))), 90LL * 86400 - 10);
  EXPECT_FALSE(zscore("asynq:{default}:lease", "r1"));
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
}

TEST_F(BrokerTest, RetryWithoutFailureDoesNotCount) {
  enqueue("r2");
  broker_->retry(dequeue_one().msg, Clock::now() + 10s, "later", false);
  EXPECT_EQ(asynq::decode_task_message(hget("asynq:{default}:t:r2", "msg")).retried, 0);
  EXPECT_FALSE(exists("asynq:{default}:processed"));
  EXPECT_FALSE(exists("asynq:{default}:failed"));
}

TEST_F(BrokerTest, ArchiveKeepsRetriedAndTrimsOldEntriesWithTheirHashes) {
  raw_->command({"ZADD", "asynq:{default}:archived", std::to_string(now_s() - 91 * 86400), "old"});
  raw_->command({"HSET", "asynq:{default}:t:old", "state", "archived"});
  enqueue("x1");
  auto m = asynq::decode_task_message(hget("asynq:{default}:t:x1", "msg"));
  m.headers = {{"h", "v"}};
  m.unknown = std::string("\x80\x01\x07", 3);
  raw_->command({"HSET", "asynq:{default}:t:x1", "msg", asynq::encode(m)});
  broker_->archive(dequeue_one().msg, "invalid payload: skip retry for the task");
  EXPECT_EQ(hget("asynq:{default}:t:x1", "state"), "archived");
  EXPECT_NEAR(*zscore("asynq:{default}:archived", "x1"), now_s(), 2);
  EXPECT_FALSE(zscore("asynq:{default}:archived", "old"));
  EXPECT_FALSE(exists("asynq:{default}:t:old"));
  const auto back = asynq::decode_task_message(hget("asynq:{default}:t:x1", "msg"));
  EXPECT_EQ(back.retried, 0);
  EXPECT_EQ(back.error_msg, "invalid payload: skip retry for the task");
  EXPECT_EQ(back.headers, m.headers);
  EXPECT_EQ(back.unknown, m.unknown);
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
}

TEST_F(BrokerTest, RequeuePutsTaskAtTheTailWithoutPendingSince) {
  enqueue("q1");
  enqueue("q2");
  const auto d = dequeue_one();
  broker_->requeue(d.msg);
  EXPECT_EQ(lrange("asynq:{default}:pending"), (std::vector<std::string>{"q2", "q1"}));
  EXPECT_EQ(hget("asynq:{default}:t:q1", "state"), "pending");
  EXPECT_EQ(hget("asynq:{default}:t:q1", "pending_since"), "<nil>");
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
  EXPECT_FALSE(zscore("asynq:{default}:lease", "q1"));
  EXPECT_FALSE(exists("asynq:{default}:processed"));  // a requeue is not an attempt
  EXPECT_EQ(dequeue_one().msg.id, "q1");
}

TEST_F(BrokerTest, MarkCompletePublishesFollowUpsAtomically) {
  task::EnqueueRequest r;
  r.type = "c";
  r.task_id = "c1";
  r.retention = 1h;
  r.unique_ttl = 1h;
  broker_->client().enqueue(r);
  const auto d = dequeue_one();
  broker_->write_result("default", "c1", std::string("ok\x00\xff", 4));
  task::EnqueueRequest follow;
  follow.type = "next";
  follow.queue = "planning";
  follow.task_id = "f1";
  broker_->mark_complete(d.msg, {follow});
  EXPECT_EQ(hget("asynq:{default}:t:c1", "state"), "completed");
  EXPECT_EQ(hget("asynq:{default}:t:c1", "result"), std::string("ok\x00\xff", 4));
  const auto back = asynq::decode_task_message(hget("asynq:{default}:t:c1", "msg"));
  EXPECT_NEAR(back.completed_at, now_s(), 2);
  EXPECT_EQ(zscore("asynq:{default}:completed", "c1"), back.completed_at + 3600);
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
  EXPECT_FALSE(zscore("asynq:{default}:lease", "c1"));
  EXPECT_FALSE(exists(d.msg.unique_key));  // its own lock, released on success
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_EQ(get(asynq::processed_key("default", asynq::utc_date(now_s()))), "1");
  EXPECT_FALSE(exists("asynq:{default}:failed"));
  EXPECT_EQ(hget("asynq:{planning}:t:f1", "state"), "pending");
  EXPECT_EQ(raw_->command({"SISMEMBER", "asynq:queues", "planning"}).integer(), 1);
  // A completion of a task that moved away publishes nothing.
  follow.task_id = "f2";
  EXPECT_THROW(broker_->done(d.msg, {follow}), NotFound);
  EXPECT_FALSE(exists("asynq:{planning}:t:f2"));
  // Janitor: expire it and delete.
  raw_->command({"ZADD", "asynq:{default}:completed", "XX", std::to_string(now_s() - 1), "c1"});
  EXPECT_EQ(broker_->delete_expired_completed("default", 100), 1);
  EXPECT_FALSE(exists("asynq:{default}:t:c1"));
}

TEST_F(BrokerTest, LeaseExtensionAndExpiredListing) {
  enqueue("l1");
  enqueue("l2");
  dequeue_one();
  dequeue_one();
  raw_->command({"ZADD", "asynq:{default}:lease", "XX", std::to_string(now_s() - 120), "l1"});
  raw_->command({"HDEL", "asynq:{default}:t:l2", "msg"});
  raw_->command({"ZADD", "asynq:{default}:lease", "XX", std::to_string(now_s() - 120), "l2"});
  const auto expired = broker_->list_lease_expired({"default"}, Clock::now() - 30s);
  ASSERT_EQ(expired.size(), 1u);  // l2 has no msg: skipped
  EXPECT_EQ(expired[0].id, "l1");
  const auto expiry = broker_->extend_leases("default", {"l1", "gone"}, 30s);
  EXPECT_EQ(zscore("asynq:{default}:lease", "l1"),
            std::chrono::ceil<std::chrono::seconds>(expiry.time_since_epoch()).count());
  EXPECT_FALSE(zscore("asynq:{default}:lease", "gone"));  // XX: never added
  raw_->command({"ZREM", "asynq:{default}:lease", "l1"});
  const auto leaseless = broker_->list_active_without_lease("default");
  ASSERT_EQ(leaseless.size(), 1u);
  EXPECT_EQ(leaseless[0].id, "l1");
}

// asynq #1144: an id in active with no lease entry (a worker died between steps).
TEST_F(BrokerTest, RecoverOrphanRetriesOnlyAnActiveTaskWithoutLease) {
  enqueue("o1");
  enqueue("o2");
  const auto o1 = dequeue_one();
  const auto o2 = dequeue_one();
  raw_->command({"ZREM", "asynq:{default}:lease", "o1"});  // o1: orphan; o2: normally leased

  // A leased task is never touched: nothing written, still active with its lease.
  EXPECT_EQ(broker_->recover_orphan(o2.msg, Clock::now() + 30s, "asynq: task lease expired"),
            OrphanRecovery::leased);
  EXPECT_EQ(hget("asynq:{default}:t:o2", "state"), "active");
  EXPECT_TRUE(zscore("asynq:{default}:lease", "o2"));
  EXPECT_EQ(lrange("asynq:{default}:active"), (std::vector<std::string>{"o2", "o1"}));

  const auto at = Clock::now() + 40s;
  EXPECT_EQ(broker_->recover_orphan(o1.msg, at, "asynq: task lease expired"), OrphanRecovery::recovered);
  EXPECT_EQ(lrange("asynq:{default}:active"), std::vector<std::string>{"o2"});
  EXPECT_EQ(hget("asynq:{default}:t:o1", "state"), "retry");
  EXPECT_EQ(zscore("asynq:{default}:retry", "o1"),
            std::chrono::floor<std::chrono::seconds>(at.time_since_epoch()).count());
  const auto back = asynq::decode_task_message(hget("asynq:{default}:t:o1", "msg"));
  EXPECT_EQ(back.retried, 1);
  EXPECT_EQ(back.error_msg, "asynq: task lease expired");
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  // Once moved it is no longer active: a second call writes nothing.
  EXPECT_EQ(broker_->recover_orphan(o1.msg, at, "asynq: task lease expired"), OrphanRecovery::not_active);
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  EXPECT_EQ(hget("asynq:{default}:t:o1", "state"), "retry");
}

TEST_F(BrokerTest, RecoverOrphanArchivesWhenNoRetryTimeIsGiven) {
  enqueue("o3");
  const auto d = dequeue_one();
  raw_->command({"ZREM", "asynq:{default}:lease", "o3"});
  EXPECT_EQ(broker_->recover_orphan(d.msg, std::nullopt, "asynq: task lease expired"),
            OrphanRecovery::recovered);
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
  EXPECT_EQ(hget("asynq:{default}:t:o3", "state"), "archived");
  EXPECT_TRUE(zscore("asynq:{default}:archived", "o3"));
  const auto back = asynq::decode_task_message(hget("asynq:{default}:t:o3", "msg"));
  EXPECT_EQ(back.retried, 0);
  EXPECT_EQ(back.error_msg, "asynq: task lease expired");
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
}

// Calls from many threads at once keep their per-call results.
TEST_F(BrokerTest, ConcurrentCompletionsKeepTheirOwnResults) {
  constexpr int kTasks = 200;
  for (int i = 0; i < kTasks; ++i) enqueue("p" + std::to_string(i));
  std::vector<Dequeued> taken;
  while (taken.size() < kTasks) {
    auto batch = broker_->dequeue_batch({"default"}, 30s, 16);
    ASSERT_FALSE(batch.empty());
    for (auto& d : batch) taken.push_back(std::move(d));
  }
  EXPECT_EQ(raw_->command({"ZCARD", "asynq:{default}:lease"}).integer(), kTasks);
  // Half are already gone (their done must answer NOT FOUND), the rest must be done.
  for (int i = 0; i < kTasks; i += 2) raw_->command({"LREM", "asynq:{default}:active", "0", taken[i].msg.id});
  std::atomic<int> ok{0}, not_found{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kTasks; i += 8) {
        try {
          broker_->done(taken[i].msg, {});
          ok += (i % 2 == 1) ? 1 : 1000;
        } catch (const NotFound&) {
          not_found += (i % 2 == 0) ? 1 : 1000;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kTasks / 2);
  EXPECT_EQ(not_found.load(), kTasks / 2);
  EXPECT_EQ(get("asynq:{default}:processed"), std::to_string(kTasks / 2));
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
}

// The processor's round trip: the successes of a queue complete in one done call, each with its
// own answer (NOT FOUND for a task that moved), beside a retry, then a dequeue, all at once.
TEST_F(BrokerTest, ExchangeWritesEachOutcomeWithItsOwnAnswerThenDequeues) {
  for (int i = 0; i < 6; ++i) enqueue("x" + std::to_string(i));
  std::vector<Dequeued> taken = broker_->dequeue_batch({"default"}, 30s, 5);
  ASSERT_EQ(taken.size(), 5U);
  // x1 and x3 moved under us (as the recoverer would have moved them).
  raw_->command({"LREM", "asynq:{default}:active", "0", taken[1].msg.id});
  raw_->command({"LREM", "asynq:{default}:active", "0", taken[3].msg.id});
  std::vector<OutcomeWrite> writes(5);
  for (size_t i = 0; i < 4; ++i) {
    writes[i].op = OutcomeWrite::Op::done;
    writes[i].msg = &taken[i].msg;
  }
  writes[4].op = OutcomeWrite::Op::retry;
  writes[4].msg = &taken[4].msg;
  writes[4].retry_at = Clock::now() + 60s;
  writes[4].error = "boom";
  std::vector<std::exception_ptr> errors(writes.size());
  std::vector<Dequeued> got;
  broker_->exchange(writes, errors, {"default"}, 30s, 3, got);
  const auto not_found = [](const std::exception_ptr& e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const NotFound&) {
      return true;
    } catch (...) {
    }
    return false;
  };
  EXPECT_FALSE(errors[0]);
  EXPECT_TRUE(not_found(errors[1]));
  EXPECT_FALSE(errors[2]);
  EXPECT_TRUE(not_found(errors[3]));
  EXPECT_FALSE(errors[4]);
  EXPECT_FALSE(exists(asynq::task_key("default", taken[0].msg.id)));
  EXPECT_FALSE(exists(asynq::task_key("default", taken[2].msg.id)));
  EXPECT_EQ(get("asynq:{default}:processed"), "3");  // two successes and the retry
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  EXPECT_EQ(hget(asynq::task_key("default", taken[4].msg.id), "state"), "retry");
  ASSERT_EQ(got.size(), 1U);  // the sixth task, the only one left
  EXPECT_EQ(got[0].msg.id, "x5");
}

TEST_F(BrokerTest, ServerStateIsWrittenAndCleared) {
  asynq::ServerInfo info;
  info.host = "h";
  info.pid = 42;
  info.server_id = "sid";
  info.concurrency = 2;
  info.queues = {{"default", 1}};
  info.status = "active";
  info.start_time = asynq::Timestamp{now_s(), 5};
  asynq::WorkerInfo w;
  w.host = "h";
  w.pid = 42;
  w.server_id = "sid";
  w.task_id = "t9";
  w.task_type = "x";
  w.queue = "default";
  w.start_time = info.start_time;
  const int64_t before = now_s();
  broker_->write_server_state(info, {w}, 10s);
  const std::string sk = "asynq:servers:{h:42:sid}", wk = "asynq:workers:{h:42:sid}";
  EXPECT_EQ(asynq::decode_server_info(get(sk)), info);
  EXPECT_LE(ttl(sk), 10);
  EXPECT_GT(ttl(wk), 0);
  // A second may tick over between the write and this read.
  EXPECT_GE(zscore("asynq:servers", sk), before + 10);
  EXPECT_LE(zscore("asynq:servers", sk), now_s() + 10);
  EXPECT_GE(zscore("asynq:workers", wk), before + 10);
  EXPECT_LE(zscore("asynq:workers", wk), now_s() + 10);
  EXPECT_EQ(asynq::decode_worker_info(hget(wk, "t9")), w);
  broker_->clear_server_state("h", 42, "sid");
  EXPECT_FALSE(exists(sk));
  EXPECT_FALSE(exists(wk));
  EXPECT_FALSE(zscore("asynq:servers", sk));
  EXPECT_FALSE(zscore("asynq:workers", wk));
}

TEST_F(BrokerTest, WaitForWorkWakesOnEnqueueAndOnWakeButNotOnPausedQueue) {
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = broker_->wait_for_work({"default", "other"}, 5s, 0); });
  // The waiter parks in BLMOVE; an enqueue to one of its queues must wake it well before 5 s.
  ASSERT_TRUE(test::eventually([&] { return blocked_in_blmove(); }));
  enqueue("w1", "other");
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(lrange("asynq:{other}:pending"), std::vector<std::string>{"w1"});  // not consumed

  raw_->command({"SET", "asynq:{other}:paused", "1"});
  const auto start = Clock::now();
  EXPECT_FALSE(broker_->wait_for_work({"other"}, 300ms, 0));  // paused: no busy return
  EXPECT_GE(Clock::now() - start, 250ms);

  std::thread sleeper([&] { got = broker_->wait_for_work({"default"}, 10s, 0); });
  ASSERT_TRUE(test::eventually([&] { return blocked_in_blmove(); }));
  broker_->wake(0);
  sleeper.join();
  EXPECT_FALSE(got);
}

// Loops sharing a broker wait as wakers of their own: a wake meant for one ends its wait only,
// and a wake for a loop that is not waiting yet ends its next wait.
TEST_F(BrokerTest, AWakeEndsTheWaitOfItsOwnWakerOnly) {
  std::atomic<int> returned{0};
  std::thread one([&] {
    EXPECT_FALSE(broker_->wait_for_work({"default"}, 60s, 1));
    returned = 1;
  });
  std::thread two([&] {
    EXPECT_FALSE(broker_->wait_for_work({"default"}, 60s, 2));
    returned = 2;
  });
  ASSERT_TRUE(test::eventually([&] { return blocked_in_blmove(); }));
  broker_->wake(2);
  two.join();
  EXPECT_EQ(returned.load(), 2) << "waker 1 must still wait";
  broker_->wake(1);
  one.join();
  EXPECT_EQ(returned.load(), 1);

  broker_->wake(3);  // nobody waits as 3 yet: its next wait returns at once
  const auto start = Clock::now();
  EXPECT_FALSE(broker_->wait_for_work({"default"}, 60s, 3));
  EXPECT_LT(Clock::now() - start, 30s);
}

TEST_F(BrokerTest, PingAnswers) { EXPECT_TRUE(broker_->ping()); }

TEST_F(BrokerTest, ProbesSeeDueMembersEarliestLeasesAndActiveTasks) {
  const auto now = Clock::now();
  const auto secs = [](Clock::time_point t) {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
  };
  raw_->command({"ZADD", "asynq:{default}:scheduled", secs(now - 5s), "due"});
  raw_->command({"ZADD", "asynq:{default}:retry", secs(now + 60s), "later"});
  EXPECT_EQ(broker_->any_due(
                {"asynq:{default}:scheduled", "asynq:{default}:retry", "asynq:{default}:completed"}, now),
            (std::vector<bool>{true, false, false}));

  enqueue("p1");
  enqueue("p2", "other");
  auto taken = broker_->dequeue({"default"}, 30s);
  ASSERT_TRUE(taken.has_value());
  const auto probes = broker_->probe_leases({"default", "other"});
  ASSERT_EQ(probes.size(), 2u);
  ASSERT_TRUE(probes[0].earliest_expiry.has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*probes[0].earliest_expiry - now).count(), 30.0, 2.0);
  EXPECT_EQ(probes[0].active, 1);
  EXPECT_FALSE(probes[1].earliest_expiry.has_value());
  EXPECT_EQ(probes[1].active, 0);
}

TEST_F(BrokerTest, ServerInfoIsReadByKeyAndNoneWhenGoneOrUndecodable) {
  asynq::ServerInfo info;
  info.host = "h";
  info.pid = 9;
  info.server_id = "sid";
  info.queues = {{"a", 2}, {"b", 1}};
  raw_->command({"SET", "asynq:servers:{h:9:sid}", asynq::encode(info)});
  raw_->command({"SET", "asynq:servers:{bad}", std::string("\xff\xff", 2)});
  const auto read = broker_->server_info("asynq:servers:{h:9:sid}");
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->queues, info.queues);
  EXPECT_FALSE(broker_->server_info("asynq:servers:{gone}").has_value());
  EXPECT_FALSE(broker_->server_info("asynq:servers:{bad}").has_value());
}

TEST_F(BrokerTest, LiveServersAreTheUnexpiredOnesSorted) {
  const auto in = [](std::chrono::seconds d) {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>((Clock::now() + d).time_since_epoch()).count());
  };
  raw_->command({"ZADD", "asynq:servers", in(10s), "asynq:servers:{b:2:y}"});
  raw_->command({"ZADD", "asynq:servers", in(10s), "asynq:servers:{a:1:x}"});
  raw_->command({"ZADD", "asynq:servers", in(-10s), "asynq:servers:{c:3:gone}"});
  EXPECT_EQ(broker_->live_servers(),
            (std::vector<std::string>{"asynq:servers:{a:1:x}", "asynq:servers:{b:2:y}"}));
}

TEST_F(BrokerTest, RetryAndArchiveResetBothTotalsWhenProcessedWraps) {
  enqueue("m1");
  enqueue("m2");
  raw_->command({"SET", "asynq:{default}:processed", "9223372036854775807"});
  raw_->command({"SET", "asynq:{default}:failed", "41"});
  broker_->retry(dequeue_one().msg, Clock::now() + 10s, "boom", true);
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  raw_->command({"SET", "asynq:{default}:processed", "9223372036854775807"});
  broker_->archive(dequeue_one().msg, "boom");
  EXPECT_EQ(get("asynq:{default}:processed"), "1");
  EXPECT_EQ(get("asynq:{default}:failed"), "1");
  EXPECT_EQ(get(asynq::failed_key("default", asynq::utc_date(now_s()))), "2");
}

TEST_F(BrokerTest, ArchiveKeepsAtMost9999EntriesDroppingTheOldestWithTheirHashes) {
  // 10 000 archived already (scores 1..10000 s after a recent base): the archive trims to 9 999.
  const long long base = now_s() - 86400;
  for (int chunk = 0; chunk < 10; ++chunk) {
    std::vector<std::string> args{"ZADD", "asynq:{default}:archived"};
    for (int i = chunk * 1000; i < (chunk + 1) * 1000; ++i) {
      args.push_back(std::to_string(base + i));
      args.push_back("z" + std::to_string(i));
    }
    std::vector<std::string_view> argv(args.begin(), args.end());
    raw_->command(redis::Argv(argv));
  }
  raw_->command({"HSET", "asynq:{default}:t:z0", "state", "archived"});
  raw_->command({"HSET", "asynq:{default}:t:z1", "state", "archived"});
  enqueue("newest");
  broker_->archive(dequeue_one().msg, "boom");
  EXPECT_EQ(raw_->command({"ZCARD", "asynq:{default}:archived"}).integer(), 9999);
  EXPECT_FALSE(zscore("asynq:{default}:archived", "z0"));
  EXPECT_FALSE(zscore("asynq:{default}:archived", "z1"));
  EXPECT_FALSE(exists("asynq:{default}:t:z0"));
  EXPECT_FALSE(exists("asynq:{default}:t:z1"));
  EXPECT_TRUE(zscore("asynq:{default}:archived", "z2"));
  EXPECT_TRUE(zscore("asynq:{default}:archived", "newest"));
}

// More than the archive's size archived within one second: the new entry is the oldest and is
// trimmed at once; its hash goes with it, so no hash is left that no set lists.
TEST_F(BrokerTest, ATaskTrimmedByItsOwnArchiveLeavesNoHash) {
  const long long later = now_s() + 100;
  for (int chunk = 0; chunk < 10; ++chunk) {
    std::vector<std::string> args{"ZADD", "asynq:{default}:archived"};
    for (int i = chunk * 1000; i < (chunk + 1) * 1000; ++i) {
      args.push_back(std::to_string(later));
      args.push_back("z" + std::to_string(i));
    }
    std::vector<std::string_view> argv(args.begin(), args.end());
    raw_->command(redis::Argv(argv));
  }
  enqueue("trimmed-at-once");
  broker_->archive(dequeue_one().msg, "boom");
  EXPECT_EQ(raw_->command({"ZCARD", "asynq:{default}:archived"}).integer(), 9999);
  EXPECT_FALSE(zscore("asynq:{default}:archived", "trimmed-at-once"));
  EXPECT_FALSE(exists("asynq:{default}:t:trimmed-at-once")) << "a hash no set lists";
  EXPECT_TRUE(lrange("asynq:{default}:active").empty());
}

TEST_F(BrokerTest, ScheduledUniqueLockLastsUntilProcessAtPlusTtlAndSuccessKeepsAForeignLock) {
  task::EnqueueRequest r;
  r.type = "later:unique";
  r.task_id = "su1";
  r.process_at = Clock::now() + 1h;
  r.unique_ttl = 10min;
  broker_->client().enqueue(r);
  const std::string lock = asynq::unique_key("default", r.type, digest::md5_hex(""));
  EXPECT_EQ(get(lock), "su1");
  EXPECT_EQ(ttl(lock), 4199);  // floor(process_at + ttl - now), protocol §13.3

  // A lock that another task holds now (this one's expired and was retaken) survives success.
  task::EnqueueRequest u;
  u.type = "now:unique";
  u.task_id = "su2";
  u.unique_ttl = 1h;
  broker_->client().enqueue(u);
  const auto d = dequeue_one();
  raw_->command({"SET", d.msg.unique_key, "someone-else"});
  broker_->done(d.msg, {});
  EXPECT_EQ(get(d.msg.unique_key), "someone-else");
}

TEST_F(BrokerTest, HugeRetentionSaturatesInsteadOfWrappingIntoThePast) {
  task::EnqueueRequest r;
  r.type = "keep:forever";
  r.task_id = "k1";
  r.retention = std::chrono::seconds(std::numeric_limits<int64_t>::max());
  broker_->client().enqueue(r);
  broker_->mark_complete(dequeue_one().msg, {});
  const std::string score(raw_->command({"ZSCORE", "asynq:{default}:completed", "k1"}).str());
  EXPECT_GT(std::stod(score), 1e18) << score;
  EXPECT_EQ(broker_->delete_expired_completed("default", 100), 0);
  EXPECT_TRUE(exists("asynq:{default}:t:k1"));
}

// A fake Redis on one connection: the first command's answer (:1) is held back long enough for two
// more callers to queue up behind it; the pipeline they then send together gets one NOSCRIPT and
// the connection closes. The NOSCRIPT call must fail like the other one, not return an empty reply.
TEST(BrokerPipelineTest, NoscriptThenConnectionLossFailsEveryCallOfTheBatch) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::thread server([listener] {
    const int c = ::accept(listener, nullptr, nullptr);
    ::close(listener);  // any reconnect is refused at once
    if (c < 0) return;
    char buf[4096];
    auto say = [&](std::string_view s) {
      return ::write(c, s.data(), s.size()) == static_cast<ssize_t>(s.size());
    };
    if (::read(c, buf, sizeof buf) > 0) {
      std::this_thread::sleep_for(400ms);
      if (say(":1\r\n") && ::read(c, buf, sizeof buf) > 0)
        say("-NOSCRIPT No matching script. Please use EVAL.\r\n");
    }
    ::shutdown(c, SHUT_WR);  // EOF after the NOSCRIPT, without discarding it
    while (::read(c, buf, sizeof buf) > 0) {
    }
    ::close(c);
  });
  redis::Settings settings;
  settings.port = ntohs(addr.sin_port);
  RedisBroker broker(RedisBrokerSettings{.redis = settings, .pool_size = 1},
                     log::Logger::in_memory(log::Level::debug, log::Format::logfmt));
  std::atomic<int> answered{0};
  std::atomic<int> failed{0};
  auto dequeue = [&] {
    try {
      broker.dequeue({"q"}, 30s);
      ++answered;
    } catch (const redis::Error&) {
      ++failed;
    }
  };
  std::thread first(dequeue);
  std::this_thread::sleep_for(100ms);  // its round trip is in flight: the next two form one batch
  std::thread second(dequeue);
  std::thread third(dequeue);
  first.join();
  second.join();
  third.join();
  server.join();
  EXPECT_EQ(answered.load(), 1);
  EXPECT_EQ(failed.load(), 2);
}

}  // namespace
}  // namespace wk::queue
