#include "fault_support.hpp"

#include <fstream>

#include "asynq/keys.hpp"
#include "queue/client.hpp"
#include "support/child_process.hpp"

namespace wk::faults {

std::map<std::string, std::string> worker_settings(int redis_port, const std::filesystem::path& plugins_dir,
                                                   const std::string& name, const std::string& queue) {
  return {
      {"REDIS_HOST", "127.0.0.1"},
      {"REDIS_PORT", std::to_string(redis_port)},
      {"REDIS_DB", "0"},
      {"DB_HOST", "127.0.0.1"},
      {"DB_PORT", std::to_string(test::free_port())},
      {"WORKER_NAME", name},
      {"WORKER_PLUGINS_DIR", plugins_dir.string()},
      {"WORKER_QUEUES", queue + "=1"},
      {"WORKER_CONCURRENCY", "2"},
      {"WORKER_SHUTDOWN_TIMEOUT", "1s"},
      {"WORKER_METRICS_ADDR", ""},
      {"WORKER_LEASE", "2s"},
      {"WORKER_HEARTBEAT_INTERVAL", "300ms"},
      {"WORKER_FORWARDER_INTERVAL", "100ms"},
      {"WORKER_RECOVERER_INTERVAL", "200ms"},
      {"WORKER_RECOVERER_CUTOFF", "0s"},
      {"WORKER_RETRY_DELAY", "0s"},
      {"LOG_LEVEL", "debug"},
  };
}

void use_engine_timings(std::map<std::string, std::string>& settings) {
  for (const char* shortened : {"WORKER_LEASE", "WORKER_HEARTBEAT_INTERVAL", "WORKER_RECOVERER_INTERVAL",
                                "WORKER_RECOVERER_CUTOFF"}) {
    settings.erase(shortened);
  }
}

CommandResult run_worker_command(const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& settings) {
  std::vector<std::string> argv{test::worker_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  test::ChildProcess cmd(argv, test::worker_env(settings));
  const auto code = cmd.wait_exit(std::chrono::seconds(30));
  return {code.value_or(-1), cmd.output()};
}

std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// ---- Redis views --------------------------------------------------------------------------------

std::string enqueue(const redis::Settings& redis, const task::EnqueueRequest& request) {
  redis::Pool pool(redis, 1);
  queue::Client client(pool);
  return client.enqueue(request);
}

void enqueue_many(const redis::Settings& redis, const task::EnqueueRequest& request, size_t count) {
  redis::Pool pool(redis, 1);
  queue::Client client(pool);
  for (size_t i = 0; i < count; ++i) client.enqueue(request);
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
