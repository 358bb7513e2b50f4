#include "queue/deadline.hpp"

#include <gtest/gtest.h>

namespace wk::queue {
namespace {

using std::chrono::seconds;
using TimePoint = std::chrono::system_clock::time_point;

const TimePoint kNow = TimePoint{seconds(1'700'000'000)} + std::chrono::milliseconds(750);

TEST(EffectiveDeadline, NeitherMeansThirtyMinutes) {
  EXPECT_EQ(effective_deadline(0, 0, kNow), kNow + std::chrono::minutes(30));
}

TEST(EffectiveDeadline, TimeoutOnlyKeepsFullPrecision) {
  EXPECT_EQ(effective_deadline(10, 0, kNow), kNow + seconds(10));
}

TEST(EffectiveDeadline, DeadlineOnlyIsThatSecond) {
  EXPECT_EQ(effective_deadline(0, 1'700'000'100, kNow), TimePoint{seconds(1'700'000'100)});
}

TEST(EffectiveDeadline, BothTakesTheEarlierInWholeSeconds) {
  EXPECT_EQ(effective_deadline(10, 1'700'000'100, kNow), TimePoint{seconds(1'700'000'010)});
  EXPECT_EQ(effective_deadline(1000, 1'700'000'100, kNow), TimePoint{seconds(1'700'000'100)});
}

TEST(EffectiveDeadline, PastDeadlineStaysInThePast) {
  EXPECT_LT(effective_deadline(0, 1'600'000'000, kNow), kNow);
}

}  // namespace
}  // namespace wk::queue
