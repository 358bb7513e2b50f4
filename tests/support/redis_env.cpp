#include "support/redis_env.hpp"

#include "support/test_env.hpp"

namespace wk::test {

redis::Settings test_redis_settings(int db) {
  const RedisAddr addr = redis_addr();
  redis::Settings s;
  s.host = addr.host;
  s.port = addr.port;
  s.db = db;
  return s;
}

}  // namespace wk::test
