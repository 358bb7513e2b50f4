#pragma once
// The contract between the three shipped plugins as one pipeline (docs/plugins.md): the queue
// their follow-ups go to, the deterministic ids of those follow-ups (so that a retried handler
// never enqueues a step twice), the timeouts each stage gives the next, and which task statuses
// are final. A change here changes what every stage expects of the others.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "autodevs/sdk_glue.hpp"

namespace autodevs {

// Queues and deterministic follow-up ids (asynq TaskID: a second enqueue is a conflict, so a
// retried handler never creates a duplicate).
inline constexpr std::string_view kPipelineQueue = "default";
inline std::string worktree_create_task_id(std::string_view task_id) {
  return "worktree-create:" + std::string(task_id);
}
inline std::string ai_execute_task_id(std::string_view task_id, std::int64_t step) {
  return "ai-execute:" + std::string(task_id) + ":" + std::to_string(step);
}

// AI_TIMEOUT: how long one agent run or model call may take.
inline std::chrono::milliseconds ai_timeout(const wk::Context& ctx) {
  return config_duration(ctx, "AI_TIMEOUT", std::chrono::minutes(30));
}
// The asynq timeout of every ai:execute task, step 1 (staged by worktree:create) as much as the
// later ones: the agent's limit plus time for git and the database. asynq's 30 min default
// would cut a step short whenever AI_TIMEOUT is longer.
inline std::chrono::milliseconds ai_execute_timeout(const wk::Context& ctx) {
  return ai_timeout(ctx) + std::chrono::minutes(5);
}

// Where a task's steps run (docs/plugins.md, "Several machines"). A worktree lives on the machine
// that created it; its steps go to that machine's queue (host:<WORKER_HOST_ID>), which only that
// machine's workers serve. With WORKTREE_SHARED=true every worker sees every worktree (one
// shared disk), and any worker takes any step.
struct Placement {
  std::string host_id;  // this worker's WORKER_HOST_ID
  bool shared = false;  // WORKTREE_SHARED

  static Placement of(const wk::Context& ctx) {
    Placement p;
    p.host_id = config_string(ctx, "WORKER_HOST_ID", "");
    p.shared = config_bool(ctx, "WORKTREE_SHARED", false) || p.host_id.empty();
    return p;
  }
  // A follow-up that needs this machine's worktree.
  wk::EnqueueOptions step_options() const {
    return wk::EnqueueOptions().queue(kPipelineQueue).on_this_host(!shared);
  }
  // Whether a worktree recorded with `holder` (its host_id; empty: made before hosts were
  // recorded) lives on another machine than this one.
  bool elsewhere(std::string_view holder) const { return !shared && !holder.empty() && holder != host_id; }
};

// Finished states: no more steps will run for the task.
inline constexpr std::string_view kFinishedStatusesSql = "('completed','failed','cancelled')";

}  // namespace autodevs
