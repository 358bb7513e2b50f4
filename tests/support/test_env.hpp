#pragma once
// Where the integration tests find the real services that scripts/test.sh starts.
// Variables: WK_TEST_REDIS_HOST, WK_TEST_REDIS_PORT, WK_TEST_PG_HOST, WK_TEST_PG_PORT,
// WK_TEST_PG_USER, WK_TEST_PG_DB. A missing variable fails the test (never skips): CI must
// not go green by running nothing.
#include <chrono>
#include <functional>
#include <string>

namespace wk::test {

struct RedisAddr {
  std::string host;
  int port = 0;
};
struct PgAddr {
  std::string host;
  int port = 0;
  std::string user;
  std::string db;
};

RedisAddr redis_addr();
PgAddr pg_addr();
// The directory that holds built artefacts the tests need (worker binary, fixture plugins).
std::string build_dir();

// Polls `done` until it returns true or `timeout` passes; returns the last value.
// For awaiting an observable event in another process or thread, not for sleeping.
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(10),
                std::chrono::milliseconds step = std::chrono::milliseconds(5));

}  // namespace wk::test
