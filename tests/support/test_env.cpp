#include "support/test_env.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace wk::test {
namespace {
std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name +
                             " is not set: run the tests through scripts/test.sh");
  }
  return v;
}
std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}
}  // namespace

RedisAddr redis_addr() {
  return {env_or("WK_TEST_REDIS_HOST", "127.0.0.1"), std::stoi(required_env("WK_TEST_REDIS_PORT"))};
}

PgAddr pg_addr() {
  return {env_or("WK_TEST_PG_HOST", "127.0.0.1"), std::stoi(required_env("WK_TEST_PG_PORT")),
          env_or("WK_TEST_PG_USER", "postgres"), env_or("WK_TEST_PG_DB", "autodevs")};
}

std::string build_dir() { return WK_TEST_BUILD_DIR; }

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(step);
  }
}

}  // namespace wk::test
