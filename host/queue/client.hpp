#pragma once
// The producer side of asynq (protocol §5): builds a TaskMessage from an EnqueueRequest with asynq's
// defaults and routing, registers the queue once per process (§6.1), and runs the enqueue or
// schedule script (§6.2-§6.5). The broker reuses prepare()/check_result() to publish follow-ups
// inside the same MULTI/EXEC as a completion.
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "asynq/messages.hpp"
#include "redis/redis.hpp"
#include "task/task.hpp"

namespace wk::queue {

// asynq's ErrDuplicateTask and ErrTaskIDConflict, with Go's texts.
struct DuplicateTask : std::runtime_error {
  DuplicateTask() : std::runtime_error("task already exists") {}
};
struct TaskIdConflict : std::runtime_error {
  TaskIdConflict() : std::runtime_error("task ID conflicts with another task") {}
};

// One enqueue ready to send: the script and its KEYS+ARGV.
struct PreparedEnqueue {
  std::string queue;
  std::string id;
  asynq::TaskMessage msg;
  const redis::Script* script = nullptr;
  std::vector<std::string> keys_and_args;
  size_t numkeys = 0;
  bool scheduled = false;
};

class Client : public task::Enqueuer {
 public:
  explicit Client(redis::Pool& pool) : pool_(pool) {}

  // Returns the task id. Throws task::InvalidRequest (bad input), DuplicateTask, TaskIdConflict
  // or redis::Error.
  std::string enqueue(const task::EnqueueRequest& request) override;
  void validate(const task::EnqueueRequest& request) const override { checked_queue(request); }

  // Validates (checked_queue) and builds; throws std::invalid_argument with a clear message.
  static PreparedEnqueue prepare(const task::EnqueueRequest& request, task::Clock::time_point now);
  // asynq's producer rules: throws std::invalid_argument, else returns the queue name to use.
  static std::string checked_queue(const task::EnqueueRequest& request);
  // Maps the script's answer (1 / 0 / -1) to success or the producer errors.
  static void check_result(redis::ReplyView reply);
  // SADD asynq:queues <q>, once per queue per Client (v0.25+ behaviour).
  void register_queue(redis::Connection& conn, const std::string& queue);

 private:
  redis::Pool& pool_;
  std::mutex registered_mu_;
  std::unordered_set<std::string> registered_;
};

}  // namespace wk::queue
