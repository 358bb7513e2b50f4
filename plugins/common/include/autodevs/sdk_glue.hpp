#pragma once
// Glue between plugins/common and the public SDK (wk_sdk.hpp): payloads, configuration, the
// shared schema. Header-only, included by the plugins only, so the rest of common stays testable
// without a host. What the three plugins agree on as a pipeline is in pipeline.hpp.
#include <wk_sdk.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "autodevs/chat.hpp"
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

// A failed chat call as the task's outcome: a rejection is permanent (`rejected_code`); a 429
// with Retry-After is wk::RetryLater with the code "rate_limited", which makes the host pause the
// task type on every worker for that long (docs/queue-engine.md, "Backpressure"); other waits
// the provider asks for are plain RetryLater; the rest retries with the default backoff.
[[noreturn]] inline void throw_for_host(const ChatError& e, const std::string& rejected_code) {
  if (e.kind() == ChatError::Kind::Permanent) throw wk::Permanent(rejected_code, e.what());
  if (e.retry_after()) {
    if (e.rate_limited()) throw wk::RetryLater(*e.retry_after(), e.what(), "rate_limited");
    throw wk::RetryLater(*e.retry_after(), e.what());
  }
  throw e;
}

// Enqueues a task with a fixed id; false when asynq already has a task of that id in that queue
// ("task ID conflicts with another task": an earlier delivery enqueued it). Other errors throw.
inline bool enqueue_once(const wk::Context& ctx, std::string_view type, std::string_view payload,
                         const wk::EnqueueOptions& options) {
  try {
    ctx.enqueue(type, payload, options);
    return true;
  } catch (const wk::HostError& e) {
    if (std::string_view(e.what()).find("conflicts") == std::string_view::npos) throw;
    return false;
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
  ctx.migrate({wk::Migration{1, schema::kMigrationV1Name, schema::kMigrationV1Sql},
               wk::Migration{2, schema::kMigrationV2Name, schema::kMigrationV2Sql}});
}

// A cancellation probe for subprocesses and HTTP transfers.
inline std::function<bool()> cancel_probe(const wk::TaskContext& tc) {
  return [&tc] { return tc.cancelled(); };
}

}  // namespace autodevs
