#include "queue/retry_delay.hpp"

#include <gtest/gtest.h>

#include <set>

namespace wk::queue {
namespace {

TEST(RetryDelay, StaysWithinTheFormulaBounds) {
  std::mt19937_64 rng(5);
  for (int n : {0, 1, 2, 5, 10}) {
    const long long base = 1LL * n * n * n * n + 15;
    std::set<long long> seen;
    for (int i = 0; i < 3000; ++i) {
      const auto d = default_retry_delay(n, rng).count();
      ASSERT_GE(d, base);
      ASSERT_LE(d, base + 29LL * (n + 1));
      ASSERT_EQ((d - base) % (n + 1), 0) << "the random part is r*(n+1)";
      seen.insert(d);
    }
    EXPECT_EQ(seen.size(), 30u) << "r takes all 30 values in [0,29] for n=" << n;
  }
}

TEST(RetryDelay, KnownExamplesFromTheSpec) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 500; ++i) {
    auto d0 = default_retry_delay(0, rng).count();
    EXPECT_TRUE(d0 >= 15 && d0 <= 44);
    auto d1 = default_retry_delay(1, rng).count();
    EXPECT_TRUE(d1 >= 16 && d1 <= 76);
  }
  auto d10 = default_retry_delay(10, rng).count();
  EXPECT_GE(d10, 10015);  // about 2 h 47 min
  EXPECT_LE(d10, 10015 + 29 * 11);
}

TEST(RetryDelay, DeterministicWithSeededGeneratorAndNeverNegative) {
  DefaultRetryDelay a(123), b(123);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a(i % 7), b(i % 7));
  std::mt19937_64 rng(1);
  EXPECT_GT(default_retry_delay(-3, rng).count(), 0);
  EXPECT_GT(default_retry_delay(1 << 30, rng).count(), 0);
}

}  // namespace
}  // namespace wk::queue
