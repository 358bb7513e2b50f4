#include "asynq/keys.hpp"

#include <ctime>

namespace wk::asynq {

namespace {
std::string queue_key(std::string_view q, std::string_view suffix) {
  std::string key;
  key.reserve(9 + q.size() + suffix.size());
  key.append("asynq:{").append(q).append("}:").append(suffix);
  return key;
}
std::string tagged(std::string_view prefix, std::string_view host, int pid, std::string_view server_id) {
  std::string key(prefix);
  key.append(":{")
      .append(host)
      .append(":")
      .append(std::to_string(pid))
      .append(":")
      .append(server_id)
      .append("}");
  return key;
}
}  // namespace

bool is_blank(std::string_view text) noexcept {
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') return false;
  }
  return true;
}

void validate_queue_name(std::string_view name) {
  if (is_blank(name)) throw InvalidQueueName("queue name must not be blank");
  if (name.find_first_of("{}") != std::string_view::npos) {
    throw InvalidQueueName("queue name \"" + std::string(name) + "\" must not contain '{' or '}'");
  }
}

std::string queue_key_prefix(std::string_view q) { return queue_key(q, ""); }
std::string task_key_prefix(std::string_view q) { return queue_key(q, "t:"); }
std::string task_key(std::string_view q, std::string_view id) { return task_key_prefix(q).append(id); }
std::string pending_key(std::string_view q) { return queue_key(q, "pending"); }
std::string active_key(std::string_view q) { return queue_key(q, "active"); }
std::string lease_key(std::string_view q) { return queue_key(q, "lease"); }
std::string scheduled_key(std::string_view q) { return queue_key(q, "scheduled"); }
std::string retry_key(std::string_view q) { return queue_key(q, "retry"); }
std::string archived_key(std::string_view q) { return queue_key(q, "archived"); }
std::string completed_key(std::string_view q) { return queue_key(q, "completed"); }
std::string paused_key(std::string_view q) { return queue_key(q, "paused"); }
std::string processed_total_key(std::string_view q) { return queue_key(q, "processed"); }
std::string failed_total_key(std::string_view q) { return queue_key(q, "failed"); }
std::string processed_key(std::string_view q, std::string_view date) {
  return queue_key(q, "processed:").append(date);
}
std::string failed_key(std::string_view q, std::string_view date) {
  return queue_key(q, "failed:").append(date);
}
std::string groups_key(std::string_view q) { return queue_key(q, "groups"); }
std::string group_key_prefix(std::string_view q) { return queue_key(q, "g:"); }
std::string group_key(std::string_view q, std::string_view group) {
  return group_key_prefix(q).append(group);
}
std::string unique_key(std::string_view q, std::string_view type, std::string_view payload_md5_hex) {
  return queue_key(q, "unique:").append(type).append(":").append(payload_md5_hex);
}

std::string server_info_key(std::string_view host, int pid, std::string_view server_id) {
  return tagged(kAllServersKey, host, pid, server_id);
}
std::string workers_key(std::string_view host, int pid, std::string_view server_id) {
  return tagged(kAllWorkersKey, host, pid, server_id);
}

std::string utc_date(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

}  // namespace wk::asynq
