// Flow control's part of RedisBroker (docs/queue-engine.md, "Flow control"): fleet permits, the
// rate bucket and type pauses, in keys of our own outside asynq's namespace. Go asynq servers
// sharing the queues never look at them.
//
//   wk:limits:{<pattern>}:permits  sorted set: permit (server:task) -> lease expiry (ms)
//   wk:limits:{<pattern>}:rate     hash: tokens, at (ms) -- a token bucket
//   wk:limits:paused               hash: type -> pause end (ms)
//
// Every time is Redis's own clock (TIME), so workers whose clocks differ still agree. A limit's
// two keys share a hash tag, so each script touches one Cluster slot.
#include <cmath>
#include <string>

#include "queue/broker_redis.hpp"

namespace wk::queue {

namespace {

using std::chrono::milliseconds;

std::string permits_key(const task::TypeLimit& limit) { return "wk:limits:{" + limit.pattern + "}:permits"; }
std::string rate_key(const task::TypeLimit& limit) { return "wk:limits:{" + limit.pattern + "}:rate"; }
constexpr std::string_view kPausedKey = "wk:limits:paused";

// Redis's clock in ms as `now`; effects replication, so TIME may precede writes (Redis < 7).
constexpr const char* kNow = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
)lua";

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

// KEYS[1] -> wk:limits:{<pattern>}:permits
// KEYS[2] -> wk:limits:{<pattern>}:rate
// ARGV[1] -> fleet concurrency (0: none)
// ARGV[2] -> rate, tasks per ms (0: none)
// ARGV[3] -> burst (the bucket's size)
// ARGV[4] -> permit name
// ARGV[5] -> lease (ms)
// Returns {1} when granted (a permit held, a token taken), else {0, retry in ms, reason}. Nothing
// is written unless both parts grant.
PermitGrant RedisBroker::acquire_permit(const task::TypeLimit& limit, const std::string& member,
                                        milliseconds lease) {
  static const redis::Script script(std::string(kNow) + R"lua(
local fleet = tonumber(ARGV[1])
if fleet > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
  if not redis.call("ZSCORE", KEYS[1], ARGV[4]) and redis.call("ZCARD", KEYS[1]) >= fleet then
    local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
    return {0, math.max(1, tonumber(first[2]) - now), "fleet"}
  end
end
local rate = tonumber(ARGV[2])
if rate > 0 then
  local burst = tonumber(ARGV[3])
  local b = redis.call("HMGET", KEYS[2], "tokens", "at")
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  if now > at then tokens = math.min(burst, tokens + (now - at) * rate) end
  if tokens < 1 then return {0, math.max(1, math.ceil((1 - tokens) / rate)), "rate"} end
  redis.call("HSET", KEYS[2], "tokens", string.format("%.17g", tokens - 1), "at", math.max(now, at))
  redis.call("PEXPIRE", KEYS[2], math.ceil(burst / rate) + 60000)
end
if fleet > 0 then
  redis.call("ZADD", KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
  redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[5]) + 60000)
end
return {1}
)lua");
  const std::string permits = permits_key(limit);
  const std::string rate = rate_key(limit);
  const std::string fleet = std::to_string(limit.fleet);
  const std::string per_ms = number(limit.rate / 1000.0);
  const std::string burst = std::to_string(limit.effective_burst());
  const std::string lease_ms = std::to_string(lease.count());
  const std::string_view argv[] = {permits, rate, fleet, per_ms, burst, member, lease_ms};
  redis::Reply reply = pool_.acquire()->eval(script, argv, 2);
  PermitGrant grant;
  grant.granted = reply[0].integer() == 1;
  if (!grant.granted) {
    grant.retry_in = milliseconds(reply[1].integer());
    grant.reason = reply[2].str() == "fleet" ? "fleet" : "rate";
  }
  return grant;
}

void RedisBroker::release_permit(const task::TypeLimit& limit, const std::string& member) {
  const std::string key = permits_key(limit);
  pool_.acquire()->command({"ZREM", key, member});
}

// KEYS[1] -> wk:limits:{<pattern>}:permits
// ARGV[1] -> lease (ms)
// ARGV[2..] -> permit names
// Moves each held permit's expiry to now + lease; a permit already given up stays so.
void RedisBroker::extend_permits(const task::TypeLimit& limit, const std::vector<std::string>& members,
                                 milliseconds lease) {
  static const redis::Script script(std::string(kNow) + R"lua(
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call("ZADD", KEYS[1], "XX", expiry, ARGV[i]) end
redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[1]) + 60000)
return 1
)lua");
  if (members.empty()) return;
  const std::string key = permits_key(limit);
  const std::string lease_ms = std::to_string(lease.count());
  std::vector<std::string_view> argv{key, lease_ms};
  for (const auto& m : members) argv.emplace_back(m);
  pool_.acquire()->eval(script, argv, 1);
}

// KEYS[1] -> wk:limits:paused
// ARGV[1] -> task type
// ARGV[2] -> duration (ms)
// Sets the type's pause end unless a later one is set, and drops the pauses that have ended.
void RedisBroker::pause_type(const std::string& type, milliseconds duration) {
  static const redis::Script script(std::string(kNow) + R"lua(
local ends = now + tonumber(ARGV[2])
local current = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "0")
if current < ends then redis.call("HSET", KEYS[1], ARGV[1], ends) end
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call("HDEL", KEYS[1], all[i]) end
end
return 1
)lua");
  const std::string ms = std::to_string(duration.count());
  const std::string_view argv[] = {kPausedKey, type, ms};
  pool_.acquire()->eval(script, argv, 1);
}

std::vector<std::pair<std::string, milliseconds>> RedisBroker::paused_types() {
  return read_paused_types(*pool_.acquire());
}

// KEYS[1] -> wk:limits:paused
// Returns {type, ms left, ...} of the pauses not yet ended.
std::vector<std::pair<std::string, milliseconds>> read_paused_types(redis::Connection& conn) {
  static const redis::Script script(std::string(kNow) + R"lua(
local out = {}
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = left
  end
end
return out
)lua");
  const std::string_view argv[] = {kPausedKey};
  redis::Reply reply = conn.eval(script, argv, 1);
  std::vector<std::pair<std::string, milliseconds>> out;
  for (size_t i = 0; i + 1 < reply.size(); i += 2) {
    out.emplace_back(std::string(reply[i].str()), milliseconds(reply[i + 1].integer()));
  }
  return out;
}

// KEYS[1] -> wk:limits:{<pattern>}:permits
// KEYS[2] -> wk:limits:{<pattern>}:rate
// ARGV[1] -> rate, tasks per ms (0: none)
// ARGV[2] -> burst
// Returns {permits held, tokens now as text or false}; writes nothing.
FleetLimitState read_fleet_limit_state(redis::Connection& conn, const task::TypeLimit& limit) {
  static const redis::Script script(std::string(kNow) + R"lua(
local held = redis.call("ZCOUNT", KEYS[1], "(" .. now, "+inf")
local rate = tonumber(ARGV[1])
local b = redis.call("HMGET", KEYS[2], "tokens", "at")
if rate <= 0 or not b[1] then return {held, false} end
local tokens = tonumber(b[1])
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(tonumber(ARGV[2]), tokens + (now - at) * rate) end
return {held, string.format("%.3f", tokens)}
)lua");
  const std::string permits = permits_key(limit);
  const std::string rate = rate_key(limit);
  const std::string per_ms = number(limit.rate / 1000.0);
  const std::string burst = std::to_string(limit.effective_burst());
  const std::string_view argv[] = {permits, rate, per_ms, burst};
  redis::Reply reply = conn.eval(script, argv, 2);
  FleetLimitState state;
  state.permits_held = reply[0].integer();
  if (reply[1].is_string()) state.tokens = std::stod(std::string(reply[1].str()));
  return state;
}

}  // namespace wk::queue
