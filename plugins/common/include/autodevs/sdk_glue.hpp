#pragma once
// Glue between plugins/common and the public SDK (wk_sdk.hpp). Header-only, included by the
// plugins only, so the rest of common stays testable without a host.
#include <wk_sdk.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "autodevs/config_values.hpp"
#include "autodevs/payload.hpp"
#include "autodevs/schema.hpp"
#include "autodevs/text.hpp"

namespace autodevs {

// The payload as a JSON object, or wk::Permanent("bad_payload") naming the field. An empty
// payload counts as {} (asynq tasks may carry no payload at all).
inline nlohmann::json payload_or_permanent(const wk::Task& task) {
  try {
    if (trim(task.payload).empty()) return nlohmann::json::object();
    return parse_payload_object(task.payload);
  } catch (const PayloadError& e) {
    throw wk::Permanent("bad_payload", e.what());
  }
}

// Runs `read` (field accessors) and turns a PayloadError into wk::Permanent.
template <class Fn>
auto payload_field(Fn&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const PayloadError& e) {
    throw wk::Permanent("bad_payload", e.what());
  }
}

// Configuration, read once in the plugin constructor. A malformed value throws ConfigError,
// which the SDK turns into an init failure naming the variable: the host refuses to start.
// A variable set to the empty string counts as unset (e.g. `AI_MODEL=` in a .env file).
inline std::string config_string(const wk::Context& ctx, std::string_view key, std::string_view fallback) {
  const auto value = ctx.config(key);
  return value && !trim(*value).empty() ? trim(*value) : std::string(fallback);
}
inline std::chrono::milliseconds config_duration(const wk::Context& ctx, std::string_view key,
                                                 std::chrono::milliseconds fallback) {
  const auto value = ctx.config(key);
  return value && !trim(*value).empty() ? parse_duration(key, *value) : fallback;
}
inline std::uint64_t config_bytes(const wk::Context& ctx, std::string_view key, std::uint64_t fallback) {
  const auto value = ctx.config(key);
  return value && !trim(*value).empty() ? parse_byte_size(key, *value) : fallback;
}
inline std::uint64_t config_unsigned(const wk::Context& ctx, std::string_view key, std::uint64_t fallback) {
  const auto value = ctx.config(key);
  return value && !trim(*value).empty() ? parse_unsigned(key, *value) : fallback;
}
inline bool config_bool(const wk::Context& ctx, std::string_view key, bool fallback) {
  const auto value = ctx.config(key);
  return value && !trim(*value).empty() ? parse_bool(key, *value) : fallback;
}

// Every shipped plugin applies the same schema migrations under its own plugin id; see
// schema.hpp for why that is safe.
inline void migrate_shared_schema(const wk::Context& ctx) {
  ctx.migrate({wk::Migration{1, schema::kMigrationV1Name, schema::kMigrationV1Sql}});
}

// A cancellation probe for subprocesses and HTTP transfers.
inline std::function<bool()> cancel_probe(const wk::TaskContext& tc) {
  return [&tc] { return tc.cancelled(); };
}

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

// Finished states: no more steps will run for the task.
inline constexpr std::string_view kFinishedStatusesSql = "('completed','failed','cancelled')";

}  // namespace autodevs
