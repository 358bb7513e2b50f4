#include "queue/broker_redis.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <limits>

#include "asynq/keys.hpp"
#include "queue/scripts.hpp"

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

std::vector<std::string_view> views(const std::vector<std::string>& strings) {
  return {strings.begin(), strings.end()};
}

void set_number(std::string& out, int64_t v) {
  std::array<char, 24> digits{};
  const auto [end, ec] = std::to_chars(digits.data(), digits.data() + digits.size(), v);
  out.assign(digits.data(), end);
}

// Per-thread scratch for the hot path's KEYS/ARGV (dequeue, done): the strings and vectors keep
// their capacity, so building those calls allocates nothing once warm.
struct Scratch {
  std::string task_key, processed_key, stats_expiry, expiry, max;
  std::vector<std::string_view> write_argv, dequeue_argv;
  // The dequeue's claim (see the dequeue script): this thread's key and call counter, and the
  // call whose reply was lost, to reclaim before this thread's next dequeue from that broker.
  std::string claim_key, nonce, claim_ttl;
  uint64_t calls = 0;
  const void* lost_broker = nullptr;
  std::string lost_queue, lost_nonce;
  int64_t day = std::numeric_limits<int64_t>::min();
  std::string date;  // YYYY-MM-DD of `day`

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

// Turns the scripts' NOT FOUND error reply into queue::NotFound.
[[noreturn]] void rethrow_not_found(const redis::Error& e, const asynq::TaskMessage& msg) {
  if (e.is_reply() && std::string_view(e.what()).starts_with("NOT FOUND")) {
    throw NotFound("task " + msg.id + " is no longer active in queue " + msg.queue);
  }
  throw e;
}

}  // namespace

struct RedisBroker::Waiter {
  std::string pending_key;
  std::unique_ptr<redis::Connection> conn;  // created by the waiter thread; guarded by wait_mu_
  Clock::time_point armed_until{};
  std::thread thread;
};

RedisBroker::RedisBroker(RedisBrokerSettings settings, log::Logger logger)
    : settings_(std::move(settings)),
      log_(std::move(logger)),
      pool_(settings_.redis, settings_.pool_size),
      client_(pool_),
      id_(task::new_uuid()) {}

RedisBroker::~RedisBroker() {
  {
    std::lock_guard lock(wait_mu_);
    stopping_ = true;
    for (auto& [queue, waiter] : waiters_) {
      if (waiter->conn) waiter->conn->interrupt();
    }
  }
  waiter_cv_.notify_all();
  work_cv_.notify_all();
  for (auto& [queue, waiter] : waiters_) {
    if (waiter->thread.joinable()) waiter->thread.join();
  }
}

// ---- auto-pipelining ---------------------------------------------------------------------------
//
// The hot-path scripts (dequeue, done, mark_complete, retry, archive, requeue) of all threads go
// through call(): the calls that arrive while one round trip is in flight are sent together as
// one pipeline (each its own EVALSHA, in arrival order, with its own reply), by whichever caller
// finds no flush running. Per-call semantics are unchanged; Redis and the host do one read and
// one write for the whole group instead of one per call.

namespace {

// A one-shot wake-up on a futex. std::binary_semaphore spins with sched_yield before it sleeps,
// which on a loaded 2-core machine cost more CPU than the wake-up itself (perf: ~10 % of the
// host's CPU in sched_yield); this one sleeps at once, and set() skips the wake syscall when the
// waiter has not gone to sleep yet.
class Event {
 public:
  void wait() noexcept {
    uint32_t expected = kIdle;
    if (!state_.compare_exchange_strong(expected, kSleeping, std::memory_order_acquire))
      return;  // set already
    while (state_.load(std::memory_order_acquire) != kSet) {
      syscall(SYS_futex, &state_, FUTEX_WAIT_PRIVATE, kSleeping, nullptr, nullptr, 0);
    }
  }
  void set() noexcept {
    // After the exchange the waiter may return and free this object: only the address is used
    // below (a futex wake on it is harmless, as with any futex-based semaphore).
    if (state_.exchange(kSet, std::memory_order_release) == kSleeping) {
      syscall(SYS_futex, &state_, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
  }

 private:
  static constexpr uint32_t kIdle = 0;
  static constexpr uint32_t kSleeping = 1;
  static constexpr uint32_t kSet = 2;
  std::atomic<uint32_t> state_{kIdle};
};

}  // namespace

struct RedisBroker::Call {
  const redis::Script* script;
  redis::Argv keys_and_args;
  size_t numkeys;
  Call* owner = nullptr;  // set: submitted together with `owner`, whose thread waits
  std::optional<redis::Reply> reply{};
  std::exception_ptr error{};
  bool noscript = false;
  bool finished = false;  // written by the flusher before wake.set()
  Event wake{};           // set once (owners only): finished, or promoted to flusher
};

redis::Reply RedisBroker::call(const redis::Script& script, redis::Argv keys_and_args, size_t numkeys) {
  Call c{&script, keys_and_args, numkeys};
  Call* one[] = {&c};
  submit(one);
  if (c.error) std::rethrow_exception(c.error);
  return std::move(*c.reply);
}

void RedisBroker::submit(std::span<Call* const> calls) {
  Call& last = *calls.back();  // the owner: the only one this thread waits on
  for (Call* x : calls.first(calls.size() - 1)) x->owner = &last;
  std::unique_lock lock(pipe_mu_);
  // Pushed together, so they are sent in one batch, in this order.
  pipe_queue_.insert(pipe_queue_.end(), calls.begin(), calls.end());
  if (pipe_flushing_) {
    lock.unlock();
    last.wake.wait();
    if (last.finished) return;
    lock.lock();  // promoted: the previous flusher handed the role over (pipe_flushing_ stays true)
  } else {
    pipe_flushing_ = true;
  }
  pipe_batch_.swap(pipe_queue_);  // both keep their capacity: no allocation per call
  lock.unlock();
  flush(pipe_batch_);
  // Wake each other owner of the batch exactly once (no thundering herd). A Call lives on its
  // caller's stack, so it is not touched after its owner's set(); a call with an owner precedes
  // that owner in the batch, so it is read before the owner can leave.
  for (Call* x : pipe_batch_) {
    if (x->owner != nullptr || x == &last) continue;
    x->finished = true;
    x->wake.set();
  }
  pipe_batch_.clear();
  lock.lock();
  if (pipe_queue_.empty()) {
    pipe_flushing_ = false;
  } else {
    Call* next = pipe_queue_.front();  // alive: its owner waits in wait()
    if (next->owner != nullptr) next = next->owner;
    lock.unlock();
    next->wake.set();
  }
}

void RedisBroker::flush(const std::vector<Call*>& batch) {
  try {
    auto conn = pool_.acquire();
    std::array<char, 24> nk{};  // append() copies the arguments into the output buffer at once
    for (Call* c : batch) {
      const auto [nk_end, ec] = std::to_chars(nk.data(), nk.data() + nk.size(), c->numkeys);
      pipe_argv_.clear();
      pipe_argv_.emplace_back("EVALSHA");
      pipe_argv_.emplace_back(c->script->sha1);
      pipe_argv_.emplace_back(nk.data(), static_cast<size_t>(nk_end - nk.data()));
      pipe_argv_.insert(pipe_argv_.end(), c->keys_and_args.begin(), c->keys_and_args.end());
      conn->append(pipe_argv_);
    }
    for (Call* c : batch) {
      redis::Reply r = conn->read_reply();
      if (!r.is_error()) {
        c->reply.emplace(std::move(r));
      } else if (r.str().starts_with("NOSCRIPT")) {
        c->noscript = true;  // script cache flushed: run it again below with EVAL
      } else {
        c->error = std::make_exception_ptr(redis::Error(redis::Error::Kind::reply, std::string(r.str())));
      }
    }
    for (Call* c : batch) {
      if (!c->noscript) continue;
      try {
        c->reply.emplace(conn->eval(*c->script, c->keys_and_args, c->numkeys));
      } catch (const redis::Error&) {
        c->error = std::current_exception();
      }
    }
  } catch (...) {
    // Connection trouble (or anything else): the unanswered calls may or may not have run, as for
    // a single command. Every call of the batch must leave with a reply or an error, including a
    // NOSCRIPT call read before the failure whose EVAL never ran, and the flusher must not throw
    // (its waiting callers would never be woken).
    const std::exception_ptr failure = std::current_exception();
    for (Call* c : batch) {
      if (!c->reply && !c->error) c->error = failure;
    }
  }
}

// ---- dequeue ------------------------------------------------------------------------------------

std::optional<Dequeued> RedisBroker::dequeue(const std::vector<std::string>& queues, seconds lease) {
  auto batch = dequeue_batch(queues, lease, 1);
  if (batch.empty()) return std::nullopt;
  return std::move(batch.front());
}

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

const RedisBroker::QueueKeys& RedisBroker::keys_for(const std::string& queue) {
  std::lock_guard lock(keys_mu_);
  auto it = keys_.find(queue);
  if (it == keys_.end()) it = keys_.emplace(queue, std::make_unique<QueueKeys>(queue)).first;
  return *it->second;
}

namespace {
// wk:claim:{<queue>}:<broker>:<thread>: outside asynq's namespace, on the queue's Cluster slot.
void set_claim_key(std::string& out, std::string_view queue, std::string_view broker_id) {
  thread_local const std::string thread = std::to_string(gettid());
  out.assign("wk:claim:{").append(queue).append("}:").append(broker_id).append(":").append(thread);
}
}  // namespace

void RedisBroker::dequeue_argv(const std::string& q, Clock::time_point expiry, size_t max,
                               std::vector<std::string_view>& out) {
  const QueueKeys& k = keys_for(q);
  Scratch& s = scratch();
  set_number(s.expiry, lease_score(expiry));
  set_number(s.max, static_cast<int64_t>(max));
  set_claim_key(s.claim_key, q, id_);
  set_number(s.nonce, static_cast<int64_t>(++s.calls));
  set_number(s.claim_ttl, std::chrono::ceil<seconds>(expiry - Clock::now()).count() + 60);
  out.clear();
  out.insert(out.end(), {k.pending, k.paused, k.active, k.lease, s.claim_key, s.expiry, k.task_prefix, s.max,
                         s.nonce, s.claim_ttl});
}

void RedisBroker::note_lost_dequeue(const std::string& q, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const redis::Error& e) {
    if (e.is_reply()) return;  // Redis answered: the script took nothing, or said what it took
  } catch (...) {
  }
  Scratch& s = scratch();
  s.lost_broker = this;
  s.lost_queue = q;
  s.lost_nonce = s.nonce;
}

void RedisBroker::reclaim_lost_dequeue() {
  Scratch& s = scratch();
  if (s.lost_broker != this) return;
  const QueueKeys& k = keys_for(s.lost_queue);
  set_claim_key(s.claim_key, s.lost_queue, id_);
  const std::string_view argv[] = {s.claim_key, k.active, k.lease, k.pending, s.lost_nonce, k.task_prefix};
  const long long n = pool_.acquire()->eval(scripts().reclaim, argv, 4).integer();  // throws: try again later
  if (n > 0) {
    log_.warn("Handed back tasks whose dequeue reply was lost, without counting an attempt",
              {{"queue", s.lost_queue}, {"tasks", static_cast<int64_t>(n)}});
  }
  s.lost_broker = nullptr;
}

void RedisBroker::done_argv(const asynq::TaskMessage& msg, Clock::time_point now,
                            std::vector<std::string_view>& out, size_t& numkeys) {
  // As success_args() without `completed`: KEYS active, lease, task, processed:date, processed,
  // [unique lock]; ARGV id, stats expiry.
  const QueueKeys& k = keys_for(msg.queue);
  Scratch& s = scratch();
  s.task_key.assign(k.task_prefix).append(msg.id);
  s.processed_key.assign(k.processed_prefix).append(s.date_of(unix_s(now)));
  set_number(s.stats_expiry, unix_s(now + settings_.stats_ttl));
  out.clear();
  out.insert(out.end(), {k.active, k.lease, s.task_key, s.processed_key, k.processed_total});
  if (!msg.unique_key.empty()) out.emplace_back(msg.unique_key);
  numkeys = out.size();
  out.emplace_back(msg.id);
  out.emplace_back(s.stats_expiry);
}

namespace {

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

bool RedisBroker::decode_dequeued(const redis::Reply& reply, const std::string& q, Clock::time_point expiry,
                                  std::vector<Dequeued>& out) {
  for (size_t i = 0; i + 1 < reply.size(); i += 2) {
    asynq::TaskMessage msg;
    if (auto bad = check_entry(reply[i].str(), reply[i + 1], q, msg)) {
      set_aside(*bad, scripts().archive);
      continue;
    }
    out.push_back(Dequeued{std::move(msg), expiry});
  }
  return reply.size() > 0;
}

std::vector<Dequeued> RedisBroker::dequeue_batch(const std::vector<std::string>& queues, seconds lease,
                                                 size_t max) {
  std::vector<Dequeued> out;
  if (max == 0) return out;
  std::vector<std::string_view>& argv = scratch().dequeue_argv;
  reclaim_lost_dequeue();
  for (const std::string& q : queues) {
    const Clock::time_point expiry = Clock::now() + lease;
    dequeue_argv(q, expiry, max, argv);
    std::optional<redis::Reply> reply;
    try {
      reply.emplace(call(scripts().dequeue, argv, 5));
    } catch (...) {
      note_lost_dequeue(q, std::current_exception());
      throw;
    }
    if (decode_dequeued(*reply, q, expiry, out)) return out;
  }
  return out;
}

// ---- waiting for work ---------------------------------------------------------------------------

RedisBroker::Waiter& RedisBroker::waiter_for(const std::string& queue) {
  auto& slot = waiters_[queue];
  if (!slot) {
    slot = std::make_unique<Waiter>();
    slot->pending_key = asynq::pending_key(queue);
    Waiter* w = slot.get();
    slot->thread = std::thread([this, w] { waiter_loop(*w); });
  }
  return *slot;
}

void RedisBroker::waiter_loop(Waiter& w) {
  std::unique_lock lock(wait_mu_);
  while (!stopping_) {
    waiter_cv_.wait(lock, [&] { return stopping_ || w.armed_until > Clock::now(); });
    if (stopping_) break;
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(w.armed_until - Clock::now());
    if (remaining.count() <= 0) continue;
    bool got_work = false;
    bool failed = false;
    try {
      if (!w.conn) {
        lock.unlock();
        auto conn = std::make_unique<redis::Connection>(settings_.redis);
        lock.lock();
        w.conn = std::move(conn);
        if (stopping_) break;
      }
      redis::Connection& conn = *w.conn;
      lock.unlock();
      char timeout[32];
      std::snprintf(timeout, sizeof timeout, "%.3f", static_cast<double>(remaining.count()) / 1000.0);
      const std::string_view argv[] = {"BLMOVE", w.pending_key, w.pending_key, "RIGHT", "RIGHT", timeout};
      redis::Reply reply = conn.blocking_command(argv, remaining);
      got_work = !reply.is_nil();
      lock.lock();
    } catch (const redis::Error& e) {
      if (!lock.owns_lock()) lock.lock();
      failed = true;
      if (!stopping_) log_.debug("wait for work failed", {{"key", w.pending_key}, {"error", e.what()}});
    }
    if (got_work) {
      ++work_signals_;
      w.armed_until = {};
      work_cv_.notify_all();
    } else if (failed && !stopping_) {
      // Redis away: do not spin; callers fall back to their own timeout.
      waiter_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
    }
  }
}

bool RedisBroker::wait_for_work(const std::vector<std::string>& queues, std::chrono::milliseconds timeout) {
  // Paused queues are not waited on: BLMOVE would return at once for them (spec §6.7).
  std::vector<const std::string*> unpaused;
  {
    auto conn = pool_.acquire();
    for (const std::string& q : queues) conn->append({"EXISTS", asynq::paused_key(q)});
    for (const std::string& q : queues) {
      // An error here (LOADING after a restart) is an outage like any other, not "paused".
      if (conn->read_reply().throw_if_error().integer() == 0) unpaused.push_back(&q);
    }
  }
  std::unique_lock lock(wait_mu_);
  if (wake_pending_) {
    wake_pending_ = false;
    return false;
  }
  const uint64_t start = work_signals_;
  const Clock::time_point until = Clock::now() + timeout;
  for (const std::string* q : unpaused) waiter_for(*q).armed_until = until;
  waiter_cv_.notify_all();
  work_cv_.wait_until(lock, until, [&] { return work_signals_ != start || wake_pending_ || stopping_; });
  if (wake_pending_) {
    wake_pending_ = false;
    return false;
  }
  return work_signals_ != start;
}

void RedisBroker::wake() {
  std::lock_guard lock(wait_mu_);
  wake_pending_ = true;
  work_cv_.notify_all();
}

// ---- leases -------------------------------------------------------------------------------------

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

// ---- completions --------------------------------------------------------------------------------

void RedisBroker::complete(const asynq::TaskMessage& msg, const redis::Script& script,
                           std::vector<std::string> keys_and_args, size_t numkeys,
                           const std::vector<task::EnqueueRequest>& followups) {
  if (followups.empty()) {
    try {
      const std::vector<std::string_view> argv = views(keys_and_args);
      call(script, argv, numkeys);
    } catch (const redis::Error& e) {
      rethrow_not_found(e, msg);
    }
    return;
  }
  auto conn = pool_.acquire();
  // Follow-ups go in the same MULTI/EXEC as the completion. MULTI cannot make them conditional on
  // the completion script, so WATCH the task hash (the recoverer and the Inspector rewrite it when
  // they move the task) and check it is still active first.
  const Clock::time_point now = Clock::now();
  std::vector<PreparedEnqueue> prepared;
  prepared.reserve(followups.size());
  for (const auto& request : followups) prepared.push_back(Client::prepare(request, now));
  for (const auto& p : prepared) client_.register_queue(*conn, p.queue);
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
      throw NotFound("task " + msg.id + " is no longer active in queue " + msg.queue);
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
      const std::string why(exec[0].str());
      if (why.starts_with("NOT FOUND"))
        throw NotFound("task " + msg.id + " is no longer active in queue " + msg.queue);
      throw redis::Error(redis::Error::Kind::reply, why);
    }
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

namespace {

// KEYS/ARGV of the success scripts: active, lease, [completed (MarkAsComplete only)], task,
// processed:date, processed, [unique lock, only when the message has one]; ARGV id, stats expiry.
// `numkeys` gets the number of KEYS.
std::vector<std::string> success_args(const asynq::TaskMessage& msg, Clock::time_point now,
                                      bool with_completed, seconds stats_ttl, size_t& numkeys) {
  const std::string& q = msg.queue;
  std::vector<std::string> ka{asynq::active_key(q), asynq::lease_key(q)};
  if (with_completed) ka.push_back(asynq::completed_key(q));
  ka.push_back(asynq::task_key(q, msg.id));
  ka.push_back(asynq::processed_key(q, asynq::utc_date(unix_s(now))));
  ka.push_back(asynq::processed_total_key(q));
  if (!msg.unique_key.empty()) ka.push_back(msg.unique_key);
  numkeys = ka.size();
  ka.push_back(msg.id);
  ka.push_back(str(unix_s(now + stats_ttl)));
  return ka;
}

// success_args plus the MarkAsComplete ARGV: keep-until and the message with completed_at.
std::vector<std::string> mark_complete_args(const asynq::TaskMessage& msg, Clock::time_point now,
                                            seconds stats_ttl, size_t& numkeys) {
  asynq::TaskMessage completed = msg;
  completed.completed_at = unix_s(now);
  std::vector<std::string> ka = success_args(msg, now, true, stats_ttl, numkeys);
  // retention comes off the wire (any int64): saturate instead of overflowing (UB) past MaxInt64.
  const int64_t now_s = unix_s(now);
  const int64_t keep_until = msg.retention > std::numeric_limits<int64_t>::max() - now_s
                                 ? std::numeric_limits<int64_t>::max()
                                 : now_s + msg.retention;
  ka.push_back(str(keep_until));
  ka.push_back(asynq::encode(completed));
  return ka;
}

}  // namespace

void RedisBroker::done(const asynq::TaskMessage& msg, const std::vector<task::EnqueueRequest>& followups) {
  size_t numkeys = 0;
  if (followups.empty()) {
    std::vector<std::string_view>& argv = scratch().write_argv;
    done_argv(msg, Clock::now(), argv, numkeys);
    try {
      call(scripts().done, argv, numkeys);
    } catch (const redis::Error& e) {
      rethrow_not_found(e, msg);
    }
    return;
  }
  std::vector<std::string> ka = success_args(msg, Clock::now(), false, settings_.stats_ttl, numkeys);
  complete(msg, scripts().done, std::move(ka), numkeys, followups);
}

void RedisBroker::mark_complete(const asynq::TaskMessage& msg,
                                const std::vector<task::EnqueueRequest>& followups) {
  size_t numkeys = 0;
  std::vector<std::string> ka = mark_complete_args(msg, Clock::now(), settings_.stats_ttl, numkeys);
  complete(msg, scripts().mark_complete, std::move(ka), numkeys, followups);
}

namespace {

// The layout shared by the failure scripts (retry, archive and their orphan forms): KEYS active,
// lease, <target>, task, processed:date, failed:date, processed, failed; ARGV id, modified msg.
// The message gets the error text and last_failed_at; `retried` goes up only if asked (§6.11,
// never for archive, §6.12).
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

// KEYS/ARGV of the retry script (and of recover_orphan_retry).
struct RetryArgs {
  static constexpr size_t kNumKeys = 8;
  std::string v[13];
  RetryArgs(const asynq::TaskMessage& msg, Clock::time_point now, Clock::time_point retry_at,
            const std::string& error, bool is_failure, seconds stats_ttl) {
    fill_failure_args(v, msg, now, asynq::retry_key(msg.queue), error, is_failure);
    v[10] = str(unix_s(retry_at));
    v[11] = str(unix_s(now + stats_ttl));
    v[12].push_back(is_failure ? '1' : '0');  // (a char: GCC 12 -Wrestrict false positive on "1"/"0")
  }
};

// KEYS/ARGV of the archive script (and of recover_orphan_archive).
struct ArchiveArgs {
  static constexpr size_t kNumKeys = 8;
  std::string v[15];
  ArchiveArgs(const asynq::TaskMessage& msg, Clock::time_point now, const std::string& error,
              const RedisBrokerSettings& settings) {
    fill_failure_args(v, msg, now, asynq::archived_key(msg.queue), error,
                      false);  // retried unchanged (§6.12)
    v[10] = str(unix_s(now));
    v[11] = str(unix_s(now - settings.archive_max_age));
    v[12] = std::to_string(settings.archive_max_size);
    v[13] = str(unix_s(now + settings.stats_ttl));
    v[14] = asynq::task_key_prefix(msg.queue);
  }
};

template <size_t N>
std::array<std::string_view, N> views_of(const std::string (&v)[N]) {
  std::array<std::string_view, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = v[i];
  return out;
}

}  // namespace

void RedisBroker::retry(const asynq::TaskMessage& msg, Clock::time_point retry_at, const std::string& error,
                        bool is_failure) {
  const RetryArgs args(msg, Clock::now(), retry_at, error, is_failure, settings_.stats_ttl);
  const auto argv = views_of(args.v);
  try {
    call(scripts().retry, argv, RetryArgs::kNumKeys);
  } catch (const redis::Error& e) {
    rethrow_not_found(e, msg);
  }
}

void RedisBroker::archive(const asynq::TaskMessage& msg, const std::string& error) {
  const ArchiveArgs args(msg, Clock::now(), error, settings_);
  const auto argv = views_of(args.v);
  try {
    call(scripts().archive, argv, ArchiveArgs::kNumKeys);
  } catch (const redis::Error& e) {
    rethrow_not_found(e, msg);
  }
}

void RedisBroker::set_aside(const Malformed& bad, const redis::Script& archive_script) {
  const log::Fields where{{"queue", bad.archived.queue}, {"task_id", bad.archived.id}};
  try {
    const ArchiveArgs args(bad.archived, Clock::now(), bad.reason, settings_);
    const auto argv = views_of(args.v);
    pool_.acquire()->eval(archive_script, argv, ArchiveArgs::kNumKeys);
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

const redis::Script* RedisBroker::write_call_args(const OutcomeWrite& w, Clock::time_point now,
                                                  std::vector<std::string_view>& argv,
                                                  std::vector<std::string>& storage, size_t& numkeys) {
  switch (w.op) {
    case OutcomeWrite::Op::done:
      done_argv(*w.msg, now, argv, numkeys);
      return &scripts().done;
    case OutcomeWrite::Op::mark_complete:
      storage = mark_complete_args(*w.msg, now, settings_.stats_ttl, numkeys);
      argv.assign(storage.begin(), storage.end());
      return &scripts().mark_complete;
    case OutcomeWrite::Op::retry: {
      RetryArgs args(*w.msg, now, w.retry_at, w.error, w.is_failure, settings_.stats_ttl);
      storage.assign(std::make_move_iterator(std::begin(args.v)), std::make_move_iterator(std::end(args.v)));
      argv.assign(storage.begin(), storage.end());
      numkeys = RetryArgs::kNumKeys;
      return &scripts().retry;
    }
    case OutcomeWrite::Op::archive: {
      ArchiveArgs args(*w.msg, now, w.error, settings_);
      storage.assign(std::make_move_iterator(std::begin(args.v)), std::make_move_iterator(std::end(args.v)));
      argv.assign(storage.begin(), storage.end());
      numkeys = ArchiveArgs::kNumKeys;
      return &scripts().archive;
    }
    case OutcomeWrite::Op::requeue:
    case OutcomeWrite::Op::hand_back: {
      storage = requeue_args(*w.msg);
      argv.assign(storage.begin(), storage.end());
      numkeys = 4;
      return w.op == OutcomeWrite::Op::requeue ? &scripts().requeue : &scripts().hand_back;
    }
  }
  throw std::logic_error("unknown outcome write");
}

void RedisBroker::dequeue_after(const OutcomeWrite& w, std::exception_ptr& write_error,
                                const std::vector<std::string>& queues, seconds lease, size_t max,
                                std::vector<Dequeued>& out) {
  out.clear();
  if (w.has_followups() || queues.empty() || max == 0) {
    // Follow-ups need their own WATCH/MULTI/EXEC on one connection.
    Broker::dequeue_after(w, write_error, queues, lease, max, out);
    return;
  }
  // The write's KEYS/ARGV, as done() / mark_complete() / retry() / archive() build them.
  std::vector<std::string_view>& write_argv = scratch().write_argv;
  std::vector<std::string> write_args;  // owns the strings of the less frequent writes
  size_t write_numkeys = 0;
  const redis::Script* write_script = nullptr;
  try {
    write_script = write_call_args(w, Clock::now(), write_argv, write_args, write_numkeys);
  } catch (...) {
    // Could not even be built (e.g. an encoding error): nothing was sent; dequeue on its own.
    write_error = std::current_exception();
    out = dequeue_batch(queues, lease, max);
    return;
  }

  try {
    reclaim_lost_dequeue();
  } catch (...) {
    write_error = std::current_exception();  // Redis is away: the write would fail as well
    throw;
  }
  const std::string& first = queues.front();
  const Clock::time_point expiry = Clock::now() + lease;
  std::vector<std::string_view>& dequeue_args = scratch().dequeue_argv;
  dequeue_argv(first, expiry, max, dequeue_args);

  Call write_call{write_script, write_argv, write_numkeys};
  Call dequeue_call{&scripts().dequeue, dequeue_args, 5};
  Call* both[] = {&write_call, &dequeue_call};
  submit(both);

  if (write_call.error) {
    try {
      try {
        std::rethrow_exception(write_call.error);
      } catch (const redis::Error& e) {
        rethrow_not_found(e, *w.msg);
      }
    } catch (...) {
      write_error = std::current_exception();
    }
  }
  if (dequeue_call.error) {
    note_lost_dequeue(first, dequeue_call.error);
    std::rethrow_exception(dequeue_call.error);
  }
  if (decode_dequeued(*dequeue_call.reply, first, expiry, out)) return;
  // The first queue had nothing: the others as dequeue_batch() does.
  if (queues.size() > 1) {
    const std::vector<std::string> rest(queues.begin() + 1, queues.end());
    out = dequeue_batch(rest, lease, max);
  }
}

OrphanRecovery RedisBroker::recover_orphan(const asynq::TaskMessage& msg,
                                           std::optional<Clock::time_point> retry_at,
                                           const std::string& error) {
  const Clock::time_point now = Clock::now();
  auto conn = pool_.acquire();
  try {
    if (retry_at) {
      const RetryArgs args(msg, now, *retry_at, error, true, settings_.stats_ttl);
      const auto argv = views_of(args.v);
      conn->eval(scripts().recover_orphan_retry, argv, RetryArgs::kNumKeys);
    } else {
      const ArchiveArgs args(msg, now, error, settings_);
      const auto argv = views_of(args.v);
      conn->eval(scripts().recover_orphan_archive, argv, ArchiveArgs::kNumKeys);
    }
  } catch (const redis::Error& e) {
    if (e.is_reply() && std::string_view(e.what()).starts_with("LEASED")) return OrphanRecovery::leased;
    if (e.is_reply() && std::string_view(e.what()).starts_with("NOT FOUND"))
      return OrphanRecovery::not_active;
    throw;
  }
  return OrphanRecovery::recovered;
}

// KEYS[1] -> active, KEYS[2] -> lease, KEYS[3] -> pending, KEYS[4] -> task; ARGV[1] -> id
// (requeue and hand_back).
std::vector<std::string> RedisBroker::requeue_args(const asynq::TaskMessage& msg) {
  const std::string& q = msg.queue;
  return {asynq::active_key(q), asynq::lease_key(q), asynq::pending_key(q), asynq::task_key(q, msg.id),
          msg.id};
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

void RedisBroker::requeue(const asynq::TaskMessage& msg) { requeue_with(scripts().requeue, msg); }

void RedisBroker::hand_back(const asynq::TaskMessage& msg) { requeue_with(scripts().hand_back, msg); }

void RedisBroker::requeue_with(const redis::Script& script, const asynq::TaskMessage& msg) {
  const auto keys_and_args = requeue_args(msg);
  const std::vector<std::string_view> argv(keys_and_args.begin(), keys_and_args.end());
  try {
    call(script, argv, 4);
  } catch (const redis::Error& e) {
    rethrow_not_found(e, msg);
  }
}

void RedisBroker::write_result(const std::string& queue, const std::string& id, std::string_view data) {
  pool_.acquire()->command({"HSET", asynq::task_key(queue, id), "result", data});
}

// ---- forwarder, recoverer, janitor --------------------------------------------------------------

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
      const std::vector<std::string_view> argv(std::begin(keys_and_args), std::end(keys_and_args));
      const long long n = conn->eval(scripts().forward, argv, 2).integer();
      moved += static_cast<int>(n);
      if (n == 0) break;
    }
  }
  return moved;
}

std::vector<asynq::TaskMessage> RedisBroker::list_lease_expired(const std::vector<std::string>& queues,
                                                                Clock::time_point cutoff) {
  std::vector<asynq::TaskMessage> out;
  auto conn = pool_.acquire();
  for (const std::string& q : queues) {
    const std::string keys_and_args[] = {asynq::lease_key(q), str(unix_s(cutoff)), asynq::task_key_prefix(q)};
    const std::vector<std::string_view> argv(std::begin(keys_and_args), std::end(keys_and_args));
    redis::Reply reply = conn->eval(scripts().list_lease_expired, argv, 1);
    decode_listed(reply, q, scripts().archive, out);
  }
  return out;
}

// asynq fails the whole listing on one undecodable message, which blocks recovery of every queue
// the server serves (spec §4.7). We archive what cannot be served instead (as dequeue does), and
// every other task is still recovered.
void RedisBroker::decode_listed(const redis::ReplyView& reply, const std::string& queue,
                                const redis::Script& archive_script, std::vector<asynq::TaskMessage>& out) {
  for (size_t i = 0; i + 1 < reply.size(); i += 2) {
    asynq::TaskMessage msg;
    if (auto bad = check_entry(reply[i].str(), reply[i + 1], queue, msg)) {
      set_aside(*bad, archive_script);
      continue;
    }
    out.push_back(std::move(msg));
  }
}

std::vector<asynq::TaskMessage> RedisBroker::list_active_without_lease(const std::string& queue) {
  std::vector<asynq::TaskMessage> out;
  const std::string keys_and_args[] = {asynq::active_key(queue), asynq::lease_key(queue),
                                       asynq::task_key_prefix(queue)};
  const std::vector<std::string_view> argv(std::begin(keys_and_args), std::end(keys_and_args));
  redis::Reply reply = pool_.acquire()->eval(scripts().list_active_without_lease, argv, 2);
  decode_listed(reply, queue, scripts().recover_orphan_archive, out);
  return out;
}

int RedisBroker::delete_expired_completed(const std::string& queue, int batch) {
  auto conn = pool_.acquire();
  int deleted = 0;
  for (;;) {
    const std::string keys_and_args[] = {asynq::completed_key(queue), str(unix_s(Clock::now())),
                                         asynq::task_key_prefix(queue), std::to_string(batch)};
    const std::vector<std::string_view> argv(std::begin(keys_and_args), std::end(keys_and_args));
    const long long n = conn->eval(scripts().delete_expired_completed, argv, 1).integer();
    deleted += static_cast<int>(n);
    if (n == 0) return deleted;
  }
}

// ---- server state -------------------------------------------------------------------------------

void RedisBroker::write_server_state(const asynq::ServerInfo& info,
                                     const std::vector<asynq::WorkerInfo>& workers, seconds ttl) {
  const std::string server_key = asynq::server_info_key(info.host, info.pid, info.server_id);
  const std::string workers_key = asynq::workers_key(info.host, info.pid, info.server_id);
  const std::string expiry = str(unix_s(Clock::now() + ttl));
  auto conn = pool_.acquire();
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
  conn->eval(scripts().write_server_state, views(keys_and_args), 2);
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
  conn->eval(scripts().clear_server_state, argv, 2);
}

bool RedisBroker::ping() {
  try {
    return pool_.acquire()->command({"PING"}).str() == "PONG";
  } catch (const redis::Error&) {
    return false;
  }
}

}  // namespace wk::queue
