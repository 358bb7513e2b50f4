#include "queue/processor.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "queue/deadline.hpp"

namespace wk::queue {

namespace {

constexpr const char* kDeadlineExceeded = "context deadline exceeded";
constexpr const char* kCanceled = "context canceled";
// How often a worker whose plugins serve nothing looks again (no Redis involved).
constexpr std::chrono::milliseconds kServingCheckInterval{2000};
// The longest pause after a round whose tasks were all parked or handed back (types at their
// limits fill the queue): the loop does not spin on them, and other types still come through.
constexpr std::chrono::milliseconds kMaxSpillBackoff{1000};
// This machine's queue (Settings::host_queue) leads every order, but a round trip carries one
// queue's dequeue: the others cost a round trip each when it is empty. So once it was found empty
// it goes last, and first again at most this much later (or when it gave tasks).
constexpr std::chrono::milliseconds kHostQueueRecheck{100};
// A round waits for the batch-mates of an outcome that came (the other attempts of the same
// flush) only when remote attempts take less than this, and never longer: long tasks finish
// apart anyway, and their outcomes go at once.
constexpr std::chrono::microseconds kCoalesceMax{150};
// ... and only until this many slots are free: a round's fixed costs (its round trip, one script
// call per queue for the successes, one dequeue) shared by this many tasks are a small part of
// each task's, and waiting for more would leave slots idle that a round could fill.
constexpr size_t kCoalesceTarget = 4;

// What a running handler may do besides watching its cancellation (task::TaskServices).
class AttemptServices final : public task::TaskServices {
 public:
  AttemptServices(EngineContext& ctx, InFlightTask& t) : ctx_(ctx), t_(t) {}

  bool write_result(std::string_view data) override {
    const auto now = Clock::now();
    // Go's ResultWriter refuses once the context is done (§6.18); so do we, and also once the
    // local lease is gone (the task may already run elsewhere).
    if (t_.cancellation.cancelled() || now >= t_.task.deadline || !t_.lease_valid(now)) {
      ctx_.task_log(t_.task).warn("Cannot write the task result: the attempt is over");
      return false;
    }
    const auto started = SteadyClock::now();
    try {
      ctx_.broker.write_result(t_.task.queue, t_.task.id, data);
      ctx_.health.succeeded(started);
      return true;
    } catch (const std::exception& e) {
      ctx_.health.failed("write_result", e);
      ctx_.task_log(t_.task).warn("Cannot write the task result", {{"error", e.what()}});
      return false;
    }
  }
  void heartbeat(const task::Progress& progress) override { t_.set_progress(progress); }

 private:
  EngineContext& ctx_;
  InFlightTask& t_;
};

}  // namespace

// One attempt started through Dispatcher::start. start_remote gives up its ownership once the
// dispatcher has taken the attempt; finished() takes it back, so it lives exactly as long as the
// dispatcher may use the Execution.
struct Processor::RemoteAttempt final : task::AttemptCompletion {
  RemoteAttempt(Processor& p, std::shared_ptr<InFlightTask> task)
      : processor(p),
        t(std::move(task)),
        services(p.ctx_, *t),
        execution{t->task, t->cancellation, services, staged} {}
  void finished(task::Outcome outcome) override {
    const std::unique_ptr<RemoteAttempt> self(this);
    processor.finish_remote(*this, outcome);
  }
  task::OutcomeBurstListener* burst_listener() override {
    burst_follows = true;
    return &processor.burst_listener_;
  }

  Processor& processor;
  const std::shared_ptr<InFlightTask> t;
  AttemptServices services;
  std::vector<task::EnqueueRequest> staged;
  task::Execution execution;
  DeadlineTimer::Handle deadline;
  SteadyClock::time_point started;
  uint64_t generation = 0;     // the flush it went out with
  bool burst_follows = false;  // the dispatcher calls burst_over() after finished(): no wake here
};

DeadlineTimer::DeadlineTimer(std::chrono::milliseconds grace, OverrunFn overrun)
    : grace_(grace), overrun_(std::move(overrun)), thread_([this] { run(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

DeadlineTimer::Handle DeadlineTimer::add(Clock::time_point deadline, const std::shared_ptr<InFlightTask>& t) {
  std::lock_guard lock(mu_);
  const Handle h{deadline, next_seq_++};
  due_.emplace(h, Due{t, false});
  // Wake the timer only when it sleeps past this deadline (not once per task: with the default
  // 30 min deadlines it would wake at every dequeue).
  if (deadline < waiting_until_) cv_.notify_all();
  return h;
}

void DeadlineTimer::remove(Handle h) {
  std::lock_guard lock(mu_);
  due_.erase(h);                                   // before the deadline
  due_.erase(Handle{h.first + grace_, h.second});  // after it: the overrun check
}

void DeadlineTimer::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (due_.empty()) {
      waiting_until_ = Clock::time_point::max();
      cv_.wait(lock);
      continue;
    }
    const auto next = due_.begin()->first.first;
    if (Clock::now() < next) {
      waiting_until_ = next;
      cv_.wait_until(lock, next);
      continue;
    }
    waiting_until_ = Clock::time_point::min();  // firing: no wake-up needed
    std::vector<std::shared_ptr<InFlightTask>> cancel;
    std::vector<std::shared_ptr<InFlightTask>> overran;
    const auto now = Clock::now();
    while (!due_.empty() && due_.begin()->first.first <= now) {
      const Handle h = due_.begin()->first;
      const bool was_cancelled = due_.begin()->second.cancelled;
      std::shared_ptr<InFlightTask> t = due_.begin()->second.task.lock();
      due_.erase(due_.begin());
      if (!t) continue;
      if (was_cancelled) {
        overran.push_back(std::move(t));
      } else {
        due_.emplace(Handle{h.first + grace_, h.second}, Due{t, true});  // the overrun check
        cancel.push_back(std::move(t));
      }
    }
    // Outside the lock: cancellation callbacks and the overrun write take other locks.
    lock.unlock();
    for (auto& t : cancel) t->cancellation.cancel(task::CancelReason::deadline);
    for (auto& t : overran) overrun_(t);
    lock.lock();
  }
}

Processor::Processor(EngineContext& ctx, Syncer& syncer, int slots, int parked_max, unsigned waker)
    : ctx_(ctx),
      writes_(ctx, syncer),
      slots_(std::max(1, slots)),
      waker_(waker),
      parked_max_(static_cast<size_t>(std::max(0, parked_max))),
      timer_(ctx.settings.deadline_grace, [this](const std::shared_ptr<InFlightTask>& t) { overrun(t); }) {}

Processor::~Processor() {
  stop_fetching();
  if (loop_thread_.joinable()) loop_thread_.join();
  for (auto& th : handler_threads_) {
    if (th.joinable()) th.join();
  }
}

void Processor::start() {
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  const auto n = static_cast<unsigned>(slots_);
  {
    std::lock_guard lock(mu_);
    live_handlers_ = n;
    loop_running_ = true;
  }
  for (unsigned i = 0; i < n; ++i) handler_threads_.emplace_back([this] { handler_loop(); });
  loop_thread_ = std::thread([this] { loop(); });
}

void Processor::permit_released() {
  if (parked_count_.load() > 0) wake_loop(true);
}

void Processor::stop_fetching() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  loop_cv_.notify_all();
  handler_cv_.notify_all();
  ctx_.broker.wake(waker_);
}

bool Processor::join_until(SteadyClock::time_point until) {
  std::unique_lock lock(mu_);
  if (!exited_cv_.wait_until(lock, until, [&] { return live_handlers_ == 0 && !loop_running_; }))
    return false;
  lock.unlock();
  if (loop_thread_.joinable()) loop_thread_.join();
  for (auto& th : handler_threads_) {
    if (th.joinable()) th.join();
  }
  return true;
}

bool Processor::healthy() const {
  // The loop ticks at least every wait_timeout while it waits for work; handler threads busy
  // with long tasks don't need it, so only "nobody fetching and nobody running" is unhealthy.
  const auto last = SteadyClock::time_point(SteadyClock::duration(last_tick_.load()));
  const bool fetched_recently =
      SteadyClock::now() - last <= 3 * ctx_.settings.wait_timeout + std::chrono::seconds(5);
  return fetched_recently || ctx_.inflight.size() > 0;
}

// ---- the loop -----------------------------------------------------------------------------------

void Processor::loop() {
  int empty_after_signal = 0;  // "work may be there" but the dequeue found none (paused queue?)
  while (true) {
    await_round();
    {
      std::lock_guard lock(mu_);
      if (finished()) break;
    }
    const RoundResult r = round();
    if (r.got) empty_after_signal = 0;
    switch (r.then) {
      case RoundResult::Then::next:
        break;
      case RoundResult::Then::pause:
        pause(r.pause);
        break;
      case RoundResult::Then::wait_for_work:
        if (!idle_wait(r.parked_retry)) {
          empty_after_signal = 0;
        } else if (empty_after_signal++ > 0) {
          // Another host may have taken the task, or the queue with work is paused: then the wait
          // keeps answering "maybe" at once. Back off exponentially so that never spins.
          pause(std::min(ctx_.settings.wait_timeout,
                         std::chrono::milliseconds(1) * (1 << std::min(empty_after_signal, 10))));
        }
        break;
    }
  }
  std::lock_guard lock(mu_);
  loop_running_ = false;
  exited_cv_.notify_all();
}

void Processor::await_round() {
  if (!ctx_.dispatcher.serving()) {
    // No plugin serves anything (all refused, or still loading): take nothing, so the workers
    // that can run the tasks get them (docs/queue-engine.md); outcomes are still written.
    pause(std::min(ctx_.settings.wait_timeout, kServingCheckInterval));
    return;
  }
  std::unique_lock lock(mu_);
  // A stop with tasks parked needs the loop too: they go back to their queues at once.
  loop_cv_.wait(lock, [&] {
    return signalled_ || finished() || (!stopping_ && free_slots() > 0) ||
           (stopping_ && parked_count_.load() > 0);
  });
  // The attempts of one flush come back a few tens of microseconds apart: a round that waits
  // for all of them carries their writes in one script call and refills their slots in one
  // dequeue, where rounds at once would carry one each.
  if (const auto until = coalesce_until(); until != SteadyClock::time_point::max()) {
    loop_coalescing_ = true;
    loop_cv_.wait_until(lock, until, [&] { return coalesced(); });
    loop_coalescing_ = false;
  }
}

bool Processor::coalesced() const {
  return stopping_ || batch_outstanding_ == 0 || free_slots() >= kCoalesceTarget;
}

SteadyClock::time_point Processor::coalesce_until() const {
  constexpr auto never = SteadyClock::time_point::max();
  if (coalesced() || remote_latency_.count() == 0 || remote_latency_ > kCoalesceMax) return never;
  const auto until =
      batch_flushed_at_ + std::min<std::chrono::nanoseconds>(kCoalesceMax, remote_latency_ * 3 / 2);
  return until > SteadyClock::now() ? until : never;
}

size_t Processor::free_slots() const {
  // A slot is an idle handler thread that neither a waiting task nor a remote attempt holds.
  const size_t taken = ready_.size() + remote_slots_;
  return idle_ - std::min(idle_, taken);
}

Processor::RoundResult Processor::round() {
  RoundState& s = round_;
  RoundResult r;
  const bool serving = ctx_.dispatcher.serving();
  size_t want = 0;
  {
    std::lock_guard lock(mu_);
    signalled_ = false;
    if (!stopping_ && serving) want = free_slots();
  }
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  if (!parked_.empty()) want -= tend_parked(want);
  if (want == 0) {
    writes_.send_now();
    return r;
  }
  ctx_.order.next(s.rng, s.order);
  const std::string& host_queue = ctx_.settings.host_queue;
  const bool host_leads = !host_queue.empty() && s.order.size() > 1;  // QueueOrder puts it first
  const bool host_first = host_leads && SteadyClock::now() >= s.host_queue_first_again;
  if (host_leads && !host_first) std::rotate(s.order.begin(), s.order.begin() + 1, s.order.end());
  const auto sent = SteadyClock::now();
  try {
    writes_.send_with_dequeue(s.order, ctx_.settings.lease, want, s.got);
    ctx_.health.succeeded(sent);
    s.error_backoff = std::chrono::milliseconds(0);
  } catch (const std::exception& e) {
    ctx_.health.failed("dequeue", e);
    s.error_backoff =
        std::min(ctx_.settings.redis_backoff, std::max(std::chrono::milliseconds(10), s.error_backoff * 2));
    r.then = RoundResult::Then::pause;
    r.pause = s.error_backoff;
    return r;
  }
  if (host_first) {
    const bool from_host =
        std::any_of(s.got.begin(), s.got.end(), [&](const Dequeued& d) { return d.msg.queue == host_queue; });
    if (!from_host) s.host_queue_first_again = SteadyClock::now() + kHostQueueRecheck;
  }
  if (s.got.empty()) {
    r.then = RoundResult::Then::wait_for_work;
    r.parked_retry = next_parked_retry();
    r.full = false;
    return r;
  }
  r.got = true;
  r.full = s.got.size() >= want;
  if (hand_out(s.got) > 0) {
    s.spill_backoff = std::chrono::milliseconds(0);
    return r;
  }
  // Every task of the round was parked or handed back: its queues are full of types at their
  // limits. Look again later (sooner when a parked task may go), not at once.
  s.spill_backoff = std::min(kMaxSpillBackoff, std::max(std::chrono::milliseconds(10), s.spill_backoff * 2));
  r.then = RoundResult::Then::pause;
  r.pause = s.spill_backoff;
  if (const auto next = next_parked_retry(); next != Clock::time_point::max()) {
    r.pause = std::clamp(std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()),
                         std::chrono::milliseconds(1), r.pause);
  }
  return r;
}

void Processor::outcomes_delivered(size_t outcomes) {
  bool waits = false;
  {
    std::lock_guard lock(mu_);
    waits = loop_coalescing_ && !coalesced();  // it waits for the rest (or its deadline)
  }
  if (!waits) wake_loop(true);
  // Last: once nothing is owed, a stopping loop may finish and the processor go.
  std::lock_guard lock(mu_);
  bursts_owed_ -= std::min(bursts_owed_, outcomes);
  if (stopping_) loop_cv_.notify_one();
}

size_t Processor::hand_out(std::vector<Dequeued>& got) {
  std::vector<std::shared_ptr<InFlightTask>> runnable;
  runnable.reserve(got.size());
  for (Dequeued& d : got) {
    // Registered at once: the heartbeat extends (and a shutdown requeues) a task from the moment
    // it left pending.
    std::shared_ptr<InFlightTask> t = admit(std::move(d));
    if (const auto it = parked_by_type_.find(t->task.type); it != parked_by_type_.end()) {
      // Behind the parked tasks of its type: their turn first.
      FlowControl::Admission behind;
      behind.retry_at = Clock::now();
      park_or_hand_back(t, behind);
      continue;
    }
    const FlowControl::Admission admission = ctx_.flow.try_admit(*t);
    if (admission.admitted) {
      runnable.push_back(std::move(t));
    } else {
      park_or_hand_back(t, admission);
    }
  }
  got.clear();
  start_tasks(runnable);
  return runnable.size();
}

void Processor::start_tasks(std::vector<std::shared_ptr<InFlightTask>>& tasks) {
  if (tasks.empty()) return;
  // Remote attempts are started here, all before one flush: their start frames go out together.
  size_t remote = 0;
  size_t waiting = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (start_remote(tasks[i])) {
      ++remote;
    } else {
      if (waiting != i) tasks[waiting] = std::move(tasks[i]);  // kept for the handler threads
      ++waiting;
    }
  }
  if (remote > 0) {
    ctx_.dispatcher.flush_started();
    std::lock_guard lock(mu_);
    ++flush_generation_;
    batch_outstanding_ = building_outstanding_;
    building_outstanding_ = 0;
    batch_flushed_at_ = SteadyClock::now();
  }
  if (waiting > 0) {
    {
      std::lock_guard lock(mu_);
      for (size_t i = 0; i < waiting; ++i) ready_.push_back(std::move(tasks[i]));
    }
    if (waiting == 1) {
      handler_cv_.notify_one();
    } else {
      handler_cv_.notify_all();
    }
  }
  tasks.clear();
}

// ---- remote attempts ----------------------------------------------------------------------------

bool Processor::start_remote(const std::shared_ptr<InFlightTask>& t) {
  const task::Task& tk = t->task;
  // What execute() settles without a handler (requeued by a shutdown, due already, no plugin for
  // its type) stays with the handler threads.
  if (t->settled.load() || tk.deadline <= Clock::now() || !ctx_.dispatcher.handles(tk.type)) return false;
  auto attempt = std::make_unique<RemoteAttempt>(*this, t);
  t->started = true;
  t->remote = true;
  t->holds_remote_slot = true;
  attempt->started = SteadyClock::now();
  {
    std::lock_guard lock(mu_);
    ++remote_slots_;
    ++remote_outstanding_;
    attempt->generation = flush_generation_ + 1;
    ++building_outstanding_;
  }
  attempt->deadline = timer_.add(tk.deadline, t);
  if (!ctx_.dispatcher.start(attempt->execution, *attempt)) {
    timer_.remove(attempt->deadline);
    t->started = false;
    t->remote = false;
    t->holds_remote_slot = false;
    std::lock_guard lock(mu_);
    --remote_slots_;
    --remote_outstanding_;
    --building_outstanding_;
    return false;
  }
  (void)attempt.release();  // RemoteAttempt::finished owns it now
  // The in-flight gauge only adds and subtracts: reported after the start, it still balances an
  // outcome that came first.
  if (ctx_.observer != nullptr) ctx_.observer->task_started(tk.type, tk.queue);
  if (ctx_.log.enabled(log::Level::debug)) ctx_.task_log(tk).debug("Processing task");
  return true;
}

void Processor::finish_remote(RemoteAttempt& attempt, const task::Outcome& outcome) {
  const std::shared_ptr<InFlightTask>& t = attempt.t;
  timer_.remove(attempt.deadline);
  ctx_.flow.release(*t);
  const bool deferred = finish(t, outcome, std::move(attempt.staged), true);
  if (!deferred) ctx_.inflight.remove(t);
  {
    std::lock_guard lock(mu_);
    if (t->holds_remote_slot.exchange(false)) --remote_slots_;
    --remote_outstanding_;
    const auto took = SteadyClock::now() - attempt.started;
    remote_latency_ = remote_latency_.count() == 0 ? took : (7 * remote_latency_ + took) / 8;
    if (attempt.generation == flush_generation_ && batch_outstanding_ > 0) {
      --batch_outstanding_;
    } else if (attempt.generation > flush_generation_ && building_outstanding_ > 0) {
      --building_outstanding_;  // came before its flush was counted
    }
    if (attempt.burst_follows) {  // outcomes_delivered() sees to the round, once for the burst
      signalled_ = signalled_ || deferred;
      ++bursts_owed_;
      return;
    }
  }
  wake_loop(deferred);  // a slot to fill, perhaps a write to send, or the last one of a stop
}

void Processor::release_remote_slot(InFlightTask& t) {
  {
    std::lock_guard lock(mu_);
    if (t.holds_remote_slot.exchange(false)) --remote_slots_;
  }
  wake_loop(false);
}

// ---- parking ------------------------------------------------------------------------------------

void Processor::park_or_hand_back(const std::shared_ptr<InFlightTask>& t,
                                  const FlowControl::Admission& refused) {
  if (t->task.deadline <= Clock::now()) {
    // Due already (an absolute deadline that passed in the queue): failed now, as execute()
    // would, rather than parked for the deadline timer.
    t->cancellation.cancel(task::CancelReason::deadline);
    if (!finish(t, task::Outcome{task::Disposition::cancelled, kDeadlineExceeded, {}, {}}, {}, true))
      ctx_.inflight.remove(t);
    return;
  }
  if (parked_.size() >= parked_max_) {
    if (ctx_.log.enabled(log::Level::debug)) {
      ctx_.task_log(t->task).debug("Handing a task at its type's limit back to its queue (parking full)",
                                   {{"parked", static_cast<int64_t>(parked_.size())}});
    }
    give_back(t, OutcomeWrite::Op::hand_back);
    return;
  }
  ParkedTask p;
  p.task = t;
  p.retry_at = refused.retry_at;
  // Its deadline and its cancellation wake the loop, which ends it (tend_parked).
  p.deadline = timer_.add(t->task.deadline, t);
  p.cancel_token = t->cancellation.on_cancel([this](task::CancelReason) { wake_loop(true); });
  ++parked_by_type_[t->task.type];
  parked_.push_back(std::move(p));
  parked_count_.store(parked_.size());
  ctx_.flow.parked(t->task.type, refused.reason, refused.limit);
}

void Processor::unpark(ParkedTask& p) {
  timer_.remove(p.deadline);
  if (p.cancel_token != 0) p.task->cancellation.remove(p.cancel_token);
  const auto it = parked_by_type_.find(p.task->task.type);
  if (it != parked_by_type_.end() && --it->second == 0) parked_by_type_.erase(it);
  ctx_.flow.unparked(p.task->task.type);
}

size_t Processor::tend_parked(size_t want) {
  const auto now = Clock::now();
  bool stopping = false;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
  }
  if (const uint64_t releases = ctx_.flow.local_releases(); releases != seen_local_releases_) {
    seen_local_releases_ = releases;
    for (auto& p : parked_) {
      if (p.retry_at == Clock::time_point::max()) p.retry_at = now;
    }
  }
  std::vector<std::shared_ptr<InFlightTask>> runnable;
  std::set<std::string, std::less<>> waiting;  // types whose earlier parked task waits: theirs too
  for (auto it = parked_.begin(); it != parked_.end();) {
    const std::shared_ptr<InFlightTask> t = it->task;
    if (t->settled.load()) {  // a shutdown requeued it
      unpark(*it);
      it = parked_.erase(it);
      ctx_.inflight.remove(t);
      continue;
    }
    if (t->cancellation.cancelled()) {  // by asynq's cancel, its deadline, a lost lease or a shutdown
      unpark(*it);
      it = parked_.erase(it);
      if (!finish(t, task::Outcome{task::Disposition::cancelled, "", {}, {}}, {}, true))
        ctx_.inflight.remove(t);
      continue;
    }
    if (stopping) {  // not started: back to the front of its queue, as a shutdown requeue
      unpark(*it);
      it = parked_.erase(it);
      give_back(t, OutcomeWrite::Op::requeue);
      continue;
    }
    if (runnable.size() >= want || it->retry_at > now || waiting.count(t->task.type) != 0) {
      waiting.insert(t->task.type);
      ++it;
      continue;
    }
    const FlowControl::Admission admission = ctx_.flow.try_admit(*t);
    if (!admission.admitted) {
      it->retry_at = admission.retry_at;
      waiting.insert(t->task.type);
      ++it;
      continue;
    }
    unpark(*it);
    it = parked_.erase(it);
    runnable.push_back(t);
  }
  parked_count_.store(parked_.size());
  const size_t started = runnable.size();
  start_tasks(runnable);
  return started;
}

void Processor::give_back(const std::shared_ptr<InFlightTask>& t, OutcomeWrite::Op op) {
  if (!t->settle()) {  // a shutdown requeued it meanwhile
    ctx_.inflight.remove(t);
    return;
  }
  OutcomeWrite w;
  w.op = op;
  w.msg = &t->msg;
  const char* name = op == OutcomeWrite::Op::requeue ? "requeue" : "hand_back";
  if (!write(t, TaskResult::requeued, name, std::move(w), {}, false, true)) ctx_.inflight.remove(t);
}

Clock::time_point Processor::next_parked_retry() const {
  Clock::time_point next = Clock::time_point::max();
  for (const auto& p : parked_) next = std::min(next, p.retry_at);
  return next;
}

bool Processor::idle_wait(Clock::time_point until) {
  loop_waiting_for_work_ = true;
  bool maybe = false;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (signalled_ || stopping_) break;
    }
    auto timeout = ctx_.settings.wait_timeout;
    if (until != Clock::time_point::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) break;  // a parked task may go now
      timeout = std::min(timeout, left);
    }
    const auto started = SteadyClock::now();
    try {
      maybe = ctx_.broker.wait_for_work(ctx_.order.names(), timeout, waker_);
      ctx_.health.succeeded(started);
    } catch (const std::exception& e) {
      ctx_.health.failed("wait_for_work", e);
      pause(ctx_.settings.redis_backoff);
      break;
    }
    last_tick_ = SteadyClock::now().time_since_epoch().count();
    // A wait that ran out found no work: wait again rather than ask for it. The blocking wait
    // misses nothing (BLMOVE returns at once for a list that filled meanwhile), so an idle
    // worker costs Redis one BLMOVE per queue per wait_timeout, not a dequeue round.
    if (maybe) break;
  }
  loop_waiting_for_work_ = false;
  return maybe;
}

void Processor::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  loop_cv_.wait_for(lock, d, [&] { return stopping_ || signalled_; });
}

void Processor::wake_loop(bool has_write) {
  {
    std::lock_guard lock(mu_);
    signalled_ = signalled_ || has_write;
  }
  loop_cv_.notify_one();
  // The loop may be blocked in Redis waiting for work: a write must not wait for that.
  if (has_write && loop_waiting_for_work_) ctx_.broker.wake(waker_);
}

bool Processor::finished() const {
  return stopping_ && live_handlers_ == 0 && remote_outstanding_ == 0 && bursts_owed_ == 0 &&
         !writes_.pending() && parked_count_.load() == 0;
}

// ---- the handler threads ------------------------------------------------------------------------

void Processor::handler_loop() {
  bool wrote = false;
  while (auto t = next_task(wrote)) {
    wrote = execute(t);
    if (t->overran) break;  // a thread took this one's place meanwhile
  }
  {
    std::lock_guard lock(mu_);
    --live_handlers_;
  }
  exited_cv_.notify_all();
  wake_loop(true);  // the loop may be waiting for the last handler to leave
}

std::shared_ptr<InFlightTask> Processor::next_task(bool wrote) {
  {
    std::lock_guard lock(mu_);
    ++idle_;
  }
  wake_loop(wrote);  // an idle thread to fill, and perhaps a write to send
  std::unique_lock lock(mu_);
  handler_cv_.wait(lock, [&] { return !ready_.empty() || stopping_; });
  --idle_;
  if (ready_.empty()) return nullptr;
  std::shared_ptr<InFlightTask> t = std::move(ready_.front());
  ready_.pop_front();
  return t;
}

std::shared_ptr<InFlightTask> Processor::admit(Dequeued dequeued) {
  auto t = std::make_shared<InFlightTask>();
  t->msg = std::move(dequeued.msg);
  t->lease_expiry_ticks = dequeued.lease_expiry.time_since_epoch().count();
  t->task = task_of(t->msg);
  task::Task& tk = t->task;
  tk.started_at = Clock::now();
  tk.deadline = effective_deadline(t->msg.timeout, t->msg.deadline, tk.started_at);
  if (const auto bound = ctx_.dispatcher.attempt_timeout(tk.type); bound.count() > 0)
    tk.deadline = std::min(tk.deadline, tk.started_at + bound);
  t->started_steady = SteadyClock::now();
  ctx_.inflight.add(t);
  return t;
}

bool Processor::execute(const std::shared_ptr<InFlightTask>& t) {
  task::Task& tk = t->task;
  // Its type's permits go back once the handler has returned, before the handler thread asks
  // for its next task (parked tasks waiting for one are tried again then).
  struct Permits {
    FlowControl& flow;
    const InFlightTask& task;
    ~Permits() { flow.release(task); }
  } permits{ctx_.flow, *t};
  if (t->settled.load()) {  // requeued by a shutdown while it waited for this thread
    ctx_.inflight.remove(t);
    return false;
  }
  const auto now = Clock::now();
  t->started = true;
  if (ctx_.observer != nullptr) ctx_.observer->task_started(tk.type, tk.queue);
  if (ctx_.log.enabled(log::Level::debug)) ctx_.task_log(tk).debug("Processing task");

  task::Outcome outcome;
  std::vector<task::EnqueueRequest> staged;
  if (tk.deadline <= now) {
    t->cancellation.cancel(task::CancelReason::deadline);
    outcome = {task::Disposition::cancelled, kDeadlineExceeded, {}, {}};
  } else if (!ctx_.dispatcher.handles(tk.type)) {
    outcome = unhandled(*t);
  } else {
    const auto handle = timer_.add(tk.deadline, t);
    AttemptServices services(ctx_, *t);
    task::Execution execution{tk, t->cancellation, services, staged};
    try {
      outcome = ctx_.dispatcher.dispatch(execution);
    } catch (const std::exception& e) {  // the contract says never; a bug must not lose the task
      outcome = {task::Disposition::retry, std::string("panic: ") + e.what(), {}, {}};
    } catch (...) {
      outcome = {task::Disposition::retry, "panic: unknown exception", {}, {}};
    }
    timer_.remove(handle);
  }
  const bool deferred = finish(t, outcome, std::move(staged), true);
  // A deferred write keeps the task registered until it is settled.
  if (!deferred) ctx_.inflight.remove(t);
  return deferred;
}

task::Outcome Processor::unhandled(const InFlightTask& t) {
  const std::string& type = t.task.type;
  const auto& s = ctx_.settings;
  Clock::time_point first = Clock::now();
  try {
    first = ctx_.broker.first_unhandled(
        t.msg, std::chrono::ceil<std::chrono::seconds>(s.unhandled_timeout + s.unhandled_holdoff * 4));
  } catch (const std::exception& e) {
    ctx_.health.failed("first_unhandled", e);  // counted from now: a later look gets the record
  }
  if (Clock::now() - first >= s.unhandled_timeout) {
    // Nobody has served it for that long: asynq's rule and text, so nothing cycles forever.
    return {task::Disposition::retry, "handler not found for task \"" + type + "\"", {}, {}};
  }
  task::Outcome back = task::unhandled_type(type);
  back.retry_after = s.unhandled_holdoff;
  return back;
}

bool Processor::finish(const std::shared_ptr<InFlightTask>& t, const task::Outcome& outcome,
                       std::vector<task::EnqueueRequest> staged, bool defer) {
  if (!t->settle()) return false;  // shutdown abort already requeued it
  const auto reason = t->cancellation.reason();
  using task::Disposition;
  switch (outcome.disposition) {
    case Disposition::succeeded: {
      const bool keep = t->msg.retention > 0;
      OutcomeWrite w;
      w.op = keep ? OutcomeWrite::Op::mark_complete : OutcomeWrite::Op::done;
      w.msg = &t->msg;
      return write(t, keep ? TaskResult::completed : TaskResult::done, keep ? "mark_complete" : "done",
                   std::move(w), std::move(staged), true, defer);
    }
    case Disposition::retry:
      return fail(t, outcome.error.empty() ? "task failed" : outcome.error, std::nullopt, false, defer);
    case Disposition::retry_after:
      if (outcome.code == kRateLimitedCode && outcome.retry_after.count() > 0) {
        // The service the handler calls is throttling us, not failing the task: every worker
        // stops starting this type for that long, and the task waits it out, no attempt counted.
        ctx_.task_log(t->task).warn(
            "Task rate limited by the service it calls; retrying without counting an attempt",
            {{"error", outcome.error}, {"retry_in_ms", static_cast<int64_t>(outcome.retry_after.count())}});
        ctx_.flow.pause(t->task.type, outcome.retry_after);
        OutcomeWrite w;
        w.op = OutcomeWrite::Op::retry;
        w.msg = &t->msg;
        w.retry_at = std::chrono::ceil<std::chrono::seconds>(Clock::now() + outcome.retry_after);
        w.error = outcome.error.empty() ? std::string(kRateLimitedCode) : outcome.error;
        w.is_failure = false;
        return write(t, TaskResult::retried, "retry", std::move(w), {}, true, defer);
      }
      // asynq keeps retry times in whole seconds and the forwarder compares whole seconds:
      // rounding down would let the task run up to a second before the handler's "not before"
      // (e.g. an HTTP Retry-After), so round up.
      return fail(t, outcome.error.empty() ? "task asked to be retried later" : outcome.error,
                  std::chrono::ceil<std::chrono::seconds>(Clock::now() + outcome.retry_after), false, defer);
    case Disposition::fail_no_retry:
      return fail(t, outcome.error.empty() ? "task failed (no retry)" : outcome.error, std::nullopt, true,
                  defer);
    case Disposition::requeue: {
      ctx_.task_log(t->task).warn(
          "Requeueing task without counting an attempt",
          {{"reason", outcome.error}, {"in_ms", static_cast<int64_t>(outcome.retry_after.count())}});
      OutcomeWrite w;
      w.msg = &t->msg;
      if (outcome.retry_after.count() > 0) {
        // The retry set, not counted as a failure and `retried` unchanged: the queue moves on
        // meanwhile, and asynq's tools show the reason as the task's last error.
        w.op = OutcomeWrite::Op::retry;
        w.retry_at = std::chrono::ceil<std::chrono::seconds>(Clock::now() + outcome.retry_after);
        w.error = outcome.error;
        w.is_failure = false;
      } else {
        w.op = OutcomeWrite::Op::hand_back;  // at the back of pending, at once
      }
      return write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, defer);
    }
    case Disposition::cancelled:
      switch (reason) {
        case task::CancelReason::shutdown: {
          // Written now: the shutdown waits for the requeue, not for the loop's next round trip.
          OutcomeWrite w;
          w.op = OutcomeWrite::Op::requeue;
          w.msg = &t->msg;
          return write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, false);
        }
        case task::CancelReason::deadline:
          return fail(t, kDeadlineExceeded, std::nullopt, false, defer);
        case task::CancelReason::lease_lost:
          return fail(t, kLeaseExpired, std::nullopt, false, defer);
        default:
          return fail(t, kCanceled, std::nullopt, false, defer);
      }
  }
  return false;
}

void Processor::overrun(const std::shared_ptr<InFlightTask>& t) {
  if (!t->settle()) return;  // the handler returned meanwhile, or a shutdown requeued the task
  if (!t->started.load()) {
    // Parked (or waiting for a thread) past its deadline and the grace: no thread is stuck on
    // it, so none is added; the loop drops it from the parked tasks (settled).
    fail(t, kDeadlineExceeded, std::nullopt, false, false);
    ctx_.inflight.remove(t);
    return;
  }
  t->overran = true;
  ctx_.task_log(t->task).warn(
      t->remote
          ? "Handler still running past the task's deadline; failing the task and freeing its slot"
          : "Handler still running past the task's deadline; failing the task, a new thread takes its slot",
      {{"grace_ms", static_cast<int64_t>(ctx_.settings.deadline_grace.count())}});
  fail(t, kDeadlineExceeded, std::nullopt, false, false);
  // No longer ours: the heartbeat neither extends nor lists it, and a cancellation by id reaches
  // a later attempt of the same task.
  ctx_.inflight.remove(t);
  if (t->remote) {  // no thread is stuck on it: its slot is free for the next task
    release_remote_slot(*t);
    return;
  }
  std::lock_guard lock(mu_);
  if (stopping_) return;
  // The stuck thread leaves the pool when its handler returns (handler_loop checks `overran`).
  ++live_handlers_;
  handler_threads_.emplace_back([this] { handler_loop(); });
}

bool Processor::fail(const std::shared_ptr<InFlightTask>& t, const std::string& error,
                     std::optional<Clock::time_point> retry_at, bool skip_retry, bool defer) {
  const auto log = ctx_.task_log(t->task).with({{"error", error}});
  OutcomeWrite w;
  w.msg = &t->msg;
  w.error = error;
  // v0.25+ rule 2: exhausted (counts as dequeued) or SkipRetry -> archive.
  if (skip_retry || t->msg.retried >= t->msg.retry) {
    log.warn(skip_retry ? "Task failed without retry; archiving"
                        : "Task failed, retries exhausted; archiving");
    w.op = OutcomeWrite::Op::archive;
    return write(t, TaskResult::archived, "archive", std::move(w), {}, true, defer);
  }
  const auto at = retry_at ? *retry_at : Clock::now() + ctx_.retry_delay(t->msg.retried, error, t->task);
  log.info(
      "Task failed; will retry",
      {{"retry_in_ms", std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now()).count()}});
  w.op = OutcomeWrite::Op::retry;
  w.retry_at = at;
  w.is_failure = true;
  return write(t, TaskResult::retried, "retry", std::move(w), {}, true, defer);
}

bool Processor::write(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op,
                      OutcomeWrite w, std::vector<task::EnqueueRequest> followups, bool retry_if_unanswered,
                      bool defer) {
  // §7.6: never write an outcome once the local lease has expired; the recoverer owns the task.
  if (!t->lease_valid(Clock::now())) {
    ctx_.task_log(t->task).warn("Local lease expired; leaving the task to the recoverer", {{"op", op}});
    report_finished(ctx_, *t, TaskResult::abandoned);
    return false;
  }
  OutcomeWrites::Write out{t, std::move(w), result, op, retry_if_unanswered, std::move(followups)};
  if (!defer) {
    writes_.write_now(std::move(out));
    return false;
  }
  writes_.defer(std::move(out));
  return true;
}

void Processor::abort_running() {
  for (const auto& t : ctx_.inflight.snapshot()) {
    t->cancellation.cancel(task::CancelReason::shutdown);
    if (!t->settle()) continue;  // its handler returned and is writing its own outcome
    ctx_.task_log(t->task).info("Shutdown: requeueing unfinished task");
    OutcomeWrite w;
    w.op = OutcomeWrite::Op::requeue;
    w.msg = &t->msg;
    write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, false);
  }
}

}  // namespace wk::queue
