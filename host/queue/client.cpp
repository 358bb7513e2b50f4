#include "queue/client.hpp"

#include <array>
#include <cmath>

#include "asynq/keys.hpp"
#include "digest/digest.hpp"

namespace wk::queue {

namespace {

constexpr int32_t kDefaultMaxRetry = 25;
constexpr int64_t kDefaultTimeoutSeconds = int64_t{30} * 60;

int64_t unix_seconds(task::Clock::time_point t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}
int64_t unix_nanos(task::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The four enqueue scripts (protocol §6.2-§6.5); Client::prepare() builds their KEYS/ARGV.
// Each returns 1 (enqueued), 0 (a task with that id exists) or -1 (the unique lock is held).

// enqueue (§6.2):
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:pending
// ARGV[1] -> the task message
// ARGV[2] -> now (unix nanoseconds): pending_since
// ARGV[3] -> task id
const redis::Script& enqueue_script() {
  static const redis::Script script(R"lua(
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[2])
redis.call("LPUSH", KEYS[2], ARGV[3])
return 1
)lua");
  return script;
}

// enqueue unique (§6.3):
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:pending
// KEYS[3] -> the unique lock key
// ARGV[1] -> task id
// ARGV[2] -> lock time to live (seconds)
// ARGV[3] -> the task message
// ARGV[4] -> now (unix nanoseconds): pending_since
const redis::Script& enqueue_unique_script() {
  static const redis::Script script(R"lua(
if not redis.call("SET", KEYS[3], ARGV[1], "NX", "EX", ARGV[2]) then return -1 end
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[4], "unique_key", KEYS[3])
redis.call("LPUSH", KEYS[2], ARGV[1])
return 1
)lua");
  return script;
}

// schedule (§6.4):
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:scheduled
// ARGV[1] -> the task message
// ARGV[2] -> process at (unix seconds)
// ARGV[3] -> task id
const redis::Script& schedule_script() {
  static const redis::Script script(R"lua(
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[3])
return 1
)lua");
  return script;
}

// schedule unique (§6.5):
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:scheduled
// KEYS[3] -> the unique lock key
// ARGV[1] -> task id
// ARGV[2] -> lock time to live (seconds)
// ARGV[3] -> the task message
// ARGV[4] -> process at (unix seconds)
const redis::Script& schedule_unique_script() {
  static const redis::Script script(R"lua(
if not redis.call("SET", KEYS[3], ARGV[1], "NX", "EX", ARGV[2]) then return -1 end
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "scheduled", "unique_key", KEYS[3])
redis.call("ZADD", KEYS[2], ARGV[4], ARGV[1])
return 1
)lua");
  return script;
}

}  // namespace

std::string Client::checked_queue(const task::EnqueueRequest& request) {
  if (asynq::is_blank(request.type)) throw task::InvalidRequest("task type must not be blank");
  std::string queue = request.queue.empty() ? std::string(asynq::kDefaultQueue) : request.queue;
  try {
    asynq::validate_queue_name(queue);
  } catch (const asynq::InvalidQueueName& e) {
    throw task::InvalidRequest(e.what());
  }
  if (!request.task_id.empty() && asynq::is_blank(request.task_id)) {
    throw task::InvalidRequest("task ID must not be blank");
  }
  if (request.unique_ttl && *request.unique_ttl < std::chrono::seconds(1)) {
    throw task::InvalidRequest("Unique TTL cannot be less than 1s");
  }
  if (request.retention && request.retention->count() < 0)
    throw task::InvalidRequest("retention must not be negative");
  return queue;
}

PreparedEnqueue Client::prepare(const task::EnqueueRequest& request, task::Clock::time_point now) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  const std::string queue = checked_queue(request);

  PreparedEnqueue p;
  p.queue = queue;
  p.id = request.task_id.empty() ? task::new_uuid() : request.task_id;

  asynq::TaskMessage& m = p.msg;
  m.type = request.type;
  m.payload = request.payload;
  m.headers = request.headers;
  m.id = p.id;
  m.queue = queue;
  m.retry = std::max<int32_t>(0, request.max_retry.value_or(kDefaultMaxRetry));
  m.deadline = request.deadline ? unix_seconds(*request.deadline) : 0;
  // Go: Timeout(0) counts as "not given"; the 30 min default applies only if neither was given.
  const bool has_timeout = request.timeout && request.timeout->count() != 0;
  if (has_timeout) {
    m.timeout = request.timeout->count();
  } else if (!request.deadline) {
    m.timeout = kDefaultTimeoutSeconds;
  }
  m.retention = request.retention ? request.retention->count() : 0;

  const auto process_at = request.process_at.value_or(now);
  p.scheduled = process_at > now;
  const std::string task_key = asynq::task_key(queue, p.id);

  if (request.unique_ttl) {
    // Our payload cannot be nil, so the key always carries a checksum (empty -> d41d8cd9...).
    m.unique_key = asynq::unique_key(queue, m.type, digest::md5_hex(m.payload));
    // Immediate: floor(ttl). Scheduled: floor(process_at + ttl - now) (protocol §5.1, §13.3).
    const auto lock_for =
        p.scheduled ? (process_at + *request.unique_ttl) - now : task::Clock::duration(*request.unique_ttl);
    const int64_t ttl = std::chrono::floor<seconds>(lock_for).count();
    std::string encoded = asynq::encode(m);
    if (p.scheduled) {
      p.script = &schedule_unique_script();
      p.keys_and_args = {task_key,
                         asynq::scheduled_key(queue),
                         m.unique_key,
                         p.id,
                         std::to_string(ttl),
                         std::move(encoded),
                         std::to_string(unix_seconds(process_at))};
    } else {
      p.script = &enqueue_unique_script();
      p.keys_and_args = {
          task_key,           asynq::pending_key(queue),      m.unique_key, p.id, std::to_string(ttl),
          std::move(encoded), std::to_string(unix_nanos(now))};
    }
    p.numkeys = 3;
  } else {
    std::string encoded = asynq::encode(m);
    if (p.scheduled) {
      p.script = &schedule_script();
      p.keys_and_args = {task_key, asynq::scheduled_key(queue), std::move(encoded),
                         std::to_string(unix_seconds(process_at)), p.id};
    } else {
      p.script = &enqueue_script();
      p.keys_and_args = {task_key, asynq::pending_key(queue), std::move(encoded),
                         std::to_string(unix_nanos(now)), p.id};
    }
    p.numkeys = 2;
  }
  return p;
}

void Client::check_result(redis::ReplyView reply) {
  reply.throw_if_error();
  const long long result = reply.integer();
  if (result == -1) throw DuplicateTask();
  if (result == 0) throw TaskIdConflict();
}

void Client::register_queue(redis::Connection& conn, const std::string& queue) {
  {
    std::lock_guard lock(registered_mu_);
    if (registered_.contains(queue)) return;
  }
  conn.command({"SADD", asynq::kAllQueuesKey, queue});
  std::lock_guard lock(registered_mu_);
  registered_.insert(queue);
}

std::string Client::enqueue(const task::EnqueueRequest& request) {
  PreparedEnqueue p = prepare(request, task::Clock::now());
  auto conn = pool_.acquire();
  register_queue(*conn, p.queue);
  std::vector<std::string_view> argv(p.keys_and_args.begin(), p.keys_and_args.end());
  check_result(conn->eval(*p.script, argv, p.numkeys));
  return p.id;
}

}  // namespace wk::queue
