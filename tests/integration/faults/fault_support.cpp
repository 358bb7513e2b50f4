#include "fault_support.hpp"

#include "asynq/keys.hpp"
#include "queue/client.hpp"

namespace wk::faults {

// ---- Redis views --------------------------------------------------------------------------------

std::string enqueue(const redis::Settings& redis, task::EnqueueRequest request) {
  redis::Pool pool(redis, 1);
  queue::Client client(pool);
  return client.enqueue(request);
}

std::vector<std::string> QueueView::list(const std::string& which) const {
  const std::string key = asynq::queue_key_prefix(queue) + which;
  auto reply = conn.command({"LRANGE", key, "0", "-1"});
  std::vector<std::string> out;
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  return out;
}

std::vector<std::string> QueueView::zset(const std::string& which) const {
  const std::string key = asynq::queue_key_prefix(queue) + which;
  auto reply = conn.command({"ZRANGE", key, "0", "-1"});
  std::vector<std::string> out;
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  return out;
}

std::optional<std::string> QueueView::field(const std::string& id, const std::string& name) const {
  auto reply = conn.command({"HGET", asynq::task_key(queue, id), name});
  if (reply.is_nil()) return std::nullopt;
  return std::string(reply.str());
}

std::optional<asynq::TaskMessage> QueueView::message(const std::string& id) const {
  const auto raw = field(id, "msg");
  if (!raw) return std::nullopt;
  return asynq::decode_task_message(*raw);
}

bool QueueView::exists(const std::string& id) const {
  return conn.command({"EXISTS", asynq::task_key(queue, id)}).integer() == 1;
}

}  // namespace wk::faults
