#include "queue/scripts.hpp"

namespace wk::queue {

namespace {

// Counters shared by the completion scripts: daily keys with EXPIREAT on their first increment,
// and the all-time totals, reset to 1 instead of overflowing at MaxInt64 (spec §6.9 steps 4-5,
// §6.11 step 5; on a failure both totals are reset when `processed` wraps).
constexpr const char* kCounterHelpers = R"lua(
local function incr_daily(key, expire_at)
  if redis.call("INCR", key) == 1 then redis.call("EXPIREAT", key, expire_at) end
end
local MAXINT64 = "9223372036854775807"
local function count_success(daily, total, expire_at)
  incr_daily(daily, expire_at)
  if redis.call("GET", total) == MAXINT64 then redis.call("SET", total, 1) else redis.call("INCR", total) end
end
local function count_failure(daily_processed, daily_failed, processed, failed, expire_at)
  incr_daily(daily_processed, expire_at)
  incr_daily(daily_failed, expire_at)
  if redis.call("GET", processed) == MAXINT64 then
    redis.call("SET", processed, 1)
    redis.call("SET", failed, 1)
  else
    redis.call("INCR", processed)
    redis.call("INCR", failed)
  end
end
)lua";

// Removing the id from active and then lease are the membership checks (spec §1): a task that
// moved under us (recoverer, Inspector) gives NOT FOUND, keeping asynq's order of effects.
constexpr const char* kLeaveActive = R"lua(
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
)lua";

// asynq #1144: the same entry for a task that sits in active with no lease at all. The lease is
// checked *first* and nothing is written when it exists (a live worker holds the task: dequeue
// writes active and lease in one script), so only a true orphan is ever moved.
constexpr const char* kLeaveActiveOrphan = R"lua(
if redis.call("ZSCORE", KEYS[2], ARGV[1]) then return redis.error_reply("LEASED by a live worker") end
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
)lua";

std::string with_helpers(const char* body) { return std::string(kCounterHelpers) + kLeaveActive + body; }
std::string orphan_with_helpers(const char* body) {
  return std::string(kCounterHelpers) + kLeaveActiveOrphan + body;
}

// Bodies shared by the normal completion and the orphan recovery (same KEYS/ARGV layouts).
constexpr const char* kRetryBody = R"lua(
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "retry")
if ARGV[5] == "1" then count_failure(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[4]) end
return redis.status_reply("OK")
)lua";

// The task's own hash is written before the trim: when the new entry is itself trimmed (more
// than max-size archived within one second), the trim deletes that hash too, instead of the
// task's write recreating it afterwards, listed nowhere (asynq's order leaks it).
constexpr const char* kArchiveBody = R"lua(
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "archived")
local function drop(ids)
  for _, id in ipairs(ids) do redis.call("DEL", ARGV[7] .. id) end
  for i = 1, #ids, 500 do
    redis.call("ZREM", KEYS[3], unpack(ids, i, math.min(i + 499, #ids)))
  end
end
drop(redis.call("ZRANGEBYSCORE", KEYS[3], "-inf", ARGV[4]))
drop(redis.call("ZRANGE", KEYS[3], 0, -tonumber(ARGV[5])))
count_failure(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[6])
return redis.status_reply("OK")
)lua";

Scripts make_scripts() {
  return Scripts{
      // KEYS: task, pending. ARGV: msg, now-ns, id.
      .enqueue = redis::Script(R"lua(
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[2])
redis.call("LPUSH", KEYS[2], ARGV[3])
return 1
)lua"),
      // KEYS: task, pending, unique. ARGV: id, ttl-s, msg, now-ns.
      .enqueue_unique = redis::Script(R"lua(
if not redis.call("SET", KEYS[3], ARGV[1], "NX", "EX", ARGV[2]) then return -1 end
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[4], "unique_key", KEYS[3])
redis.call("LPUSH", KEYS[2], ARGV[1])
return 1
)lua"),
      // KEYS: task, scheduled. ARGV: msg, process-at-s, id.
      .schedule = redis::Script(R"lua(
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[3])
return 1
)lua"),
      // KEYS: task, scheduled, unique. ARGV: id, ttl-s, msg, process-at-s.
      .schedule_unique = redis::Script(R"lua(
if not redis.call("SET", KEYS[3], ARGV[1], "NX", "EX", ARGV[2]) then return -1 end
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "scheduled", "unique_key", KEYS[3])
redis.call("ZADD", KEYS[2], ARGV[4], ARGV[1])
return 1
)lua"),
      // KEYS: pending, paused, active, lease, claim. ARGV: lease-expiry-s, task-key-prefix,
      // max-count, call nonce, claim ttl-s.
      // Returns id, msg pairs (msg false, a nil reply, when the hash has none): the host checks
      // each message against its list entry and archives what it cannot serve, so an id whose
      // hash has no msg (spec Q8) is moved like any other and then set aside, not left active.
      // The claim (a key of ours per broker thread, overwritten by its next call) names the ids
      // this call took, so that a caller whose reply was lost can hand them back (reclaim).
      .dequeue = redis::Script(R"lua(
if redis.call("EXISTS", KEYS[2]) == 1 then return {} end
local taken, ids = {}, {}
for _ = 1, tonumber(ARGV[3]) do
  local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[3])
  if not id then break end
  local key = ARGV[2] .. id
  redis.call("HSET", key, "state", "active")
  redis.call("HDEL", key, "pending_since")
  redis.call("ZADD", KEYS[4], ARGV[1], id)
  ids[#ids + 1] = id
  taken[#taken + 1] = id
  taken[#taken + 1] = redis.call("HGET", key, "msg")
end
if #ids > 0 then
  redis.call("SET", KEYS[5], cmsgpack.pack(ARGV[4], ARGV[1], ids), "EX", ARGV[5])
end
return taken
)lua"),
      // KEYS: claim, active, lease, pending. ARGV: nonce of the call whose reply was lost,
      // task-key-prefix. The ids that call took go to the back of pending, no attempt counted,
      // if they still hold exactly that call's lease (so none another worker has since taken).
      .reclaim = redis::Script(R"lua(
local claim = redis.call("GET", KEYS[1])
if not claim then return 0 end
local nonce, expiry, ids = cmsgpack.unpack(claim)
if nonce ~= ARGV[1] then return 0 end
local n = 0
for _, id in ipairs(ids) do
  if redis.call("ZSCORE", KEYS[3], id) == expiry and redis.call("LREM", KEYS[2], 0, id) > 0 then
    redis.call("ZREM", KEYS[3], id)
    redis.call("LPUSH", KEYS[4], id)
    redis.call("HSET", ARGV[2] .. id, "state", "pending")
    n = n + 1
  end
end
redis.call("DEL", KEYS[1])
return n
)lua"),
      // KEYS: active, lease, task, processed:date, processed, [unique]. ARGV: id, stats-expiry-s.
      .done = redis::Script(with_helpers(R"lua(
if redis.call("DEL", KEYS[3]) == 0 then return redis.error_reply("NOT FOUND") end
count_success(KEYS[4], KEYS[5], ARGV[2])
if KEYS[6] and redis.call("GET", KEYS[6]) == ARGV[1] then redis.call("DEL", KEYS[6]) end
return redis.status_reply("OK")
)lua")),
      // KEYS: active, lease, completed, task, processed:date, processed, [unique].
      // ARGV: id, stats-expiry-s, completed-expiry-s, msg.
      .mark_complete = redis::Script(with_helpers(R"lua(
if redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1]) ~= 1 then return redis.error_reply("INTERNAL") end
redis.call("HSET", KEYS[4], "msg", ARGV[4], "state", "completed")
count_success(KEYS[5], KEYS[6], ARGV[2])
if KEYS[7] and redis.call("GET", KEYS[7]) == ARGV[1] then redis.call("DEL", KEYS[7]) end
return redis.status_reply("OK")
)lua")),
      // KEYS: active, lease, retry, task, processed:date, failed:date, processed, failed.
      // ARGV: id, msg, retry-at-s, stats-expiry-s, is-failure ("1"/"0").
      .retry = redis::Script(with_helpers(kRetryBody)),
      // KEYS: active, lease, archived, task, processed:date, failed:date, processed, failed.
      // ARGV: id, msg, now-s, cutoff-s, max-size, stats-expiry-s, task-key-prefix.
      // Trimmed ids lose their hashes too (v0.25+); ZREM goes in batches to stay below Lua's
      // unpack limit (spec Q11), and ZRANGEBYSCORE keeps Redis < 6.2 working.
      .archive = redis::Script(with_helpers(kArchiveBody)),
      // asynq #1144, KEYS/ARGV as retry / archive. Error LEASED (nothing written) when the id has
      // a lease entry, NOT FOUND when it is not in active. (Redis prefixes "ERR " to a one-word error.)
      .recover_orphan_retry = redis::Script(orphan_with_helpers(kRetryBody)),
      .recover_orphan_archive = redis::Script(orphan_with_helpers(kArchiveBody)),
      // KEYS: active, lease, pending, task. ARGV: id. No pending_since (spec Q3).
      .requeue = redis::Script(std::string(kLeaveActive) + R"lua(
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")
)lua"),
      // KEYS/ARGV as requeue, but LPUSH: the task goes to the back of the line. For a task handed
      // back for a fault that was not its own (a dependency away, its plugin's runner died):
      // at the front it would be dequeued again at once and hold up everything behind it.
      .hand_back = redis::Script(std::string(kLeaveActive) + R"lua(
redis.call("LPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")
)lua"),
      // KEYS: source (scheduled|retry), pending. ARGV: now-s, now-ns, task-key-prefix, group-key-prefix.
      .forward = redis::Script(R"lua(
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, 100)
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local group = redis.call("HGET", key, "group")
  if group and group ~= "" then
    redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
    redis.call("ZREM", KEYS[1], id)
    redis.call("HSET", key, "state", "aggregating")
  else
    redis.call("LPUSH", KEYS[2], id)
    redis.call("ZREM", KEYS[1], id)
    redis.call("HSET", key, "state", "pending", "pending_since", ARGV[2])
  end
end
return #ids
)lua"),
      // KEYS: lease. ARGV: cutoff-s, task-key-prefix. Returns id, msg pairs as dequeue does
      // (asynq v0.25+ skips ids without msg; we set them aside instead).
      .list_lease_expired = redis::Script(R"lua(
local found = {}
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])) do
  found[#found + 1] = id
  found[#found + 1] = redis.call("HGET", ARGV[2] .. id, "msg")
end
return found
)lua"),
      // KEYS: active, lease. ARGV: task-key-prefix. Returns id, msg pairs as dequeue does.
      .list_active_without_lease = redis::Script(R"lua(
local found = {}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
  if not redis.call("ZSCORE", KEYS[2], id) then
    found[#found + 1] = id
    found[#found + 1] = redis.call("HGET", ARGV[1] .. id, "msg")
  end
end
return found
)lua"),
      // KEYS: server-info key, workers key. ARGV: ttl-s, server-info, then task-id/worker-info pairs.
      .write_server_state = redis::Script(R"lua(
redis.call("SETEX", KEYS[1], ARGV[1], ARGV[2])
redis.call("DEL", KEYS[2])
for i = 3, #ARGV, 2 do redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call("EXPIRE", KEYS[2], ARGV[1])
return redis.status_reply("OK")
)lua"),
      // KEYS: server-info key, workers key.
      .clear_server_state = redis::Script(R"lua(
redis.call("DEL", KEYS[1])
redis.call("DEL", KEYS[2])
return redis.status_reply("OK")
)lua"),
      // KEYS: completed. ARGV: now-s, task-key-prefix, batch.
      .delete_expired_completed = redis::Script(R"lua(
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call("DEL", ARGV[2] .. id)
  redis.call("ZREM", KEYS[1], id)
end
return #ids
)lua"),
  };
}

}  // namespace

const Scripts& scripts() {
  static const Scripts instance = make_scripts();
  return instance;
}

}  // namespace wk::queue
