#include "queue/broker_redis.hpp"

#include <unistd.h>

#include <array>
#include <charconv>
#include <limits>

#include "asynq/keys.hpp"

// Each operation below is: its script (written from its steps in docs/asynq-protocol.md), the
// KEYS/ARGV it takes, the one function that builds them, and the method that runs it, in asynq's
// style.
// Scripts run with EVALSHA (EVAL on NOSCRIPT).

namespace wk::queue {

namespace {

using std::chrono::seconds;

int64_t unix_s(Clock::time_point t) { return std::chrono::floor<seconds>(t.time_since_epoch()).count(); }
// Lease scores round up: a recoverer (ours or Go's) sees a lease expire no earlier than the
// holder's own copy does, so the local-lease rule (§7.6) and recovery never both own a task.
// Rounding down, as asynq does, made a 2 s lease look expired after just over 1 s.
int64_t lease_score(Clock::time_point t) { return std::chrono::ceil<seconds>(t.time_since_epoch()).count(); }
int64_t unix_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
std::string str(int64_t v) { return std::to_string(v); }

void set_number(std::string& out, int64_t v) {
  std::array<char, 24> digits{};
  const auto [end, ec] = std::to_chars(digits.data(), digits.data() + digits.size(), v);
  out.assign(digits.data(), end);
}

template <size_t N>
std::array<std::string_view, N> views_of(const std::string (&v)[N]) {
  std::array<std::string_view, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = v[i];
  return out;
}

// Per-thread scratch for the hot path's KEYS/ARGV (dequeue, done): the strings and vectors keep
// their capacity, so building those calls allocates nothing once warm.
struct Scratch {
  std::string expiry, max;
  RedisBroker::DoneStrings done_strings;
  std::vector<std::string_view> done_argv, dequeue_argv;
  int64_t day = std::numeric_limits<int64_t>::min();
  std::string date;  // YYYY-MM-DD of `day`
  // The dequeue's claim: this thread's key and call counter, and the call whose reply was lost,
  // to reclaim before this thread's next dequeue from that broker.
  std::string claim_key, nonce, claim_ttl;
  std::vector<std::string> claim_keys;  // one per queue of a dequeue call
  uint64_t calls = 0;
  const void* lost_broker = nullptr;
  std::vector<std::string> lost_queues;  // the queues of the lost call (it took from one at most)
  std::string lost_nonce;

  const std::string& date_of(int64_t unix_seconds) {
    const int64_t d = unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
    if (d != day) {
      date = asynq::utc_date(unix_seconds);
      day = d;
    }
    return date;
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// The scripts' NOT FOUND (the task moved under us) as queue::NotFound.
NotFound not_found(const asynq::TaskMessage& msg) {
  return NotFound("task " + msg.id + " is no longer active in queue " + msg.queue);
}
[[noreturn]] void throw_not_found(const asynq::TaskMessage& msg) { throw not_found(msg); }
bool is_not_found(std::string_view error) { return error.starts_with("NOT FOUND"); }

// The error of a script's reply, as the single-call methods throw it.
std::exception_ptr reply_error(const redis::ReplyView& reply, const asynq::TaskMessage& msg) {
  if (is_not_found(reply.str())) return std::make_exception_ptr(not_found(msg));
  return std::make_exception_ptr(redis::Error(redis::Error::Kind::reply, std::string(reply.str())));
}

// Counters shared by the completion scripts: daily keys with EXPIREAT on their first increment,
// and the all-time totals, reset to 1 instead of overflowing at MaxInt64 (protocol §6.9 steps 4-5,
// §6.11 step 5; on a failure both totals are reset when `processed` wraps). INCRBY fails only
// past MaxInt64; then the totals go step by step as asynq's GET / SET / INCR would.
constexpr const char* kCounterHelpers = R"lua(
local MAXINT64 = "9223372036854775807"
local function incr_daily(key, expire_at, n)
  if redis.call("INCRBY", key, n) == n then redis.call("EXPIREAT", key, expire_at) end
end
local function add_total(key, n)
  local r = redis.pcall("INCRBY", key, n)
  if type(r) == "table" and r.err then
    for _ = 1, n do
      if redis.call("GET", key) == MAXINT64 then redis.call("SET", key, 1) else redis.call("INCR", key) end
    end
  end
end
local function count_success(daily, total, expire_at, n)
  incr_daily(daily, expire_at, n)
  add_total(total, n)
end
local function count_failure(daily_processed, daily_failed, processed, failed, expire_at)
  incr_daily(daily_processed, expire_at, 1)
  incr_daily(daily_failed, expire_at, 1)
  local r = redis.pcall("INCR", processed)
  if type(r) == "table" and r.err then
    redis.call("SET", processed, 1)
    redis.call("SET", failed, 1)
  else
    redis.call("INCR", failed)
  end
end
)lua";

// Removing the id from active and then lease are the membership checks (protocol §1): a task that
// moved under us (recoverer, Inspector) gives NOT FOUND, keeping asynq's order of effects.
constexpr const char* kLeaveActive = R"lua(
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
)lua";

// asynq #1144: the same entry for a task that sits in active with no lease at all. The lease is
// checked *first* and nothing is written when it exists (a live worker holds the task: dequeue
// writes active and lease in one script), so only a true orphan is ever moved. Redis prefixes
// "ERR " to these one-word errors.
constexpr const char* kLeaveActiveOrphan = R"lua(
if redis.call("ZSCORE", KEYS[2], ARGV[1]) then return redis.error_reply("LEASED by a live worker") end
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply("NOT FOUND") end
)lua";

// Defined with the archive operation below; also used to set malformed messages aside.
const redis::Script& archive_script();
const redis::Script& recover_orphan_archive_script();

}  // namespace

struct RedisBroker::QueueKeys {
  explicit QueueKeys(const std::string& q)
      : pending(asynq::pending_key(q)),
        paused(asynq::paused_key(q)),
        active(asynq::active_key(q)),
        lease(asynq::lease_key(q)),
        task_prefix(asynq::task_key_prefix(q)),
        processed_prefix(asynq::processed_key(q, "")),
        processed_total(asynq::processed_total_key(q)) {}
  std::string pending, paused, active, lease, task_prefix, processed_prefix, processed_total;
};

RedisBroker::RedisBroker(RedisBrokerSettings settings, log::Logger logger)
    : settings_(std::move(settings)),
      log_(std::move(logger)),
      pool_(settings_.redis, settings_.pool_size),
      client_(pool_),
      waiter_(settings_.redis, pool_, log_),
      id_(task::new_uuid()) {}

RedisBroker::~RedisBroker() = default;

const RedisBroker::QueueKeys& RedisBroker::keys_for(const std::string& queue) {
  std::lock_guard lock(keys_mu_);
  auto it = keys_.find(queue);
  if (it == keys_.end()) it = keys_.emplace(queue, std::make_unique<QueueKeys>(queue)).first;
  return *it->second;
}

redis::Reply RedisBroker::eval_for(const asynq::TaskMessage& msg, const redis::Script& script,
                                   std::span<const std::string_view> keys_and_args, size_t numkeys) {
  try {
    return pool_.acquire()->eval(script, keys_and_args, numkeys);
  } catch (const redis::Error& e) {
    if (e.is_reply() && is_not_found(e.what())) throw_not_found(msg);
    throw;
  }
}

// ---- dequeue (§6.7) -----------------------------------------------------------------------------

namespace {

// Up to ARGV[2] tasks of the first of the given queues, in order, that is not paused and has
// any: what asking each queue in turn gives, in one call (asynq asks each in a round trip of its
// own; docs/queue-engine.md "Dequeue"). Redis Cluster keeps a queue's keys on its own slot, so
// there a call names one queue.
// KEYS[5q-4 .. 5q] -> queue q's asynq:{<qname>}:pending, :paused, :active, :lease, and
//                     wk:claim:{<qname>}:<broker>:<thread>
// ARGV[1] -> lease expiration (unix seconds)
// ARGV[2] -> how many tasks at most
// ARGV[3] -> this call's number (the claim's nonce)
// ARGV[4] -> claim time to live (seconds)
// ARGV[4+q] -> queue q's task key prefix
// Returns {q, {id, msg, ...}} for the queue it took from (msg false, a nil reply, when the hash
// has none), or {} when none had a task: the host checks each message against its list entry
// and archives what it cannot serve, so an id whose hash has no msg (protocol Q8) is moved like
// any other and then set aside, not left active. The claim (a key of ours per queue and broker
// thread, overwritten by its next call) names the ids this call took, so that a caller whose
// reply was lost can hand them back (reclaim below).
const redis::Script& dequeue_script() {
  static const redis::Script script(R"lua(
local max = tonumber(ARGV[2])
for q = 1, #KEYS / 5 do
  local k = (q - 1) * 5
  if redis.call("EXISTS", KEYS[k + 2]) == 0 then
    local taken, ids = {}, {}
    for _ = 1, max do
      local id = redis.call("RPOPLPUSH", KEYS[k + 1], KEYS[k + 3])
      if not id then break end
      local key = ARGV[4 + q] .. id
      redis.call("HSET", key, "state", "active")
      redis.call("HDEL", key, "pending_since")
      redis.call("ZADD", KEYS[k + 4], ARGV[1], id)
      ids[#ids + 1] = id
      taken[#taken + 1] = id
      taken[#taken + 1] = redis.call("HGET", key, "msg")
    end
    if #ids > 0 then
      redis.call("SET", KEYS[k + 5], cmsgpack.pack(ARGV[3], ARGV[1], ids), "EX", ARGV[4])
      return {q, taken}
    end
  end
end
return {}
)lua");
  return script;
}
constexpr size_t kDequeueKeysPerQueue = 5;

// wk:claim:{<queue>}:<broker>:<thread>: outside asynq's namespace, on the queue's Cluster slot.
void set_claim_key(std::string& out, std::string_view queue, std::string_view broker_id) {
  thread_local const std::string thread = std::to_string(gettid());
  out.assign("wk:claim:{").append(queue).append("}:").append(broker_id).append(":").append(thread);
}

// Checks one entry of a dequeue or listing reply; nullopt when `msg` was decoded into `out`.
std::optional<Malformed> check_entry(std::string_view id, const redis::ReplyView& stored,
                                     const std::string& queue, asynq::TaskMessage& out) {
  Malformed bad;
  bad.archived.id = std::string(id);
  bad.archived.queue = queue;
  if (!stored.is_string()) {
    bad.reason = "malformed task: its hash has no message";
    return bad;
  }
  if (stored.str().empty()) {
    bad.reason = "malformed task: its message is empty";
    return bad;
  }
  try {
    out = asynq::decode_task_message(stored.str());
  } catch (const asynq::DecodeError& e) {
    bad.reason =
        std::string("malformed task: undecodable message (") + e.what() + "); its bytes are the payload";
    bad.archived.payload = std::string(stored.str());
    return bad;
  }
  if (out.id == id && out.queue == queue) return std::nullopt;
  bad.reason = "malformed task: its message names task \"" + out.id + "\" in queue \"" + out.queue +
               "\", not the entry it is listed under";
  const std::string list_id = std::move(bad.archived.id);
  bad.archived = std::move(out);
  bad.archived.id = list_id;
  bad.archived.queue = queue;
  return bad;
}

}  // namespace

size_t RedisBroker::dequeue_argv(std::span<const std::string> queues, Clock::time_point expiry, size_t max,
                                 std::vector<std::string_view>& out) {
  Scratch& s = scratch();
  set_number(s.expiry, lease_score(expiry));
  set_number(s.max, static_cast<int64_t>(max));
  set_number(s.nonce, static_cast<int64_t>(++s.calls));
  set_number(s.claim_ttl, std::chrono::ceil<seconds>(expiry - Clock::now()).count() + 60);
  if (s.claim_keys.size() < queues.size()) s.claim_keys.resize(queues.size());
  out.clear();
  for (size_t q = 0; q < queues.size(); ++q) {
    const QueueKeys& k = keys_for(queues[q]);
    set_claim_key(s.claim_keys[q], queues[q], id_);
    out.insert(out.end(), {k.pending, k.paused, k.active, k.lease, s.claim_keys[q]});
  }
  out.insert(out.end(), {s.expiry, s.max, s.nonce, s.claim_ttl});
  for (const std::string& q : queues) out.push_back(keys_for(q).task_prefix);
  return queues.size() * kDequeueKeysPerQueue;
}

size_t RedisBroker::dequeue_span(size_t queues) const {
  // A Cluster keeps each queue's keys on a slot of its own: one queue per call there.
  return settings_.redis.cluster ? std::min<size_t>(queues, 1) : queues;
}

std::optional<Dequeued> RedisBroker::dequeue(const std::vector<std::string>& queues, seconds lease) {
  auto batch = dequeue_batch(queues, lease, 1);
  if (batch.empty()) return std::nullopt;
  return std::move(batch.front());
}

std::vector<Dequeued> RedisBroker::dequeue_batch(const std::vector<std::string>& queues, seconds lease,
                                                 size_t max) {
  std::vector<Dequeued> out;
  if (max == 0) return out;
  std::vector<std::string_view>& argv = scratch().dequeue_argv;
  reclaim_lost_dequeue();
  const std::span<const std::string> all(queues);
  for (size_t first = 0; first < all.size();) {
    const auto some = all.subspan(first, dequeue_span(all.size() - first));
    const Clock::time_point expiry = Clock::now() + lease;
    const size_t numkeys = dequeue_argv(some, expiry, max, argv);
    std::optional<redis::Reply> reply;
    try {
      reply.emplace(pool_.acquire()->eval(dequeue_script(), argv, numkeys));
    } catch (...) {
      note_lost_dequeue(some, std::current_exception());
      throw;
    }
    if (decode_dequeued(*reply, some, expiry, out)) return out;
    first += some.size();
  }
  return out;
}

template <class Take>
void RedisBroker::take_servable(const redis::ReplyView& reply, const std::string& queue,
                                const redis::Script& archive_script, Take&& take) {
  for (size_t i = 0; i + 1 < reply.size(); i += 2) {
    asynq::TaskMessage msg;
    if (auto bad = check_entry(reply[i].str(), reply[i + 1], queue, msg)) {
      set_aside(*bad, archive_script);
      continue;
    }
    take(std::move(msg));
  }
}

bool RedisBroker::decode_dequeued(const redis::ReplyView& reply, std::span<const std::string> queues,
                                  Clock::time_point expiry, std::vector<Dequeued>& out) {
  if (reply.size() < 2) return false;  // none of them had a task
  const long long q = reply[0].integer();
  if (q < 1 || static_cast<size_t>(q) > queues.size())
    throw redis::Error(redis::Error::Kind::reply, "dequeue answered for queue " + std::to_string(q));
  take_servable(reply[1], queues[static_cast<size_t>(q) - 1], archive_script(),
                [&](asynq::TaskMessage&& msg) {
                  out.push_back(Dequeued{std::move(msg), expiry});
                });
  return true;
}

// ---- reclaim: a dequeue whose reply was lost ----------------------------------------------------

namespace {

// The ids the lost call took go to the back of pending, no attempt counted, if they still hold
// exactly that call's lease (so none that was recovered or taken by another worker since).
// KEYS[1] -> wk:claim:{<qname>}:<broker>:<thread>
// KEYS[2] -> asynq:{<qname>}:active
// KEYS[3] -> asynq:{<qname>}:lease
// KEYS[4] -> asynq:{<qname>}:pending
// ARGV[1] -> the lost call's number
// ARGV[2] -> task key prefix
// Returns how many were handed back.
const redis::Script& reclaim_script() {
  static const redis::Script script(R"lua(
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
)lua");
  return script;
}

}  // namespace

void RedisBroker::note_lost_dequeue(std::span<const std::string> queues, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const redis::Error& e) {
    if (e.is_reply()) return;  // Redis answered: the script took nothing, or said what it took
  } catch (...) {
  }
  Scratch& s = scratch();
  s.lost_broker = this;
  s.lost_queues.assign(queues.begin(), queues.end());
  s.lost_nonce = s.nonce;
}

void RedisBroker::reclaim_lost_dequeue() {
  Scratch& s = scratch();
  if (s.lost_broker != this) return;
  // The lost call took from one of its queues at most; each claim names the call that wrote it.
  while (!s.lost_queues.empty()) {
    const std::string& q = s.lost_queues.back();
    const QueueKeys& k = keys_for(q);
    set_claim_key(s.claim_key, q, id_);
    const std::string_view argv[] = {s.claim_key, k.active, k.lease, k.pending, s.lost_nonce, k.task_prefix};
    const long long n =
        pool_.acquire()->eval(reclaim_script(), argv, 4).integer();  // throws: try again later
    if (n > 0) {
      log_.warn("Handed back tasks whose dequeue reply was lost, without counting an attempt",
                {{"queue", q}, {"tasks", static_cast<int64_t>(n)}});
    }
    s.lost_queues.pop_back();
  }
  s.lost_broker = nullptr;
}

// ---- waiting for work ---------------------------------------------------------------------------

bool RedisBroker::wait_for_work(const std::vector<std::string>& queues, std::chrono::milliseconds timeout,
                                unsigned waker) {
  return waiter_.wait(queues, timeout, waker);
}

void RedisBroker::wake(unsigned waker) { waiter_.wake(waker); }

// ---- leases (§6.8) ------------------------------------------------------------------------------

Clock::time_point RedisBroker::extend_leases(const std::string& queue, const std::vector<std::string>& ids,
                                             seconds lease) {
  const Clock::time_point expiry = Clock::now() + lease;
  if (ids.empty()) return expiry;
  const std::string score = str(lease_score(expiry));
  const std::string key = asynq::lease_key(queue);
  std::vector<std::string_view> argv{"ZADD", key, "XX"};
  argv.reserve(3 + 2 * ids.size());
  for (const std::string& id : ids) {
    argv.push_back(score);
    argv.push_back(id);
  }
  pool_.acquire()->command(argv);
  return expiry;
}

// ---- done (§6.9) --------------------------------------------------------------------------------

namespace {

// The success of one or more tasks of one queue, without retention: asynq's Done for each, the
// counters once for all.
// KEYS[1] -> asynq:{<qname>}:active
// KEYS[2] -> asynq:{<qname>}:lease
// KEYS[3] -> asynq:{<qname>}:processed:<yyyy-mm-dd>
// KEYS[4] -> asynq:{<qname>}:processed
// ARGV[1] -> stats expiration (unix seconds)
// ARGV[2] -> task key prefix
// ARGV[3], ARGV[4] -> task id, its unique lock key ("" for none); then the next task's
// Returns per task 1, or 0 when it was no longer in active, its lease or its hash (NOT FOUND:
// it moved under us; the same effects as asynq's script up to that check).
const redis::Script& done_script() {
  static const redis::Script script(std::string(kCounterHelpers) + R"lua(
local result, n = {}, 0
-- Check every task hash before the first write. In a Redis Cluster slot that is being migrated
-- a hash that already left makes this read fail, and one that has not arrived yet leaves a task
-- active without its hash (which nothing else produces): either way the script stops with
-- nothing changed and is sent again once the slot has moved, instead of losing the count.
for i = 3, #ARGV, 2 do
  if redis.call("EXISTS", ARGV[2] .. ARGV[i]) == 0 and redis.call("LPOS", KEYS[1], ARGV[i]) then
    return redis.error_reply("TRYAGAIN task hash " .. ARGV[i] .. " is not on this node yet")
  end
end
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call("LREM", KEYS[1], 0, id) == 0 or redis.call("ZREM", KEYS[2], id) == 0
      or redis.call("DEL", ARGV[2] .. id) == 0 then
    result[#result + 1] = 0
  else
    result[#result + 1] = 1
    n = n + 1
    local unique = ARGV[i + 1]
    if unique ~= "" and redis.call("GET", unique) == id then redis.call("DEL", unique) end
  end
end
if n > 0 then count_success(KEYS[3], KEYS[4], ARGV[1], n) end
return result
)lua");
  return script;
}
constexpr size_t kDoneKeys = 4;

}  // namespace

void RedisBroker::done_argv(std::span<const asynq::TaskMessage* const> msgs, Clock::time_point now,
                            DoneStrings& strings, std::vector<std::string_view>& out) {
  const QueueKeys& k = keys_for(msgs.front()->queue);
  strings.processed_key.assign(k.processed_prefix).append(scratch().date_of(unix_s(now)));
  set_number(strings.stats_expiry, unix_s(now + settings_.stats_ttl));
  out.clear();
  out.insert(out.end(), {k.active, k.lease, strings.processed_key, k.processed_total, strings.stats_expiry,
                         k.task_prefix});
  for (const asynq::TaskMessage* m : msgs) {
    out.emplace_back(m->id);
    out.emplace_back(m->unique_key);
  }
}

void RedisBroker::done(const asynq::TaskMessage& msg, const std::vector<task::EnqueueRequest>& followups) {
  const asynq::TaskMessage* one[] = {&msg};
  Scratch& s = scratch();
  std::vector<std::string_view>& argv = s.done_argv;
  done_argv(one, Clock::now(), s.done_strings, argv);
  if (!followups.empty()) {
    complete_with_followups(msg, done_script(), argv, kDoneKeys, followups);
    return;
  }
  if (pool_.acquire()->eval(done_script(), argv, kDoneKeys)[0].integer() == 0) throw_not_found(msg);
}

// ---- mark as complete (§6.10) -------------------------------------------------------------------

namespace {

// KEYS[1] -> asynq:{<qname>}:active
// KEYS[2] -> asynq:{<qname>}:lease
// KEYS[3] -> asynq:{<qname>}:completed
// KEYS[4] -> asynq:{<qname>}:t:<task_id>
// KEYS[5] -> asynq:{<qname>}:processed:<yyyy-mm-dd>
// KEYS[6] -> asynq:{<qname>}:processed
// KEYS[7] -> unique lock key (only when the task has one)
// ARGV[1] -> task id
// ARGV[2] -> stats expiration (unix seconds)
// ARGV[3] -> completed-entry expiration (unix seconds)
// ARGV[4] -> the task message with completed_at
const redis::Script& mark_complete_script() {
  static const redis::Script script(std::string(kCounterHelpers) + kLeaveActive + R"lua(
if redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1]) ~= 1 then return redis.error_reply("INTERNAL") end
redis.call("HSET", KEYS[4], "msg", ARGV[4], "state", "completed")
count_success(KEYS[5], KEYS[6], ARGV[2], 1)
if KEYS[7] and redis.call("GET", KEYS[7]) == ARGV[1] then redis.call("DEL", KEYS[7]) end
return redis.status_reply("OK")
)lua");
  return script;
}

struct MarkCompleteArgs {
  std::vector<std::string> v;
  size_t numkeys = 0;
  MarkCompleteArgs(const asynq::TaskMessage& msg, Clock::time_point now, seconds stats_ttl) {
    const std::string& q = msg.queue;
    const int64_t now_s = unix_s(now);
    asynq::TaskMessage completed = msg;
    completed.completed_at = now_s;
    // retention comes off the wire (any int64): saturate instead of overflowing past MaxInt64.
    const int64_t keep_until = msg.retention > std::numeric_limits<int64_t>::max() - now_s
                                   ? std::numeric_limits<int64_t>::max()
                                   : now_s + msg.retention;
    v = {asynq::active_key(q),
         asynq::lease_key(q),
         asynq::completed_key(q),
         asynq::task_key(q, msg.id),
         asynq::processed_key(q, asynq::utc_date(now_s)),
         asynq::processed_total_key(q)};
    if (!msg.unique_key.empty()) v.push_back(msg.unique_key);
    numkeys = v.size();
    v.insert(v.end(), {msg.id, str(unix_s(now + stats_ttl)), str(keep_until), asynq::encode(completed)});
  }
  std::vector<std::string_view> argv() const { return {v.begin(), v.end()}; }
};

}  // namespace

void RedisBroker::mark_complete(const asynq::TaskMessage& msg,
                                const std::vector<task::EnqueueRequest>& followups) {
  const MarkCompleteArgs args(msg, Clock::now(), settings_.stats_ttl);
  const auto argv = args.argv();
  if (!followups.empty()) {
    complete_with_followups(msg, mark_complete_script(), argv, args.numkeys, followups);
    return;
  }
  eval_for(msg, mark_complete_script(), argv, args.numkeys);
}

// Follow-ups go in the same MULTI/EXEC as the completion. MULTI cannot make them conditional on
// the completion script, so WATCH the task hash (the recoverer and the Inspector rewrite it when
// they move the task) and check it is still active first.
void RedisBroker::complete_with_followups(const asynq::TaskMessage& msg, const redis::Script& script,
                                          std::span<const std::string_view> keys_and_args, size_t numkeys,
                                          const std::vector<task::EnqueueRequest>& followups) {
  auto conn = pool_.acquire();
  const Clock::time_point now = Clock::now();
  std::vector<PreparedEnqueue> prepared;
  prepared.reserve(followups.size());
  for (const auto& request : followups) prepared.push_back(Client::prepare(request, now));
  for (const auto& p : prepared) client_.register_queue(*conn, p.queue);
  if (settings_.redis.cluster) {
    complete_then_followups_in_cluster(msg, *conn, script, keys_and_args, numkeys, prepared);
    return;
  }
  conn->ensure_loaded(script);
  for (const auto& p : prepared) conn->ensure_loaded(*p.script);

  const std::string task_key = asynq::task_key(msg.queue, msg.id);
  const std::string nk = std::to_string(numkeys);
  for (int attempt = 0; attempt < 10; ++attempt) {
    conn->append({"WATCH", task_key});
    conn->append({"HGET", task_key, "state"});
    redis::Reply watched = conn->read_reply();
    redis::Reply state = conn->read_reply();
    watched.throw_if_error();
    state.throw_if_error();  // an error reply is an outage, not "the task moved"
    if (state.is_nil() || state.str() != asynq::state::active) {
      conn->command({"UNWATCH"});
      throw_not_found(msg);
    }
    conn->append({"MULTI"});
    std::vector<std::string_view> argv{"EVALSHA", script.sha1, nk};
    argv.insert(argv.end(), keys_and_args.begin(), keys_and_args.end());
    conn->append(argv);
    std::vector<std::string> numkeys_text;
    numkeys_text.reserve(prepared.size());
    for (const auto& p : prepared) {
      numkeys_text.push_back(std::to_string(p.numkeys));
      std::vector<std::string_view> fargv{"EVALSHA", p.script->sha1, numkeys_text.back()};
      fargv.insert(fargv.end(), p.keys_and_args.begin(), p.keys_and_args.end());
      conn->append(fargv);
    }
    conn->append({"EXEC"});
    for (size_t i = 0; i < prepared.size() + 2; ++i) {
      redis::Reply queued = conn->read_reply();  // +OK for MULTI, +QUEUED for each command
      if (queued.is_error()) {
        // A command rejected at queue time makes EXEC abort; read the EXEC reply and give up.
        for (size_t j = i + 1; j < prepared.size() + 3; ++j) conn->read_reply();
        throw redis::Error(redis::Error::Kind::reply, std::string(queued.str()));
      }
    }
    redis::Reply exec = conn->read_reply();
    if (exec.is_nil()) continue;  // the task hash changed under us: look again
    exec.throw_if_error();
    if (exec[0].is_error()) {
      if (is_not_found(exec[0].str())) throw_not_found(msg);
      throw redis::Error(redis::Error::Kind::reply, std::string(exec[0].str()));
    }
    if (exec[0].is_array() && exec[0][0].integer() == 0) throw_not_found(msg);  // the done script's
    for (size_t i = 0; i < prepared.size(); ++i) {
      try {
        Client::check_result(exec[i + 1]);
      } catch (const std::exception& e) {
        // The completion stands; a duplicate follow-up (e.g. an idempotent retry) is not an error.
        log_.warn("follow-up not enqueued", {{"task_id", msg.id},
                                             {"followup_id", prepared[i].id},
                                             {"queue", prepared[i].queue},
                                             {"error", e.what()}});
      }
    }
    return;
  }
  throw redis::Error(redis::Error::Kind::reply, "task " + msg.id + " kept changing during completion");
}

// In a Redis Cluster a queue's keys share one slot, but follow-ups go to other queues, whose
// slots may live on other nodes: no MULTI spans them. The follow-ups are published first, then
// the task completes; a worker that dies in between runs the task again, and its follow-ups are
// published again unless their ids are fixed (docs/operations.md, "Cluster").
void RedisBroker::complete_then_followups_in_cluster(const asynq::TaskMessage& msg, redis::Connection& conn,
                                                     const redis::Script& script,
                                                     std::span<const std::string_view> keys_and_args,
                                                     size_t numkeys,
                                                     const std::vector<PreparedEnqueue>& prepared) {
  for (const auto& p : prepared) {
    const std::vector<std::string_view> argv(p.keys_and_args.begin(), p.keys_and_args.end());
    try {
      Client::check_result(conn.eval(*p.script, argv, p.numkeys));
    } catch (const redis::Error& e) {
      if (e.is_connection()) throw;  // not published: the task is not completed either
      log_.warn("follow-up not enqueued",
                {{"task_id", msg.id}, {"followup_id", p.id}, {"queue", p.queue}, {"error", e.what()}});
    } catch (const std::exception& e) {
      log_.warn("follow-up not enqueued",
                {{"task_id", msg.id}, {"followup_id", p.id}, {"queue", p.queue}, {"error", e.what()}});
    }
  }
  try {
    const redis::Reply done = conn.eval(script, keys_and_args, numkeys);
    // The done script answers {0, ...} for a task no longer active; mark_complete's says NOT FOUND.
    if (done.is_array() && done.size() > 0 && done[0].is_integer() && done[0].integer() == 0)
      throw_not_found(msg);
  } catch (const redis::Error& e) {
    if (e.is_reply() && is_not_found(e.what())) throw_not_found(msg);
    throw;
  }
}

// ---- retry (§6.11) and archive (§6.12) ----------------------------------------------------------

namespace {

// The layout shared by the failure scripts (retry, archive and their orphan forms), filled by
// fill_failure_args():
// KEYS[1] -> asynq:{<qname>}:active
// KEYS[2] -> asynq:{<qname>}:lease
// KEYS[3] -> asynq:{<qname>}:retry, or :archived
// KEYS[4] -> asynq:{<qname>}:t:<task_id>
// KEYS[5] -> asynq:{<qname>}:processed:<yyyy-mm-dd>
// KEYS[6] -> asynq:{<qname>}:failed:<yyyy-mm-dd>
// KEYS[7] -> asynq:{<qname>}:processed
// KEYS[8] -> asynq:{<qname>}:failed
// ARGV[1] -> task id
// ARGV[2] -> the task message with the error text and last_failed_at (`retried` + 1 only for a
//            counted retry, §6.11; never for archive, §6.12)
template <size_t N>
void fill_failure_args(std::string (&v)[N], const asynq::TaskMessage& msg, Clock::time_point now,
                       const std::string& target_key, const std::string& error, bool count_retry) {
  static_assert(N >= 10);
  const std::string& q = msg.queue;
  asynq::TaskMessage modified = msg;
  if (count_retry) ++modified.retried;
  modified.error_msg = error;  // sanitised to UTF-8 by encode()
  modified.last_failed_at = unix_s(now);
  const std::string date = asynq::utc_date(unix_s(now));
  v[0] = asynq::active_key(q);
  v[1] = asynq::lease_key(q);
  v[2] = target_key;
  v[3] = asynq::task_key(q, msg.id);
  v[4] = asynq::processed_key(q, date);
  v[5] = asynq::failed_key(q, date);
  v[6] = asynq::processed_total_key(q);
  v[7] = asynq::failed_total_key(q);
  v[8] = msg.id;
  v[9] = asynq::encode(modified);
}
constexpr size_t kFailureKeys = 8;

// Retry: the failure layout, then
// ARGV[3] -> retry at (unix seconds)
// ARGV[4] -> stats expiration (unix seconds)
// ARGV[5] -> "1" when it counts as a failure, "0" when not (a task handed back uncounted)
constexpr const char* kRetryBody = R"lua(
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "retry")
if ARGV[5] == "1" then count_failure(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[4]) end
return redis.status_reply("OK")
)lua";
const redis::Script& retry_script() {
  static const redis::Script script(std::string(kCounterHelpers) + kLeaveActive + kRetryBody);
  return script;
}
// asynq #1144: retry of an active id that has no lease at all; error LEASED (nothing written)
// when it has one, NOT FOUND when it is not in active.
const redis::Script& recover_orphan_retry_script() {
  static const redis::Script script(std::string(kCounterHelpers) + kLeaveActiveOrphan + kRetryBody);
  return script;
}

struct RetryArgs {
  std::string v[13];
  RetryArgs(const asynq::TaskMessage& msg, Clock::time_point now, Clock::time_point retry_at,
            const std::string& error, bool is_failure, seconds stats_ttl) {
    fill_failure_args(v, msg, now, asynq::retry_key(msg.queue), error, is_failure);
    v[10] = str(unix_s(retry_at));
    v[11] = str(unix_s(now + stats_ttl));
    v[12].push_back(is_failure ? '1' : '0');  // (a char: GCC 12 -Wrestrict false positive on "1"/"0")
  }
};

// Archive: the failure layout, then
// ARGV[3] -> now (unix seconds): the archived entry's score
// ARGV[4] -> entries archived before this (unix seconds) are trimmed
// ARGV[5] -> at most this many entries are kept
// ARGV[6] -> stats expiration (unix seconds)
// ARGV[7] -> task key prefix
// Trimmed ids lose their hashes too (v0.25+); ZREM goes in batches to stay below Lua's unpack
// limit (protocol Q11), and ZRANGEBYSCORE keeps Redis < 6.2 working. The task's own hash is written
// before the trim: when the new entry is itself trimmed (more than max-size archived within one
// second), the trim deletes that hash too, instead of the task's write recreating it afterwards,
// listed nowhere (asynq's order leaks it).
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

struct ArchiveArgs {
  std::string v[15];
  ArchiveArgs(const asynq::TaskMessage& msg, Clock::time_point now, const std::string& error,
              const RedisBrokerSettings& settings) {
    fill_failure_args(v, msg, now, asynq::archived_key(msg.queue), error, false);
    v[10] = str(unix_s(now));
    v[11] = str(unix_s(now - settings.archive_max_age));
    v[12] = std::to_string(settings.archive_max_size);
    v[13] = str(unix_s(now + settings.stats_ttl));
    v[14] = asynq::task_key_prefix(msg.queue);
  }
};

const redis::Script& archive_script() {
  static const redis::Script script(std::string(kCounterHelpers) + kLeaveActive + kArchiveBody);
  return script;
}
// asynq #1144, as recover_orphan_retry_script().
const redis::Script& recover_orphan_archive_script() {
  static const redis::Script script(std::string(kCounterHelpers) + kLeaveActiveOrphan + kArchiveBody);
  return script;
}

}  // namespace

void RedisBroker::retry(const asynq::TaskMessage& msg, Clock::time_point retry_at, const std::string& error,
                        bool is_failure) {
  const RetryArgs args(msg, Clock::now(), retry_at, error, is_failure, settings_.stats_ttl);
  eval_for(msg, retry_script(), views_of(args.v), kFailureKeys);
}

void RedisBroker::archive(const asynq::TaskMessage& msg, const std::string& error) {
  const ArchiveArgs args(msg, Clock::now(), error, settings_);
  eval_for(msg, archive_script(), views_of(args.v), kFailureKeys);
}

void RedisBroker::set_aside(const Malformed& bad, const redis::Script& script) {
  const log::Fields where{{"queue", bad.archived.queue}, {"task_id", bad.archived.id}};
  try {
    const ArchiveArgs args(bad.archived, Clock::now(), bad.reason, settings_);
    pool_.acquire()->eval(script, views_of(args.v), kFailureKeys);
  } catch (const redis::Error& e) {
    // Moved meanwhile (NOT FOUND, LEASED) or Redis away: the recoverer finds it again once its
    // lease has expired, so nothing is lost and it is logged when it is archived.
    if (e.is_reply()) return;
    auto fields = where;
    fields.emplace_back("error", e.what());
    log_.warn("Could not archive a malformed task yet", fields);
    return;
  }
  auto fields = where;
  fields.emplace_back("error", bad.reason);
  log_.error("Archived a malformed task message", fields);
}

OrphanRecovery RedisBroker::recover_orphan(const asynq::TaskMessage& msg,
                                           std::optional<Clock::time_point> retry_at,
                                           const std::string& error) {
  const Clock::time_point now = Clock::now();
  auto conn = pool_.acquire();
  try {
    if (retry_at) {
      const RetryArgs args(msg, now, *retry_at, error, true, settings_.stats_ttl);
      conn->eval(recover_orphan_retry_script(), views_of(args.v), kFailureKeys);
    } else {
      const ArchiveArgs args(msg, now, error, settings_);
      conn->eval(recover_orphan_archive_script(), views_of(args.v), kFailureKeys);
    }
  } catch (const redis::Error& e) {
    if (e.is_reply() && std::string_view(e.what()).starts_with("LEASED")) return OrphanRecovery::leased;
    if (e.is_reply() && is_not_found(e.what())) return OrphanRecovery::not_active;
    throw;
  }
  return OrphanRecovery::recovered;
}

// ---- requeue (§6.13) and hand back --------------------------------------------------------------

namespace {

// KEYS[1] -> asynq:{<qname>}:active
// KEYS[2] -> asynq:{<qname>}:lease
// KEYS[3] -> asynq:{<qname>}:pending
// KEYS[4] -> asynq:{<qname>}:t:<task_id>
// ARGV[1] -> task id
// No pending_since (protocol Q3).
const redis::Script& requeue_script() {
  static const redis::Script script(std::string(kLeaveActive) + R"lua(
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")
)lua");
  return script;
}
// KEYS/ARGV as requeue, but LPUSH: the task goes to the back of the line. For a task handed back
// for a fault that was not its own (a dependency away, its plugin's runner died): at the front
// it would be dequeued again at once and hold up everything behind it.
const redis::Script& hand_back_script() {
  static const redis::Script script(std::string(kLeaveActive) + R"lua(
redis.call("LPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")
)lua");
  return script;
}
constexpr size_t kRequeueKeys = 4;

struct RequeueArgs {
  std::string v[5];
  explicit RequeueArgs(const asynq::TaskMessage& msg)
      : v{asynq::active_key(msg.queue), asynq::lease_key(msg.queue), asynq::pending_key(msg.queue),
          asynq::task_key(msg.queue, msg.id), msg.id} {}
};

}  // namespace

void RedisBroker::requeue(const asynq::TaskMessage& msg) {
  eval_for(msg, requeue_script(), views_of(RequeueArgs(msg).v), kRequeueKeys);
}

void RedisBroker::hand_back(const asynq::TaskMessage& msg) {
  eval_for(msg, hand_back_script(), views_of(RequeueArgs(msg).v), kRequeueKeys);
}

// ---- the processor's round trip -----------------------------------------------------------------

void RedisBroker::exchange(std::span<const OutcomeWrite> writes, std::span<std::exception_ptr> errors,
                           const std::vector<std::string>& queues, seconds lease, size_t max,
                           std::vector<Dequeued>& out) {
  out.clear();
  const bool dequeuing = max > 0 && !queues.empty();
  const auto fail_all = [&](const std::exception_ptr& e) {
    for (size_t i = 0; i < writes.size(); ++i) {
      if (!errors[i]) errors[i] = e;
    }
  };
  if (dequeuing) {
    try {
      reclaim_lost_dequeue();
    } catch (...) {
      fail_all(std::current_exception());  // Redis is away: the writes would fail as well
      throw;
    }
  }
  const Clock::time_point now = Clock::now();
  // What each call of the round trip is for: one write, or (done) the writes of one queue.
  struct Sent {
    std::vector<size_t> writes;
  };
  std::vector<redis::ScriptCall> calls;
  std::vector<Sent> sent;
  // Owns every call's strings (of whatever *Args type) and argv views until the round trip is
  // over; the calls point into them.
  std::vector<std::shared_ptr<const void>> owned;
  const auto keep = [&owned](auto object) {
    auto held = std::make_shared<decltype(object)>(std::move(object));
    owned.push_back(held);
    return held;
  };
  calls.reserve(writes.size() + 1);

  // The plain successes, grouped by queue: one done call per queue.
  std::map<std::string_view, std::vector<size_t>> done_by_queue;
  for (size_t i = 0; i < writes.size(); ++i) {
    const OutcomeWrite& w = writes[i];
    if (w.has_followups()) {
      try {
        write_outcome(w);  // WATCH/MULTI/EXEC on a connection of its own
      } catch (...) {
        errors[i] = std::current_exception();
      }
      continue;
    }
    if (w.op == OutcomeWrite::Op::done) {
      done_by_queue[w.msg->queue].push_back(i);
      continue;
    }
    auto& argv = *keep(std::vector<std::string_view>());
    const redis::Script* script = nullptr;
    size_t numkeys = 0;
    switch (w.op) {
      case OutcomeWrite::Op::mark_complete: {
        const auto& a = *keep(MarkCompleteArgs(*w.msg, now, settings_.stats_ttl));
        argv = a.argv();
        script = &mark_complete_script();
        numkeys = a.numkeys;
        break;
      }
      case OutcomeWrite::Op::retry: {
        const auto& a = *keep(RetryArgs(*w.msg, now, w.retry_at, w.error, w.is_failure, settings_.stats_ttl));
        argv.assign(std::begin(a.v), std::end(a.v));
        script = &retry_script();
        numkeys = kFailureKeys;
        break;
      }
      case OutcomeWrite::Op::archive: {
        const auto& a = *keep(ArchiveArgs(*w.msg, now, w.error, settings_));
        argv.assign(std::begin(a.v), std::end(a.v));
        script = &archive_script();
        numkeys = kFailureKeys;
        break;
      }
      case OutcomeWrite::Op::requeue:
      case OutcomeWrite::Op::hand_back: {
        const auto& a = *keep(RequeueArgs(*w.msg));
        argv.assign(std::begin(a.v), std::end(a.v));
        script = w.op == OutcomeWrite::Op::requeue ? &requeue_script() : &hand_back_script();
        numkeys = kRequeueKeys;
        break;
      }
      case OutcomeWrite::Op::done:
        break;
    }
    calls.push_back(redis::ScriptCall{script, argv, numkeys});
    sent.push_back(Sent{{i}});
  }
  std::vector<const asynq::TaskMessage*> msgs;
  for (auto& [queue, indexes] : done_by_queue) {
    msgs.clear();
    for (size_t i : indexes) msgs.push_back(writes[i].msg);
    auto& argv = *keep(std::vector<std::string_view>());
    done_argv(msgs, now, *keep(DoneStrings()), argv);
    calls.push_back(redis::ScriptCall{&done_script(), argv, kDoneKeys});
    sent.push_back(Sent{std::move(indexes)});
  }
  // The queues this round trip dequeues from: all of them, or the first one in a Cluster.
  const std::span<const std::string> first =
      std::span<const std::string>(queues).first(dequeuing ? dequeue_span(queues.size()) : 0);
  const Clock::time_point expiry = Clock::now() + lease;
  if (dequeuing) {
    std::vector<std::string_view>& argv = scratch().dequeue_argv;
    const size_t numkeys = dequeue_argv(first, expiry, max, argv);
    calls.push_back(redis::ScriptCall{&dequeue_script(), argv, numkeys});
  }
  if (calls.empty()) return;

  try {
    pool_.acquire()->eval_all(calls);
  } catch (...) {
    // Connection trouble: the calls may or may not have run, as for a single command.
    fail_all(std::current_exception());
    if (dequeuing) {
      note_lost_dequeue(first, std::current_exception());
      throw;
    }
    return;
  }
  for (size_t c = 0; c < sent.size(); ++c) {
    const redis::Reply& reply = *calls[c].reply;
    for (size_t k = 0; k < sent[c].writes.size(); ++k) {
      const size_t i = sent[c].writes[k];
      if (reply.is_error()) {
        errors[i] = reply_error(reply, *writes[i].msg);
      } else if (reply.is_array() && reply[k].integer() == 0) {  // the done script's "not found"
        errors[i] = std::make_exception_ptr(not_found(*writes[i].msg));
      }
    }
  }
  if (!dequeuing) return;
  const redis::Reply& dequeued = *calls.back().reply;
  if (dequeued.is_error()) throw redis::Error(redis::Error::Kind::reply, std::string(dequeued.str()));
  if (decode_dequeued(dequeued, first, expiry, out)) return;
  // In a Cluster the first queue had nothing: the others as dequeue_batch() does.
  if (queues.size() > first.size()) {
    const std::vector<std::string> rest(queues.begin() + static_cast<std::ptrdiff_t>(first.size()),
                                        queues.end());
    out = dequeue_batch(rest, lease, max);
  }
}

// ---- results (§6.18) and our own keys -----------------------------------------------------------

void RedisBroker::write_result(const std::string& queue, const std::string& id, std::string_view data) {
  pool_.acquire()->command({"HSET", asynq::task_key(queue, id), "result", data});
}

Clock::time_point RedisBroker::first_unhandled(const asynq::TaskMessage& msg, std::chrono::seconds keep) {
  // wk:unhandled:{<queue>}:<id>: outside asynq's namespace, on the queue's Cluster slot.
  const std::string key = "wk:unhandled:{" + msg.queue + "}:" + msg.id;
  const std::string now = std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count());
  auto conn = pool_.acquire();
  conn->append({"SET", key, now, "NX", "EX", std::to_string(keep.count())});
  conn->append({"GET", key});
  conn->read_reply().throw_if_error();
  redis::Reply first = conn->read_reply();
  first.throw_if_error();
  const long long ms = first.is_string() ? std::stoll(std::string(first.str())) : std::stoll(now);
  return Clock::time_point{std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(ms))};
}

// ---- forward (§6.14) ----------------------------------------------------------------------------

namespace {

// Up to 100 due tasks from scheduled or retry to pending (to their group when they have one).
// KEYS[1] -> asynq:{<qname>}:scheduled, or :retry
// KEYS[2] -> asynq:{<qname>}:pending
// ARGV[1] -> now (unix seconds)
// ARGV[2] -> now (unix nanoseconds): pending_since
// ARGV[3] -> task key prefix
// ARGV[4] -> group key prefix
// Returns how many were moved.
const redis::Script& forward_script() {
  static const redis::Script script(R"lua(
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
)lua");
  return script;
}

}  // namespace

int RedisBroker::forward(const std::string& queue) {
  auto conn = pool_.acquire();
  int moved = 0;
  for (const std::string& source : {asynq::scheduled_key(queue), asynq::retry_key(queue)}) {
    for (;;) {
      const Clock::time_point now = Clock::now();
      const std::string keys_and_args[] = {source,
                                           asynq::pending_key(queue),
                                           str(unix_s(now)),
                                           str(unix_ns(now)),
                                           asynq::task_key_prefix(queue),
                                           asynq::group_key_prefix(queue)};
      const long long n = conn->eval(forward_script(), views_of(keys_and_args), 2).integer();
      moved += static_cast<int>(n);
      if (n == 0) break;
    }
  }
  return moved;
}

// ---- recoverer listings (§6.15, asynq #1144) ----------------------------------------------------

namespace {

// KEYS[1] -> asynq:{<qname>}:lease
// ARGV[1] -> cutoff (unix seconds)
// ARGV[2] -> task key prefix
// Returns id, msg pairs as dequeue does (asynq v0.25+ skips ids without msg; we set them aside).
const redis::Script& list_lease_expired_script() {
  static const redis::Script script(R"lua(
local found = {}
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])) do
  found[#found + 1] = id
  found[#found + 1] = redis.call("HGET", ARGV[2] .. id, "msg")
end
return found
)lua");
  return script;
}

// KEYS[1] -> asynq:{<qname>}:active
// KEYS[2] -> asynq:{<qname>}:lease
// ARGV[1] -> task key prefix
// Returns id, msg pairs as dequeue does, of the ids in active that have no lease entry.
const redis::Script& list_active_without_lease_script() {
  static const redis::Script script(R"lua(
local found = {}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
  if not redis.call("ZSCORE", KEYS[2], id) then
    found[#found + 1] = id
    found[#found + 1] = redis.call("HGET", ARGV[1] .. id, "msg")
  end
end
return found
)lua");
  return script;
}

}  // namespace

std::vector<asynq::TaskMessage> RedisBroker::list_lease_expired(const std::vector<std::string>& queues,
                                                                Clock::time_point cutoff) {
  std::vector<asynq::TaskMessage> out;
  auto conn = pool_.acquire();
  for (const std::string& q : queues) {
    const std::string keys_and_args[] = {asynq::lease_key(q), str(unix_s(cutoff)), asynq::task_key_prefix(q)};
    redis::Reply reply = conn->eval(list_lease_expired_script(), views_of(keys_and_args), 1);
    decode_listed(reply, q, archive_script(), out);
  }
  return out;
}

std::vector<asynq::TaskMessage> RedisBroker::list_active_without_lease(const std::string& queue) {
  std::vector<asynq::TaskMessage> out;
  const std::string keys_and_args[] = {asynq::active_key(queue), asynq::lease_key(queue),
                                       asynq::task_key_prefix(queue)};
  redis::Reply reply = pool_.acquire()->eval(list_active_without_lease_script(), views_of(keys_and_args), 2);
  decode_listed(reply, queue, recover_orphan_archive_script(), out);
  return out;
}

// asynq fails the whole listing on one undecodable message, which blocks recovery of every queue
// the server serves (protocol §4.7). We archive what cannot be served instead (as dequeue does), and
// every other task is still recovered.
void RedisBroker::decode_listed(const redis::ReplyView& reply, const std::string& queue,
                                const redis::Script& script, std::vector<asynq::TaskMessage>& out) {
  take_servable(reply, queue, script, [&](asynq::TaskMessage&& msg) { out.push_back(std::move(msg)); });
}

// ---- janitor (§6.19) ----------------------------------------------------------------------------

namespace {

// KEYS[1] -> asynq:{<qname>}:completed
// ARGV[1] -> now (unix seconds)
// ARGV[2] -> task key prefix
// ARGV[3] -> at most this many per call
// Returns how many were deleted.
const redis::Script& delete_expired_completed_script() {
  static const redis::Script script(R"lua(
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call("DEL", ARGV[2] .. id)
  redis.call("ZREM", KEYS[1], id)
end
return #ids
)lua");
  return script;
}

}  // namespace

int RedisBroker::delete_expired_completed(const std::string& queue, int batch) {
  auto conn = pool_.acquire();
  int deleted = 0;
  for (;;) {
    const std::string keys_and_args[] = {asynq::completed_key(queue), str(unix_s(Clock::now())),
                                         asynq::task_key_prefix(queue), std::to_string(batch)};
    const long long n = conn->eval(delete_expired_completed_script(), views_of(keys_and_args), 1).integer();
    deleted += static_cast<int>(n);
    if (n == 0) return deleted;
  }
}

// ---- server state (§6.16, §6.17) ----------------------------------------------------------------

namespace {

// KEYS[1] -> asynq:servers:{<host:pid:sid>}
// KEYS[2] -> asynq:workers:{<host:pid:sid>}
// ARGV[1] -> time to live (seconds)
// ARGV[2] -> the server info
// ARGV[3], ARGV[4] -> task id, its worker info; then the next task's
const redis::Script& write_server_state_script() {
  static const redis::Script script(R"lua(
redis.call("SETEX", KEYS[1], ARGV[1], ARGV[2])
redis.call("DEL", KEYS[2])
for i = 3, #ARGV, 2 do redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call("EXPIRE", KEYS[2], ARGV[1])
return redis.status_reply("OK")
)lua");
  return script;
}

// KEYS[1] -> asynq:servers:{<host:pid:sid>}
// KEYS[2] -> asynq:workers:{<host:pid:sid>}
const redis::Script& clear_server_state_script() {
  static const redis::Script script(R"lua(
redis.call("DEL", KEYS[1])
redis.call("DEL", KEYS[2])
return redis.status_reply("OK")
)lua");
  return script;
}

}  // namespace

void RedisBroker::write_server_state(const asynq::ServerInfo& info,
                                     const std::vector<asynq::WorkerInfo>& workers, seconds ttl) {
  const std::string server_key = asynq::server_info_key(info.host, info.pid, info.server_id);
  const std::string workers_key = asynq::workers_key(info.host, info.pid, info.server_id);
  const std::string expiry = str(unix_s(Clock::now() + ttl));
  auto conn = pool_.acquire();
  if (workers.empty() && !workers_listed_) {
    // Idle, and idle at the last beat too: the workers hash is gone and its asynq:workers entry
    // expires on its own, so the server's two keys are all there is to refresh (§6.16 a and c).
    conn->append({"ZADD", asynq::kAllServersKey, expiry, server_key});
    conn->append({"SETEX", server_key, str(ttl.count()), asynq::encode(info)});
    for (int i = 0; i < 2; ++i) conn->read_reply().throw_if_error();
    return;
  }
  // a and b of §6.16 are independent single-key commands: one round trip for both.
  conn->append({"ZADD", asynq::kAllServersKey, expiry, server_key});
  conn->append({"ZADD", asynq::kAllWorkersKey, expiry, workers_key});
  for (int i = 0; i < 2; ++i) {
    conn->read_reply().throw_if_error();
  }
  std::vector<std::string> keys_and_args{server_key, workers_key, str(ttl.count()), asynq::encode(info)};
  keys_and_args.reserve(4 + 2 * workers.size());
  for (const auto& w : workers) {
    keys_and_args.push_back(w.task_id);
    keys_and_args.push_back(asynq::encode(w));
  }
  const std::vector<std::string_view> argv(keys_and_args.begin(), keys_and_args.end());
  workers_listed_ = true;  // until this write is known to have run: a lost reply must not skip the clear
  conn->eval(write_server_state_script(), argv, 2);
  workers_listed_ = !workers.empty();
}

void RedisBroker::clear_server_state(const std::string& host, int pid, const std::string& server_id) {
  const std::string server_key = asynq::server_info_key(host, pid, server_id);
  const std::string workers_key = asynq::workers_key(host, pid, server_id);
  auto conn = pool_.acquire();
  conn->append({"ZREM", asynq::kAllServersKey, server_key});
  conn->append({"ZREM", asynq::kAllWorkersKey, workers_key});
  for (int i = 0; i < 2; ++i) {
    conn->read_reply().throw_if_error();
  }
  const std::string_view argv[] = {server_key, workers_key};
  conn->eval(clear_server_state_script(), argv, 2);
}

std::vector<std::string> RedisBroker::live_servers() {
  redis::Reply reply =
      pool_.acquire()->command({"ZRANGEBYSCORE", asynq::kAllServersKey, str(unix_s(Clock::now())), "+inf"});
  std::vector<std::string> out;
  out.reserve(reply.size());
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> RedisBroker::all_queues() {
  redis::Reply reply = pool_.acquire()->command({"SMEMBERS", asynq::kAllQueuesKey});
  std::vector<std::string> out;
  out.reserve(reply.size());
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<long long> RedisBroker::backlogs(const std::vector<std::string>& queues) {
  auto conn = pool_.acquire();
  const std::string now = str(unix_s(Clock::now()));
  for (const auto& q : queues) {
    conn->append({"LLEN", asynq::pending_key(q)});
    conn->append({"LLEN", asynq::active_key(q)});
    conn->append({"ZCOUNT", asynq::scheduled_key(q), "-inf", now});
    conn->append({"ZCOUNT", asynq::retry_key(q), "-inf", now});
  }
  // Every reply is read before any error is raised: the connection stays in step.
  std::vector<redis::Reply> replies;
  replies.reserve(queues.size() * 4);
  for (size_t i = 0; i < queues.size() * 4; ++i) replies.push_back(conn->read_reply());
  std::vector<long long> out(queues.size(), 0);
  for (size_t i = 0; i < replies.size(); ++i) {
    replies[i].throw_if_error();
    out[i / 4] += replies[i].integer();
  }
  return out;
}

std::optional<asynq::ServerInfo> RedisBroker::server_info(const std::string& key) {
  redis::Reply reply = pool_.acquire()->command({"GET", key});
  if (!reply.is_string()) return std::nullopt;
  try {
    return asynq::decode_server_info(reply.str());
  } catch (const asynq::DecodeError&) {
    return std::nullopt;  // not a server we can take turns with
  }
}

std::vector<bool> RedisBroker::any_due(const std::vector<std::string>& sorted_sets, Clock::time_point now) {
  const std::string max = str(unix_s(now));
  auto conn = pool_.acquire();
  for (const auto& key : sorted_sets) conn->append({"ZRANGEBYSCORE", key, "-inf", max, "LIMIT", "0", "1"});
  std::vector<bool> out;
  out.reserve(sorted_sets.size());
  for (size_t i = 0; i < sorted_sets.size(); ++i)
    out.push_back(conn->read_reply().throw_if_error().size() > 0);
  return out;
}

std::vector<Broker::LeaseProbe> RedisBroker::probe_leases(const std::vector<std::string>& queues) {
  auto conn = pool_.acquire();
  for (const auto& q : queues) {
    conn->append({"ZRANGE", asynq::lease_key(q), "0", "0", "WITHSCORES"});
    conn->append({"LLEN", asynq::active_key(q)});
  }
  std::vector<LeaseProbe> out(queues.size());
  for (auto& probe : out) {
    redis::Reply earliest = conn->read_reply();
    earliest.throw_if_error();
    if (earliest.size() == 2) {
      probe.earliest_expiry = Clock::time_point(
          std::chrono::seconds(static_cast<int64_t>(std::stod(std::string(earliest[1].str())))));
    }
    probe.active = conn->read_reply().throw_if_error().integer();
  }
  return out;
}

bool RedisBroker::ping() {
  try {
    return pool_.acquire()->command({"PING"}).str() == "PONG";
  } catch (const redis::Error&) {
    return false;
  }
}

}  // namespace wk::queue
