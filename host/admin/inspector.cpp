#include "admin/inspector.hpp"

#include <algorithm>
#include <array>

#include "asynq/keys.hpp"

namespace wk::admin {

namespace {

using Clock = std::chrono::system_clock;

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
}

constexpr std::array<std::string_view, 6> kStates{"pending", "active",   "scheduled",
                                                  "retry",   "archived", "completed"};
bool is_set_state(const std::string& s) {
  return s == "scheduled" || s == "retry" || s == "archived" || s == "completed";
}

long long as_count(redis::ReplyView r) {
  if (r.is_integer()) return r.integer();
  if (r.is_string()) return std::stoll(std::string(r.str()));
  return 0;  // nil: a counter never incremented
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// Scripts in the Inspector's semantics (asynq inspect.go); our own Lua. The task's state says
// which structure holds it; the key is built from the queue prefix (same hash slot).
// Answers: 1 done, 0 no such task, negative: refused (see the callers).
// KEYS[1] is the task hash; every single-task script starts here: unknown -> 0, active -> -1.
constexpr const char* kTaskPrelude = R"lua(
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local state = redis.call("HGET", KEYS[1], "state")
if state == "active" then return -1 end
local function remove_from_state(prefix, id)
  if state == "pending" then return redis.call("LREM", prefix .. "pending", 0, id) end
  return redis.call("ZREM", prefix .. state, id)
end
)lua";

redis::Script task_script(const char* body) { return redis::Script(std::string(kTaskPrelude) + body); }

const redis::Script kRunTask = task_script(R"lua(
if state == "pending" then return -2 end
if state == "aggregating" then return -3 end
if state == "completed" then return -5 end
if remove_from_state(ARGV[2], ARGV[1]) == 0 then return -4 end
redis.call("LPUSH", KEYS[2], ARGV[1])
redis.call("HSET", KEYS[1], "state", "pending")
return 1
)lua");

// The Inspector's archive keeps v0.24's remove-only trimming (protocol §6.12 version note).
const redis::Script kArchiveTask = task_script(R"lua(
if state == "archived" then return -2 end
if state == "aggregating" then return -3 end
if remove_from_state(ARGV[5], ARGV[1]) == 0 then return -4 end
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[1])
redis.call("HSET", KEYS[1], "state", "archived")
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", ARGV[3])
redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -tonumber(ARGV[4]))
return 1
)lua");

const redis::Script kDeleteTask = task_script(R"lua(
if state == "aggregating" then return -3 end
remove_from_state(ARGV[2], ARGV[1])
local unique = redis.call("HGET", KEYS[1], "unique_key")
if unique and unique ~= "" and redis.call("GET", unique) == ARGV[1] then
  redis.call("DEL", unique)
end
redis.call("DEL", KEYS[1])
return 1
)lua");

const redis::Script kRunAll(R"lua(
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call("LPUSH", KEYS[2], id)
  redis.call("HSET", ARGV[1] .. id, "state", "pending")
end
redis.call("DEL", KEYS[1])
return table.getn(ids)
)lua");

const redis::Script kDeleteAll(R"lua(
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local unique = redis.call("HGET", key, "unique_key")
  if unique and unique ~= "" and redis.call("GET", unique) == id then
    redis.call("DEL", unique)
  end
  redis.call("DEL", key)
end
redis.call("DEL", KEYS[1])
return table.getn(ids)
)lua");

// A queue name asynq accepts, else UsageError.
void validate_queue(const std::string& queue) {
  try {
    asynq::validate_queue_name(queue);
  } catch (const asynq::InvalidQueueName& e) {
    throw UsageError(e.what());
  }
}

std::string state_key(const std::string& queue, const std::string& state) {
  return asynq::queue_key_prefix(queue) + state;
}

}  // namespace

bool is_task_state(const std::string& state) {
  return std::find(kStates.begin(), kStates.end(), state) != kStates.end();
}

Inspector::Inspector(const redis::Settings& settings) : conn_(settings) {}

std::vector<std::string> Inspector::queues() {
  auto reply = conn_.command({"SMEMBERS", asynq::kAllQueuesKey});
  std::vector<std::string> out;
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  std::sort(out.begin(), out.end());
  return out;
}

void Inspector::require_queue(const std::string& queue) {
  validate_queue(queue);
  if (conn_.command({"SISMEMBER", asynq::kAllQueuesKey, queue}).integer() == 0) {
    throw Error("queue " + quoted(queue) + " not found");
  }
}

QueueStats Inspector::stats(const std::string& queue) {
  require_queue(queue);
  const auto today = asynq::utc_date(now_unix());
  const std::vector<std::vector<std::string>> commands{
      {"LLEN", asynq::pending_key(queue)},
      {"LLEN", asynq::active_key(queue)},
      {"ZCARD", asynq::scheduled_key(queue)},
      {"ZCARD", asynq::retry_key(queue)},
      {"ZCARD", asynq::archived_key(queue)},
      {"ZCARD", asynq::completed_key(queue)},
      {"GET", asynq::processed_key(queue, today)},
      {"GET", asynq::failed_key(queue, today)},
      {"GET", asynq::processed_total_key(queue)},
      {"GET", asynq::failed_total_key(queue)},
      {"EXISTS", asynq::paused_key(queue)},
      {"LINDEX", asynq::pending_key(queue), "-1"},  // the tail: the oldest pending task
  };
  for (const auto& c : commands) {
    std::vector<std::string_view> argv(c.begin(), c.end());
    conn_.append(redis::Argv(argv));
  }
  std::vector<redis::Reply> replies;
  for (size_t i = 0; i < commands.size(); ++i) replies.push_back(conn_.read_reply());
  for (const auto& r : replies) {
    r.throw_if_error();
  }
  QueueStats s;
  s.queue = queue;
  s.pending = as_count(replies[0]);
  s.active = as_count(replies[1]);
  s.scheduled = as_count(replies[2]);
  s.retry = as_count(replies[3]);
  s.archived = as_count(replies[4]);
  s.completed = as_count(replies[5]);
  s.processed_today = as_count(replies[6]);
  s.failed_today = as_count(replies[7]);
  s.processed_total = as_count(replies[8]);
  s.failed_total = as_count(replies[9]);
  s.paused = as_count(replies[10]) != 0;
  if (replies[11].is_string()) {
    const std::string id(replies[11].str());
    auto since = conn_.command({"HGET", asynq::task_key(queue, id), "pending_since"});
    if (since.is_string()) {
      const auto now_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
      const auto pending_ns = std::chrono::nanoseconds(std::stoll(std::string(since.str())));
      s.latency = std::max(std::chrono::milliseconds(0),
                           std::chrono::duration_cast<std::chrono::milliseconds>(now_ns - pending_ns));
    }
  }
  return s;
}

void Inspector::pause(const std::string& queue) {
  validate_queue(queue);
  auto reply = conn_.command({"SET", asynq::paused_key(queue), std::to_string(now_unix()), "NX"});
  if (reply.is_nil()) throw Error("queue " + quoted(queue) + " is already paused");
}

void Inspector::resume(const std::string& queue) {
  validate_queue(queue);
  if (conn_.command({"DEL", asynq::paused_key(queue)}).integer() == 0) {
    throw Error("queue " + quoted(queue) + " is not paused");
  }
}

std::vector<TaskInfo> Inspector::list(const std::string& queue, const std::string& state, int limit) {
  if (!is_task_state(state)) {
    throw UsageError("unknown state " + quoted(state) +
                     " (pending, active, scheduled, retry, archived, completed)");
  }
  if (limit < 1) throw UsageError("--limit must be at least 1");
  require_queue(queue);
  std::vector<std::pair<std::string, int64_t>> ids;  // id, score
  if (is_set_state(state)) {
    auto r = conn_.command({"ZRANGE", state_key(queue, state), "0", std::to_string(limit - 1), "WITHSCORES"});
    for (size_t i = 0; i + 1 < r.size(); i += 2) {
      ids.emplace_back(std::string(r[i].str()), std::stoll(std::string(r[i + 1].str())));
    }
  } else {
    // New ids are pushed at the head: the tail end holds the oldest, listed first.
    auto r = conn_.command({"LRANGE", state_key(queue, state), std::to_string(-limit), "-1"});
    for (size_t i = r.size(); i > 0; --i) ids.emplace_back(std::string(r[i - 1].str()), 0);
  }
  for (const auto& [id, score] : ids)
    conn_.append({"HMGET", asynq::task_key(queue, id), "msg", "state", "result"});
  std::vector<TaskInfo> out;
  for (const auto& [id, score] : ids) {
    auto r = conn_.read_reply();
    // A task that moved or was deleted between the two reads is left out, as asynq does.
    if (r.is_error() || r.size() < 3 || !r[0].is_string()) continue;
    TaskInfo info;
    try {
      info.msg = asynq::decode_task_message(r[0].str());
    } catch (const asynq::DecodeError& e) {
      info.msg.id = id;
      info.msg.queue = queue;
      info.undecodable = e.what();
    }
    info.state = r[1].is_string() ? std::string(r[1].str()) : state;
    if (r[2].is_string()) info.result = std::string(r[2].str());
    info.score = score;
    if (state == "scheduled" || state == "retry") info.next_process_at = score;
    out.push_back(std::move(info));
  }
  return out;
}

TaskInfo Inspector::show(const std::string& queue, const std::string& id) {
  require_queue(queue);
  auto r = conn_.command({"HMGET", asynq::task_key(queue, id), "msg", "state", "result"});
  if (r.size() < 3 || !r[0].is_string())
    throw Error("task " + quoted(id) + " not found in queue " + quoted(queue));
  TaskInfo info;
  info.stored = std::string(r[0].str());
  try {
    info.msg = asynq::decode_task_message(info.stored);
  } catch (const asynq::DecodeError& e) {
    // Shown raw: the operator decides (delete or archive) with the bytes in view.
    info.msg = asynq::TaskMessage{};
    info.msg.id = id;
    info.msg.queue = queue;
    info.undecodable = e.what();
  }
  info.state = r[1].is_string() ? std::string(r[1].str()) : "";
  if (r[2].is_string()) info.result = std::string(r[2].str());
  if (is_set_state(info.state)) {
    auto score = conn_.command({"ZSCORE", state_key(queue, info.state), id});
    if (score.is_string()) {
      info.score = static_cast<int64_t>(std::stod(std::string(score.str())));
      if (info.state == "scheduled" || info.state == "retry") info.next_process_at = info.score;
    }
  }
  return info;
}

namespace {
void check_task_answer(long long answer, const std::string& queue, const std::string& id, const char* verb) {
  const std::string task = "task " + quoted(id);
  switch (answer) {
    case 1:
      return;
    case 0:
      throw Error(task + " not found in queue " + quoted(queue));
    case -1:
      throw Error(std::string("cannot ") + verb + " " + task + ": it is active (being processed)");
    case -2:
      throw Error(std::string("cannot ") + verb + " " + task + ": it is already " +
                  (std::string(verb) == "run" ? "pending" : "archived"));
    case -3:
      throw Error(std::string("cannot ") + verb + " " + task + ": it is aggregating in a group");
    case -5:
      throw Error(std::string("cannot ") + verb + " " + task + ": it is already completed");
    default:
      throw Error(task + " moved while it was being changed; try again");
  }
}
}  // namespace

void Inspector::run(const std::string& queue, const std::string& id) {
  require_queue(queue);
  const std::vector<std::string> ka{asynq::task_key(queue, id), asynq::pending_key(queue), id,
                                    asynq::queue_key_prefix(queue)};
  std::vector<std::string_view> argv(ka.begin(), ka.end());
  check_task_answer(conn_.eval(kRunTask, redis::Argv(argv), 2).integer(), queue, id, "run");
}

void Inspector::archive(const std::string& queue, const std::string& id) {
  require_queue(queue);
  const int64_t now = now_unix();
  const int64_t cutoff = now - 90LL * 24 * 3600;
  const std::vector<std::string> ka{asynq::task_key(queue, id),    asynq::archived_key(queue), id,
                                    std::to_string(now),           std::to_string(cutoff),     "10000",
                                    asynq::queue_key_prefix(queue)};
  std::vector<std::string_view> argv(ka.begin(), ka.end());
  check_task_answer(conn_.eval(kArchiveTask, redis::Argv(argv), 2).integer(), queue, id, "archive");
}

void Inspector::remove(const std::string& queue, const std::string& id) {
  require_queue(queue);
  const std::vector<std::string> ka{asynq::task_key(queue, id), id, asynq::queue_key_prefix(queue)};
  std::vector<std::string_view> argv(ka.begin(), ka.end());
  check_task_answer(conn_.eval(kDeleteTask, redis::Argv(argv), 1).integer(), queue, id, "delete");
}

long long Inspector::run_all(const std::string& queue, const std::string& state) {
  if (state != "scheduled" && state != "retry" && state != "archived") {
    throw UsageError("retry-all takes --state scheduled, retry or archived, not " + quoted(state));
  }
  require_queue(queue);
  const std::vector<std::string> ka{state_key(queue, state), asynq::pending_key(queue),
                                    asynq::task_key_prefix(queue)};
  std::vector<std::string_view> argv(ka.begin(), ka.end());
  return conn_.eval(kRunAll, redis::Argv(argv), 2).integer();
}

long long Inspector::delete_all(const std::string& queue, const std::string& state) {
  if (!is_set_state(state)) {
    throw UsageError("delete-all takes --state scheduled, retry, archived or completed, not " +
                     quoted(state));
  }
  require_queue(queue);
  const std::vector<std::string> ka{state_key(queue, state), asynq::task_key_prefix(queue)};
  std::vector<std::string_view> argv(ka.begin(), ka.end());
  return conn_.eval(kDeleteAll, redis::Argv(argv), 1).integer();
}

std::vector<ServerEntry> Inspector::servers() {
  const std::string now = std::to_string(now_unix());
  std::vector<ServerEntry> out;
  auto keys = conn_.command({"ZRANGEBYSCORE", asynq::kAllServersKey, now, "+inf"});
  for (size_t i = 0; i < keys.size(); ++i) {
    auto value = conn_.command({"GET", keys[i].str()});
    if (!value.is_string()) continue;  // expired between the two reads
    try {
      out.push_back({asynq::decode_server_info(value.str()), {}});
    } catch (const asynq::DecodeError&) {
    }
  }
  auto worker_keys = conn_.command({"ZRANGEBYSCORE", asynq::kAllWorkersKey, now, "+inf"});
  for (size_t i = 0; i < worker_keys.size(); ++i) {
    auto values = conn_.command({"HVALS", worker_keys[i].str()});
    for (size_t j = 0; j < values.size(); ++j) {
      asynq::WorkerInfo w;
      try {
        w = asynq::decode_worker_info(values[j].str());
      } catch (const asynq::DecodeError&) {
        continue;
      }
      for (auto& s : out) {
        if (s.info.server_id != w.server_id) continue;
        s.active.push_back({w.task_id, w.task_type, w.queue, w.start_time ? w.start_time->seconds : 0,
                            w.progress_done, w.progress_total, w.progress_note});
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const ServerEntry& a, const ServerEntry& b) {
    return std::tie(a.info.host, a.info.pid) < std::tie(b.info.host, b.info.pid);
  });
  return out;
}

}  // namespace wk::admin
