// fleet_slot_delay: the live servers take turns on wall-clock multiples of a period.
#include <gtest/gtest.h>

#include <set>

#include "queue/context.hpp"

namespace wk::queue {
namespace {

using std::chrono::milliseconds;

const Clock::time_point kAt = Clock::time_point(milliseconds(1'700'000'000'250));  // 250 ms past a second

TEST(FleetSlot, AloneEveryTurnIsOurs) {
  FleetPosition alone;
  EXPECT_EQ(fleet_slot_delay(milliseconds(1000), alone, kAt), milliseconds(750));
  // Exactly on a turn: the next one, never a zero wait.
  EXPECT_EQ(fleet_slot_delay(milliseconds(1000), alone, Clock::time_point(milliseconds(1'700'000'001'000))),
            milliseconds(1000));
}

TEST(FleetSlot, EachServerTakesEverySizethTurnAndTogetherTheyTakeEvery) {
  const milliseconds period(5000);
  std::set<int64_t> turns;
  for (int rank = 0; rank < 4; ++rank) {
    FleetPosition fleet;
    fleet.rank = rank;
    fleet.size = 4;
    const auto wait = fleet_slot_delay(period, fleet, kAt);
    EXPECT_GT(wait, milliseconds(0));
    EXPECT_LE(wait, 4 * period);
    const int64_t at = std::chrono::duration_cast<milliseconds>((kAt + wait).time_since_epoch()).count();
    EXPECT_EQ(at % period.count(), 0) << "turns fall on multiples of the period";
    EXPECT_EQ((at / period.count()) % 4, rank) << "turn k is rank k mod size";
    turns.insert(at);
  }
  // The four next turns are four consecutive periods: the fleet works once per period.
  ASSERT_EQ(turns.size(), 4u);
  EXPECT_EQ(*turns.rbegin() - *turns.begin(), 3 * period.count());
}

TEST(FleetSlot, ARankOutsideTheFleetIsClamped) {
  FleetPosition odd;
  odd.rank = 7;
  odd.size = 2;
  const auto wait = fleet_slot_delay(milliseconds(1000), odd, kAt);
  EXPECT_GT(wait, milliseconds(0));
  EXPECT_LE(wait, milliseconds(2000));
}

}  // namespace
}  // namespace wk::queue
