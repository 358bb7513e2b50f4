#pragma once
// Crash counts of tasks whose plugin runner they crashed (docs/plugin-isolation.md), in Redis
// under keys outside asynq's namespace: wk:crashes:{<queue>}:<task id>, an integer with a TTL.
// The {queue} hash tag keeps a task's count on its queue's slot in Redis Cluster.
#include <chrono>

#include "redis/redis.hpp"
#include "task/task.hpp"

namespace wk::queue {

class RedisCrashLedger final : public task::CrashLedger {
 public:
  explicit RedisCrashLedger(redis::Pool& pool, std::chrono::seconds ttl = std::chrono::hours(24 * 7))
      : pool_(pool), ttl_(ttl) {}
  int64_t record_crash(const task::Task& task) override;
  static std::string key(const task::Task& task) { return "wk:crashes:{" + task.queue + "}:" + task.id; }

 private:
  redis::Pool& pool_;
  const std::chrono::seconds ttl_;
};

}  // namespace wk::queue
