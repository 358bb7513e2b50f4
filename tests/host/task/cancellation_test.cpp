// task::Cancellation: the first reason wins, callbacks run once with it, wait_for wakes on it.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include "task/task.hpp"

namespace wk::task {
namespace {

using namespace std::chrono_literals;

TEST(Cancellation, TheFirstReasonWinsAndLaterCancelsAreNoOps) {
  Cancellation c;
  EXPECT_FALSE(c.cancelled());
  EXPECT_EQ(c.reason(), CancelReason::none);
  EXPECT_TRUE(c.cancel(CancelReason::deadline));
  EXPECT_FALSE(c.cancel(CancelReason::requested));
  EXPECT_FALSE(c.cancel(CancelReason::shutdown));
  EXPECT_TRUE(c.cancelled());
  EXPECT_EQ(c.reason(), CancelReason::deadline);
}

TEST(Cancellation, OfManyRacingCancelsExactlyOneWins) {
  for (int round = 0; round < 50; ++round) {
    Cancellation c;
    std::atomic<int> winners{0};
    std::vector<std::thread> threads;
    for (const CancelReason r : {CancelReason::deadline, CancelReason::requested, CancelReason::shutdown,
                                 CancelReason::lease_lost}) {
      threads.emplace_back([&, r] {
        if (c.cancel(r)) ++winners;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(winners.load(), 1);
    EXPECT_NE(c.reason(), CancelReason::none);
  }
}

TEST(Cancellation, CallbacksRunOnceWithTheReasonAndRemovedOnesNever) {
  Cancellation c;
  std::vector<CancelReason> seen;
  int removed_calls = 0;
  c.on_cancel([&](CancelReason r) { seen.push_back(r); });
  const auto token = c.on_cancel([&](CancelReason) { ++removed_calls; });
  c.remove(token);
  c.cancel(CancelReason::requested);
  c.cancel(CancelReason::deadline);
  EXPECT_EQ(seen, std::vector<CancelReason>{CancelReason::requested});
  EXPECT_EQ(removed_calls, 0);
  // Registered after the fact: runs at once with the reason, and there is nothing to remove.
  CancelReason late = CancelReason::none;
  EXPECT_EQ(c.on_cancel([&](CancelReason r) { late = r; }), Cancellation::Token{0});
  EXPECT_EQ(late, CancelReason::requested);
}

TEST(Cancellation, WaitForTimesOutWithNoneAndWakesWithTheReason) {
  Cancellation c;
  EXPECT_EQ(c.wait_for(10ms), CancelReason::none);
  std::promise<void> waiting;
  auto waiter = std::async(std::launch::async, [&] {
    waiting.set_value();
    return c.wait_for(60s);
  });
  waiting.get_future().wait();
  c.cancel(CancelReason::shutdown);
  ASSERT_EQ(waiter.wait_for(10s), std::future_status::ready) << "wait_for did not wake on cancel";
  EXPECT_EQ(waiter.get(), CancelReason::shutdown);
  EXPECT_EQ(c.wait_for(0ms), CancelReason::shutdown);  // already cancelled: no wait at all
}

}  // namespace
}  // namespace wk::task
