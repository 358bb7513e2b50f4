#pragma once
// asynq's default retry delay (protocol §7.5): n^4 + 15 + r*(n+1) seconds, r uniform in [0, 29],
// n = the message's `retried` before the increment.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>

namespace wk::queue {

std::chrono::seconds default_retry_delay(int32_t retried, std::mt19937_64& rng);

// The same with its own generator, safe to call from any thread.
class DefaultRetryDelay {
 public:
  explicit DefaultRetryDelay(uint64_t seed = std::random_device{}()) : rng_(seed) {}
  std::chrono::seconds operator()(int32_t retried) {
    std::lock_guard lock(mu_);
    return default_retry_delay(retried, rng_);
  }

 private:
  std::mutex mu_;
  std::mt19937_64 rng_;
};

}  // namespace wk::queue
