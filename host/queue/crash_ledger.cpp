#include "queue/crash_ledger.hpp"

namespace wk::queue {

int64_t RedisCrashLedger::record_crash(const task::Task& task) {
  const std::string k = key(task);
  const std::string ttl = std::to_string(ttl_.count());
  auto conn = pool_.acquire();
  conn->append({"INCR", k});
  conn->append({"EXPIRE", k, ttl});
  redis::Reply count = conn->read_reply();
  redis::Reply expire = conn->read_reply();
  count.throw_if_error();
  expire.throw_if_error();
  return count.integer();
}

}  // namespace wk::queue
