#include "queue/retry_delay.hpp"

#include <algorithm>

namespace wk::queue {

std::chrono::seconds default_retry_delay(int32_t retried, std::mt19937_64& rng) {
  // Go computes in int with no overflow guard; clamp n so n^4 stays in range (n = 215 already
  // means a delay of 68 years).
  const int64_t n = std::clamp<int64_t>(retried, 0, 215);
  std::uniform_int_distribution<int64_t> r(0, 29);
  return std::chrono::seconds(n * n * n * n + 15 + r(rng) * (n + 1));
}

}  // namespace wk::queue
