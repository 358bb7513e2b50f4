#include "queue/queue_order.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace wk::queue {
namespace {

TEST(QueueOrder, SingleQueueIsJustThatQueue) {
  QueueOrder order({{"default", 7}}, false);
  std::mt19937_64 rng(1);
  EXPECT_EQ(order.next(rng), std::vector<std::string>{"default"});
}

TEST(QueueOrder, StrictSortsByPriorityHighestFirst) {
  QueueOrder order({{"low", 1}, {"critical", 10}, {"mid", 5}}, true);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(order.next(rng), (std::vector<std::string>{"critical", "mid", "low"}));
  }
}

TEST(QueueOrder, WeightedIsAFullPermutation) {
  QueueOrder order({{"a", 3}, {"b", 2}, {"c", 1}}, false);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200; ++i) {
    auto next = order.next(rng);
    ASSERT_EQ(next.size(), 3u);
    EXPECT_EQ(std::set<std::string>(next.begin(), next.end()), (std::set<std::string>{"a", "b", "c"}));
  }
}

TEST(QueueOrder, WeightedFirstQueueFollowsWeights) {
  // critical=10, planning=6, default=2 (GCD 2 -> 5:3:1): first-queue shares 5/9, 3/9, 1/9.
  QueueOrder order({{"critical", 10}, {"planning", 6}, {"default", 2}}, false);
  std::mt19937_64 rng(42);
  std::map<std::string, int> first;
  constexpr int kRounds = 90000;
  for (int i = 0; i < kRounds; ++i) ++first[order.next(rng).front()];
  EXPECT_NEAR(first["critical"] / double(kRounds), 5.0 / 9, 0.01);
  EXPECT_NEAR(first["planning"] / double(kRounds), 3.0 / 9, 0.01);
  EXPECT_NEAR(first["default"] / double(kRounds), 1.0 / 9, 0.01);
}

TEST(QueueOrder, SecondPlaceFollowsTheRemainingWeights) {
  // Given a first, the next is drawn from the rest in proportion to their weights:
  // P(b second | a first) = 2/3 with a=3,b=2,c=1 (expanded list shuffled, deduplicated).
  QueueOrder order({{"a", 3}, {"b", 2}, {"c", 1}}, false);
  std::mt19937_64 rng(3);
  int a_first = 0, b_after_a = 0;
  for (int i = 0; i < 60000; ++i) {
    auto next = order.next(rng);
    if (next[0] == "a") {
      ++a_first;
      if (next[1] == "b") ++b_after_a;
    }
  }
  EXPECT_NEAR(b_after_a / double(a_first), 2.0 / 3, 0.015);
}

TEST(QueueOrder, DeterministicWithSeededGenerator) {
  QueueOrder order({{"a", 3}, {"b", 2}, {"c", 1}}, false);
  std::mt19937_64 rng1(99), rng2(99);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order.next(rng1), order.next(rng2));
}

// This machine's queue leads every order, weighted or strict, and the loops visit it too.
TEST(QueueOrder, TheHostQueueComesFirstInEveryOrder) {
  std::mt19937_64 rng(7);
  QueueOrder weighted({{"a", 3}, {"b", 1}}, false, "host:m1");
  for (int i = 0; i < 200; ++i) {
    const auto order = weighted.next(rng);
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order.front(), "host:m1");
  }
  EXPECT_EQ(weighted.names(), (std::vector<std::string>{"host:m1", "a", "b"}));
  QueueOrder strict({{"a", 1}, {"b", 3}}, true, "host:m1");
  EXPECT_EQ(strict.next(rng), (std::vector<std::string>{"host:m1", "b", "a"}));
  QueueOrder single({{"a", 1}}, false, "host:m1");
  EXPECT_EQ(single.next(rng), (std::vector<std::string>{"host:m1", "a"}));
  EXPECT_THROW(QueueOrder({{"host:m1", 1}}, false, "host:m1"), std::invalid_argument);
}

TEST(QueueOrder, RejectsBadConfiguration) {
  EXPECT_THROW(QueueOrder({}, false), std::invalid_argument);
  EXPECT_THROW(QueueOrder({{"", 1}}, false), std::invalid_argument);
  EXPECT_THROW(QueueOrder({{"a", 0}}, false), std::invalid_argument);
  EXPECT_THROW(QueueOrder({{"a", 1}, {"a", 2}}, false), std::invalid_argument);
}

}  // namespace
}  // namespace wk::queue
