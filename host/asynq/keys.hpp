#pragma once
// Redis key names of the asynq layout (protocol §3). Every per-queue key starts with
// "asynq:{<q>}:" so a queue's keys share one cluster slot.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace wk::asynq {

// The seven task states as stored in the hash field `state` (protocol §3.4).
namespace state {
inline constexpr std::string_view pending = "pending";
inline constexpr std::string_view active = "active";
inline constexpr std::string_view scheduled = "scheduled";
inline constexpr std::string_view retry = "retry";
inline constexpr std::string_view archived = "archived";
inline constexpr std::string_view completed = "completed";
inline constexpr std::string_view aggregating = "aggregating";
}  // namespace state

inline constexpr std::string_view kAllQueuesKey = "asynq:queues";
inline constexpr std::string_view kAllServersKey = "asynq:servers";
inline constexpr std::string_view kAllWorkersKey = "asynq:workers";
inline constexpr std::string_view kCancelChannel = "asynq:cancel";
inline constexpr std::string_view kDefaultQueue = "default";

// A queue and its priority, as in asynq's Config.Queues: the configuration (WORKER_QUEUES), the
// engine's queue order (protocol §7.2) and the server info all speak of queues this way.
struct QueueWeight {
  std::string name;
  int priority = 1;
  bool operator==(const QueueWeight&) const = default;
};

struct InvalidQueueName : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Throws InvalidQueueName when `name` is blank after trimming whitespace or contains '{' or '}'
// (which would break the hash-tag scheme, protocol §2.2).
void validate_queue_name(std::string_view name);
// True when `text` is empty or only whitespace (Go's strings.TrimSpace == "").
bool is_blank(std::string_view text) noexcept;

std::string queue_key_prefix(std::string_view q);  // asynq:{q}:
std::string task_key_prefix(std::string_view q);   // asynq:{q}:t:
std::string task_key(std::string_view q, std::string_view id);
std::string pending_key(std::string_view q);
std::string active_key(std::string_view q);
std::string lease_key(std::string_view q);
std::string scheduled_key(std::string_view q);
std::string retry_key(std::string_view q);
std::string archived_key(std::string_view q);
std::string completed_key(std::string_view q);
std::string paused_key(std::string_view q);
std::string processed_total_key(std::string_view q);
std::string failed_total_key(std::string_view q);
// Daily counters; `date` is YYYY-MM-DD (UTC).
std::string processed_key(std::string_view q, std::string_view date);
std::string failed_key(std::string_view q, std::string_view date);
std::string groups_key(std::string_view q);
std::string group_key_prefix(std::string_view q);  // asynq:{q}:g:
std::string group_key(std::string_view q, std::string_view group);
// asynq:{q}:unique:<type>:<md5hex>; `payload_md5_hex` empty for a nil payload (protocol §3.5).
std::string unique_key(std::string_view q, std::string_view type, std::string_view payload_md5_hex);

// asynq:servers:{host:pid:sid} and asynq:workers:{host:pid:sid}
std::string server_info_key(std::string_view host, int pid, std::string_view server_id);
std::string workers_key(std::string_view host, int pid, std::string_view server_id);

// YYYY-MM-DD of a unix time, in UTC.
std::string utc_date(int64_t unix_seconds);

}  // namespace wk::asynq
