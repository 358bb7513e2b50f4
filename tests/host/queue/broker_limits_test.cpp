// Flow control's keys in Redis (broker_limits.cpp; docs/queue-engine.md, "Flow control"): fleet
// permits with leases, the rate bucket and type pauses, against the test Redis.
#include <gtest/gtest.h>

#include "queue/broker_redis.hpp"
#include "support/redis_env.hpp"
#include "support/test_env.hpp"

namespace wk::queue {
namespace {

using namespace std::chrono_literals;
constexpr int kTestDb = 12;  // owned by these tests

class BrokerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    raw_ = std::make_unique<redis::Connection>(test::test_redis_settings(kTestDb));
    raw_->command({"FLUSHDB"});
    broker_ = std::make_unique<RedisBroker>(
        RedisBrokerSettings{.redis = test::test_redis_settings(kTestDb), .pool_size = 2},
        log::Logger::in_memory(log::Level::debug, log::Format::logfmt));
  }
  static task::TypeLimit limit(const std::string& text) { return task::parse_type_limits(text).front(); }

  std::unique_ptr<redis::Connection> raw_;
  std::unique_ptr<RedisBroker> broker_;
};

TEST_F(BrokerLimitsTest, FleetPermitsAreCountedGivenBackAndTakenAgain) {
  const auto l = limit("ai:* fleet=2");
  EXPECT_TRUE(broker_->acquire_permit(l, "s:a", 30s).granted);
  EXPECT_TRUE(broker_->acquire_permit(l, "s:b", 30s).granted);
  const PermitGrant third = broker_->acquire_permit(l, "s:c", 30s);
  EXPECT_FALSE(third.granted);
  EXPECT_STREQ(third.reason, "fleet");
  EXPECT_GT(third.retry_in, 0ms);
  EXPECT_LE(third.retry_in, 30s);
  // A permit already held is held, not counted twice.
  EXPECT_TRUE(broker_->acquire_permit(l, "s:b", 30s).granted);
  EXPECT_EQ(read_fleet_limit_state(*raw_, l).permits_held, 2);
  broker_->release_permit(l, "s:a");
  EXPECT_EQ(read_fleet_limit_state(*raw_, l).permits_held, 1);
  EXPECT_TRUE(broker_->acquire_permit(l, "s:c", 30s).granted);
  EXPECT_EQ(raw_->command({"ZCARD", "wk:limits:{ai:*}:permits"}).integer(), 2);
}

TEST_F(BrokerLimitsTest, APermitNotExtendedIsFreeOnceItsLeaseRunsOut) {
  const auto l = limit("git:clone fleet=1");
  ASSERT_TRUE(broker_->acquire_permit(l, "dead:1", 300ms).granted);
  ASSERT_TRUE(broker_->acquire_permit(l, "live:1", 300ms).granted == false);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(test::eventually([&] { return broker_->acquire_permit(l, "live:1", 30s).granted; }, 5s, 10ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms) << "freed before its lease ran out";
}

TEST_F(BrokerLimitsTest, ExtendingMovesTheLeaseOfHeldPermitsOnly) {
  const auto l = limit("x fleet=3");
  ASSERT_TRUE(broker_->acquire_permit(l, "s:held", 500ms).granted);
  broker_->extend_permits(l, {"s:held", "s:given-back"}, 60s);
  const auto score = [&](const char* member) {
    const redis::Reply r = raw_->command({"ZSCORE", "wk:limits:{x}:permits", member});
    return r.is_nil() ? -1.0 : std::stod(std::string(r.str()));
  };
  const auto time = raw_->command({"TIME"});
  const double now_ms = std::stod(std::string(time[0].str())) * 1000;
  EXPECT_GT(score("s:held"), now_ms + 50000);
  EXPECT_EQ(score("s:given-back"), -1.0) << "a permit given back must not come back";
}

TEST_F(BrokerLimitsTest, TheRateBucketGrantsTheBurstThenOneTokenPerPeriod) {
  const auto l = limit("ai:execute rate=10/s burst=2");
  EXPECT_TRUE(broker_->acquire_permit(l, "s:1", 30s).granted);
  EXPECT_TRUE(broker_->acquire_permit(l, "s:2", 30s).granted);
  const PermitGrant refused = broker_->acquire_permit(l, "s:3", 30s);
  EXPECT_FALSE(refused.granted);
  EXPECT_STREQ(refused.reason, "rate");
  EXPECT_GE(refused.retry_in, 1ms);
  EXPECT_LE(refused.retry_in, 100ms);
  // Refused writes nothing: no permit is held for a rate-only limit either way.
  EXPECT_EQ(raw_->command({"EXISTS", "wk:limits:{ai:execute}:permits"}).integer(), 0);
  ASSERT_TRUE(test::eventually([&] { return broker_->acquire_permit(l, "s:3", 30s).granted; }, 2s, 5ms));
  const auto state = read_fleet_limit_state(*raw_, l);
  ASSERT_TRUE(state.tokens.has_value());
  EXPECT_LT(*state.tokens, 1.0);
}

TEST_F(BrokerLimitsTest, ARefusedFleetPermitSpendsNoRateToken) {
  const auto l = limit("y fleet=1 rate=1/h burst=2");
  ASSERT_TRUE(broker_->acquire_permit(l, "s:1", 30s).granted);
  EXPECT_FALSE(broker_->acquire_permit(l, "s:2", 30s).granted);
  broker_->release_permit(l, "s:1");
  EXPECT_TRUE(broker_->acquire_permit(l, "s:2", 30s).granted) << "the second token was spent by a refusal";
}

TEST_F(BrokerLimitsTest, APauseKeepsItsLaterEndAndEnds) {
  broker_->pause_type("ai:execute", 10s);
  broker_->pause_type("ai:execute", 100ms);  // does not shorten it
  broker_->pause_type("planning:task", 200ms);
  auto paused = broker_->paused_types();
  ASSERT_EQ(paused.size(), 2u);
  for (const auto& [type, left] : paused) {
    if (type == "ai:execute") {
      EXPECT_GT(left, 9s);
    } else {
      EXPECT_EQ(type, "planning:task");
      EXPECT_LE(left, 200ms);
    }
  }
  ASSERT_TRUE(test::eventually([&] { return broker_->paused_types().size() == 1; }, 5s, 10ms));
  EXPECT_EQ(broker_->paused_types().front().first, "ai:execute");
}

}  // namespace
}  // namespace wk::queue
