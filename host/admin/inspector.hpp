#pragma once
// Read and change queues in Redis exactly as asynq's Inspector does (protocol §6.23, §8), so the
// `worker` admin commands, asynq's CLI and asynqmon agree on what they see and do.
//
// Writes are Lua scripts (one atomic step each): a running worker may move the same task at the
// same moment, and the scripts check membership the way asynq's do.
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "asynq/messages.hpp"
#include "redis/redis.hpp"

namespace wk::admin {

// An error to show the operator as it is (bad input, not found, wrong state). Exit code 1.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad arguments (unknown state, limit < 1). Exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct QueueStats {
  std::string queue;
  long long pending = 0, active = 0, scheduled = 0, retry = 0, archived = 0, completed = 0;
  long long processed_today = 0, failed_today = 0, processed_total = 0, failed_total = 0;
  bool paused = false;
  std::chrono::milliseconds latency{0};  // now - pending_since of the oldest pending task
  long long size() const { return pending + active + scheduled + retry + archived + completed; }
};

struct TaskInfo {
  asynq::TaskMessage msg;
  std::string state;
  std::string result;
  std::optional<int64_t> next_process_at;  // unix-s, scheduled/retry only
  int64_t score = 0;                       // ZSET score for set states (archived-at, expiry, ...)
  std::string undecodable;                 // why the stored message could not be decoded, if so
  std::string stored;                      // the stored message's bytes (show() only)
};

struct WorkerTask {
  std::string task_id, task_type, queue;
  int64_t started_at = 0;  // unix-s
  // The handler's last progress report (ours; asynq servers send none).
  uint64_t progress_done = 0, progress_total = 0;
  std::string progress_note;
};
struct ServerEntry {
  asynq::ServerInfo info;
  std::vector<WorkerTask> active;
};

class Inspector {
 public:
  explicit Inspector(const redis::Settings& settings);  // connects; throws redis::Error

  // asynq:queues, sorted.
  std::vector<std::string> queues();
  // Error "queue \"q\" not found" unless q is in asynq:queues.
  void require_queue(const std::string& queue);
  QueueStats stats(const std::string& queue);

  // SET paused <now> NX / DEL; Error when already paused / not paused.
  void pause(const std::string& queue);
  void resume(const std::string& queue);

  // Oldest first. `state`: pending, active, scheduled, retry, archived, completed.
  std::vector<TaskInfo> list(const std::string& queue, const std::string& state, int limit);
  TaskInfo show(const std::string& queue, const std::string& id);

  // Inspector.RunTask: scheduled/retry/archived -> pending (LPUSH, state pending).
  void run(const std::string& queue, const std::string& id);
  // Inspector.ArchiveTask: refuses active (and already archived) tasks.
  void archive(const std::string& queue, const std::string& id);
  // Inspector.DeleteTask: refuses active; releases the unique lock when it holds this id.
  void remove(const std::string& queue, const std::string& id);
  // RunAll / DeleteAll over a set state (scheduled, retry, archived; delete also completed).
  long long run_all(const std::string& queue, const std::string& state);
  long long delete_all(const std::string& queue, const std::string& state);

  // Live servers (expiry score >= now) with their active workers.
  std::vector<ServerEntry> servers();

 private:
  redis::Connection conn_;
};

// Valid list states, for messages.
bool is_task_state(const std::string& state);

}  // namespace wk::admin
