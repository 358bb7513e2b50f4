#pragma once
// The test Redis (WK_TEST_REDIS_HOST/PORT) as connection settings.
#include "redis/redis.hpp"

namespace wk::test {

// On database `db`: each test binary that uses the shared test Redis owns one index
// (docs/testing.md), so binaries run in parallel without touching each other's keys.
redis::Settings test_redis_settings(int db);

}  // namespace wk::test
