#pragma once
// Building blocks of the process-level fault tests besides the shared helpers of tests/support
// (child processes, private servers): a producer and readers of the asynq keys a test asserts on.
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "asynq/messages.hpp"
#include "redis/redis.hpp"
#include "task/task.hpp"

namespace wk::faults {

// What every worker of the fault tests gets: Redis on `redis_port`, the plugins in
// `plugins_dir`, one queue, and timings shortened with the advanced settings
// (docs/configuration.md). No database: nothing listens on DB_PORT (the pool connects lazily).
std::map<std::string, std::string> worker_settings(int redis_port, const std::filesystem::path& plugins_dir,
                                                   const std::string& name, const std::string& queue);

// Drops the shortened engine timings of worker_settings(): asynq's own lease (30 s) and loops,
// for tests where a lease must outlast an outage of a few seconds.
void use_engine_timings(std::map<std::string, std::string>& settings);

// `worker <args...>` (a one-shot command: enqueue, stats...) with `settings`; its exit code (-1
// when it did not end within 30 s) and output.
struct CommandResult {
  int code = -1;
  std::string output;
};
CommandResult run_worker_command(const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& settings);

// The lines of a file (none when it does not exist yet), e.g. what fault:record wrote.
std::vector<std::string> lines_of(const std::filesystem::path& file);

// Publishes a task the way an asynq client does (the host's own producer code).
std::string enqueue(const redis::Settings& redis, const task::EnqueueRequest& request);
// `count` such tasks over one connection.
void enqueue_many(const redis::Settings& redis, const task::EnqueueRequest& request, size_t count);

// Views of one queue's keys.
struct QueueView {
  redis::Connection& conn;
  std::string queue;

  std::vector<std::string> list(const std::string& which) const;  // pending, active (LRANGE 0 -1)
  std::vector<std::string> zset(const std::string& which) const;  // retry, archived, completed...
  // HGET of the task hash; nullopt when the hash or field is absent.
  std::optional<std::string> field(const std::string& id, const std::string& name) const;
  std::optional<asynq::TaskMessage> message(const std::string& id) const;
  bool exists(const std::string& id) const;
};

}  // namespace wk::faults
