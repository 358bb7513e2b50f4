#include "queue/processor.hpp"

#include <stdexcept>

#include "queue/deadline.hpp"

namespace wk::queue {

namespace {

constexpr const char* kDeadlineExceeded = "context deadline exceeded";
constexpr const char* kCanceled = "context canceled";
constexpr const char* kLeaseExpired = "asynq: task lease expired";

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
    try {
      ctx_.broker.write_result(t_.task.queue, t_.task.id, data);
      ctx_.health.succeeded();
      return true;
    } catch (const std::exception& e) {
      ctx_.health.failed("write_result", e);
      ctx_.task_log(t_.task).warn("Cannot write the task result", {{"error", e.what()}});
      return false;
    }
  }
  void heartbeat() override {}  // leases are extended by the heartbeat loop regardless

 private:
  EngineContext& ctx_;
  InFlightTask& t_;
};

}  // namespace

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

Processor::Processor(EngineContext& ctx, Syncer& syncer)
    : ctx_(ctx),
      syncer_(syncer),
      timer_(ctx.settings.deadline_grace, [this](const std::shared_ptr<InFlightTask>& t) { overrun(t); }) {}

Processor::~Processor() {
  stop_fetching();
  for (auto& th : threads_) {
    if (th.joinable()) th.join();
  }
}

void Processor::start() {
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  const auto n = static_cast<unsigned>(std::max(1, ctx_.settings.concurrency));
  live_threads_ = n;
  next_thread_index_ = n;
  for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this, i] { worker_loop(i); });
}

void Processor::stop_fetching() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  ctx_.broker.wake();
}

bool Processor::join_until(SteadyClock::time_point until) {
  std::unique_lock lock(mu_);
  if (!exited_cv_.wait_until(lock, until, [&] { return live_threads_ == 0; })) return false;
  lock.unlock();
  for (auto& th : threads_) {
    if (th.joinable()) th.join();
  }
  return true;
}

bool Processor::healthy() const {
  // A thread blocked in wait_for_work ticks at least every wait_timeout; handler threads busy
  // with long tasks don't tick, so only "nobody fetching and nobody running" is unhealthy.
  const auto last = SteadyClock::time_point(SteadyClock::duration(last_tick_.load()));
  const bool fetched_recently =
      SteadyClock::now() - last <= 3 * ctx_.settings.wait_timeout + std::chrono::seconds(5);
  return fetched_recently || ctx_.inflight.size() > 0;
}

void Processor::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [&] { return stopping_; });
}

bool Processor::idle_wait() {
  std::unique_lock lock(mu_);
  if (stopping_) return false;
  if (batons_ > 0) {
    --batons_;
    return true;
  }
  if (!waiter_busy_) {
    waiter_busy_ = true;
    lock.unlock();
    bool maybe = false;
    try {
      maybe = ctx_.broker.wait_for_work(ctx_.order.names(), ctx_.settings.wait_timeout);
      ctx_.health.succeeded();
    } catch (const std::exception& e) {
      ctx_.health.failed("wait_for_work", e);
      pause(ctx_.settings.redis_backoff);
    }
    lock.lock();
    waiter_busy_ = false;
    // The waiter role is free: a sleeper takes it over while this thread goes to dequeue.
    if (sleepers_ > 0) cv_.notify_all();
    return maybe;
  }
  ++sleepers_;
  cv_.wait(lock, [&] { return stopping_ || batons_ > 0 || !waiter_busy_ || !handoff_.empty(); });
  --sleepers_;
  if (!handoff_.empty()) return false;  // the loop takes the handed task
  if (batons_ > 0) {
    --batons_;
    return true;
  }
  return false;
}

void Processor::worker_loop(unsigned index) {
  std::mt19937_64 rng(std::random_device{}() + index);
  std::chrono::milliseconds error_backoff{0};
  int empty_after_signal = 0;      // "work may be there" but the dequeue found none (paused queue?)
  std::vector<Dequeued> got;       // reused: no allocation per dequeue once grown
  PendingWrite pending;            // the last task's outcome, sent with the next dequeue
  std::vector<std::string> order;  // reused
  while (true) {
    std::shared_ptr<InFlightTask> handed;
    size_t want = 1;
    {
      std::lock_guard lock(mu_);
      if (!handoff_.empty()) {
        // A task another thread dequeued for this idle slot (its lease clock is already running).
        handed = std::move(handoff_.front());
        handoff_.pop_front();
      } else if (stopping_) {
        break;
      } else {
        // Take one task for this thread plus one for every idle thread nobody has claimed yet.
        const long spare =
            static_cast<long>(sleepers_) - batons_ - static_cast<long>(handoff_.size()) - reserved_;
        want = 1 + static_cast<size_t>(std::max(0L, spare));
        reserved_ += static_cast<long>(want) - 1;
      }
    }
    if (handed) {
      if (pending.task) flush_pending(pending);
      execute(handed, &pending);
      if (handed->overran) break;  // a thread took this one's place meanwhile
      continue;
    }
    last_tick_ = SteadyClock::now().time_since_epoch().count();
    if (!ctx_.dispatcher.serving()) {
      // No plugin serves anything (all refused, or still loading): take nothing, so the workers
      // that can run the tasks get them (docs/queue-engine.md).
      if (pending.task) flush_pending(pending);
      {
        std::lock_guard lock(mu_);
        reserved_ -= static_cast<long>(want) - 1;
      }
      pause(ctx_.settings.wait_timeout);
      continue;
    }
    got.clear();
    std::exception_ptr write_error;
    // §7.6: the lease is checked again right before the deferred write goes out.
    const bool with_write = pending.task && !abandon_if_lease_expired(pending);
    try {
      ctx_.order.next(rng, order);
      if (with_write) {
        ctx_.broker.dequeue_after(pending.write, write_error, order, ctx_.settings.lease, want, got);
      } else {
        got = ctx_.broker.dequeue_batch(order, ctx_.settings.lease, want);
      }
      ctx_.health.succeeded();
      error_backoff = std::chrono::milliseconds(0);
    } catch (const std::exception& e) {
      if (with_write) settle_pending(pending, write_error);
      {
        std::lock_guard lock(mu_);
        reserved_ -= static_cast<long>(want) - 1;
      }
      ctx_.health.failed("dequeue", e);
      error_backoff =
          std::min(ctx_.settings.redis_backoff, std::max(std::chrono::milliseconds(10), error_backoff * 2));
      pause(error_backoff);
      continue;
    }
    if (!got.empty()) {
      empty_after_signal = 0;
      // Register every task at once: the heartbeat extends (and the shutdown requeues) a task
      // from the moment it left pending, also while it waits for an idle thread.
      std::shared_ptr<InFlightTask> mine = admit(std::move(got[0]));
      {
        std::lock_guard lock(mu_);
        reserved_ -= static_cast<long>(want) - 1;
        for (size_t i = 1; i < got.size(); ++i) handoff_.push_back(admit(std::move(got[i])));
        // More may be there: wake one more sleeper to dequeue (a chain that fans a burst out).
        if (sleepers_ > batons_ + static_cast<int>(handoff_.size())) ++batons_;
      }
      cv_.notify_all();
      // Settled after the new tasks are registered: the registry is never empty in between, so
      // a shutdown waiting for it cannot slip through.
      if (with_write) settle_pending(pending, write_error);
      execute(mine, &pending);
      if (mine->overran) break;  // a thread took this one's place meanwhile
      continue;
    }
    if (with_write) settle_pending(pending, write_error);
    {
      std::lock_guard lock(mu_);
      reserved_ -= static_cast<long>(want) - 1;
    }
    if (idle_wait()) {
      // Another host may have taken the task, or the queue with work is paused: then the wait
      // would keep answering "maybe" at once. Back off exponentially so that never spins.
      if (empty_after_signal > 0) {
        pause(std::min(ctx_.settings.wait_timeout,
                       std::chrono::milliseconds(1) * (1 << std::min(empty_after_signal, 10))));
      }
      ++empty_after_signal;
    } else {
      empty_after_signal = 0;
    }
  }
  if (pending.task) flush_pending(pending);
  std::lock_guard lock(mu_);
  --live_threads_;
  exited_cv_.notify_all();
}

std::shared_ptr<InFlightTask> Processor::admit(Dequeued dequeued) {
  auto t = std::make_shared<InFlightTask>();
  t->msg = std::move(dequeued.msg);
  t->lease_expiry_ticks = dequeued.lease_expiry.time_since_epoch().count();
  task::Task& tk = t->task;
  tk.id = t->msg.id;
  tk.type = t->msg.type;
  tk.queue = t->msg.queue;
  tk.payload = t->msg.payload;
  for (const auto& [k, v] : t->msg.headers) tk.headers.emplace_back(k, v);
  tk.retried = t->msg.retried;
  tk.max_retry = t->msg.retry;
  tk.started_at = Clock::now();
  tk.deadline = effective_deadline(t->msg.timeout, t->msg.deadline, tk.started_at);
  t->started_steady = SteadyClock::now();
  ctx_.inflight.add(t);
  return t;
}

void Processor::execute(const std::shared_ptr<InFlightTask>& t, PendingWrite* pending) {
  task::Task& tk = t->task;
  if (t->settled.load()) {  // requeued by a shutdown while it waited for this thread
    ctx_.inflight.remove(t);
    return;
  }
  const auto now = Clock::now();
  if (ctx_.observer != nullptr) ctx_.observer->task_started(tk.type, tk.queue);
  if (ctx_.log.enabled(log::Level::debug)) ctx_.task_log(tk).debug("Processing task");

  task::Outcome outcome;
  std::vector<task::EnqueueRequest> staged;
  if (tk.deadline <= now) {
    t->cancellation.cancel(task::CancelReason::deadline);
    outcome = {task::Disposition::cancelled, kDeadlineExceeded, {}};
  } else if (!ctx_.dispatcher.handles(tk.type)) {
    outcome = unhandled(*t);
  } else {
    const auto handle = timer_.add(tk.deadline, t);
    AttemptServices services(ctx_, *t);
    task::Execution execution{tk, t->cancellation, services, staged};
    try {
      outcome = ctx_.dispatcher.dispatch(execution);
    } catch (const std::exception& e) {  // the contract says never; a bug must not lose the task
      outcome = {task::Disposition::retry, std::string("panic: ") + e.what(), {}};
    } catch (...) {
      outcome = {task::Disposition::retry, "panic: unknown exception", {}};
    }
    timer_.remove(handle);
  }
  finish(t, outcome, std::move(staged), pending);
  // A deferred write keeps the task registered until its reply is in (settle_pending).
  if (pending == nullptr || pending->task != t) ctx_.inflight.remove(t);
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
    return {task::Disposition::retry, "handler not found for task \"" + type + "\"", {}};
  }
  return {task::Disposition::requeue, "no plugin on this worker serves task type \"" + type + "\"",
          s.unhandled_holdoff};
}

void Processor::finish(const std::shared_ptr<InFlightTask>& t, const task::Outcome& outcome,
                       std::vector<task::EnqueueRequest> staged, PendingWrite* pending) {
  if (!t->settle()) return;  // shutdown abort already requeued it
  const auto reason = t->cancellation.reason();
  using task::Disposition;
  switch (outcome.disposition) {
    case Disposition::succeeded: {
      const bool keep = t->msg.retention > 0;
      OutcomeWrite w;
      w.op = keep ? OutcomeWrite::Op::mark_complete : OutcomeWrite::Op::done;
      w.msg = &t->msg;
      write(t, keep ? TaskResult::completed : TaskResult::done, keep ? "mark_complete" : "done", std::move(w),
            std::move(staged), true, pending);
      return;
    }
    case Disposition::retry:
      fail(t, outcome.error.empty() ? "task failed" : outcome.error, std::nullopt, false, pending);
      return;
    case Disposition::retry_after:
      // asynq keeps retry times in whole seconds and the forwarder compares whole seconds:
      // rounding down would let the task run up to a second before the handler's "not before"
      // (e.g. an HTTP Retry-After), so round up.
      fail(t, outcome.error.empty() ? "task asked to be retried later" : outcome.error,
           std::chrono::ceil<std::chrono::seconds>(Clock::now() + outcome.retry_after), false, pending);
      return;
    case Disposition::fail_no_retry:
      fail(t, outcome.error.empty() ? "task failed (no retry)" : outcome.error, std::nullopt, true, pending);
      return;
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
      write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, nullptr);
      return;
    }
    case Disposition::cancelled:
      switch (reason) {
        case task::CancelReason::shutdown: {
          OutcomeWrite w;
          w.op = OutcomeWrite::Op::requeue;
          w.msg = &t->msg;
          write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, nullptr);
          return;
        }
        case task::CancelReason::deadline:
          fail(t, kDeadlineExceeded, std::nullopt, false, pending);
          return;
        case task::CancelReason::lease_lost:
          fail(t, kLeaseExpired, std::nullopt, false, pending);
          return;
        default:
          fail(t, kCanceled, std::nullopt, false, pending);
          return;
      }
  }
}

void Processor::overrun(const std::shared_ptr<InFlightTask>& t) {
  if (!t->settle()) return;  // the handler returned meanwhile, or a shutdown requeued the task
  t->overran = true;
  ctx_.task_log(t->task).warn(
      "Handler still running past the task's deadline; failing the task, a new thread takes its slot",
      {{"grace_ms", static_cast<int64_t>(ctx_.settings.deadline_grace.count())}});
  fail(t, kDeadlineExceeded, std::nullopt, false, nullptr);
  // No longer ours: the heartbeat neither extends nor lists it, and a cancellation by id reaches
  // a later attempt of the same task.
  ctx_.inflight.remove(t);
  std::lock_guard lock(mu_);
  if (stopping_) return;
  // The stuck thread leaves the pool when its handler returns (worker_loop checks `overran`).
  ++live_threads_;
  threads_.emplace_back([this, i = next_thread_index_++] { worker_loop(i); });
}

void Processor::fail(const std::shared_ptr<InFlightTask>& t, const std::string& error,
                     std::optional<Clock::time_point> retry_at, bool skip_retry, PendingWrite* pending) {
  const auto log = ctx_.task_log(t->task).with({{"error", error}});
  OutcomeWrite w;
  w.msg = &t->msg;
  w.error = error;
  // v0.25+ rule 2: exhausted (counts as dequeued) or SkipRetry -> archive.
  if (skip_retry || t->msg.retried >= t->msg.retry) {
    log.warn(skip_retry ? "Task failed without retry; archiving"
                        : "Task failed, retries exhausted; archiving");
    w.op = OutcomeWrite::Op::archive;
    write(t, TaskResult::archived, "archive", std::move(w), {}, true, pending);
    return;
  }
  const auto at = retry_at ? *retry_at : Clock::now() + ctx_.retry_delay(t->msg.retried, error, t->task);
  log.info(
      "Task failed; will retry",
      {{"retry_in_ms", std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now()).count()}});
  w.op = OutcomeWrite::Op::retry;
  w.retry_at = at;
  w.is_failure = true;
  write(t, TaskResult::retried, "retry", std::move(w), {}, true, pending);
}

void Processor::write(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op,
                      OutcomeWrite w, std::vector<task::EnqueueRequest> followups, bool queue_on_failure,
                      PendingWrite* pending) {
  // §7.6: never write an outcome once the local lease has expired; the recoverer owns the task.
  if (!t->lease_valid(Clock::now())) {
    ctx_.task_log(t->task).warn("Local lease expired; leaving the task to the recoverer", {{"op", op}});
    report(t, TaskResult::abandoned);
    return;
  }
  if (pending != nullptr) {
    pending->task = t;
    pending->write = std::move(w);
    pending->result = result;
    pending->op = op;
    pending->queue_on_failure = queue_on_failure;
    pending->followups = std::move(followups);
    pending->write.followups = &pending->followups;
    return;
  }
  w.followups = &followups;
  std::exception_ptr error;
  try {
    ctx_.broker.write_outcome(w);
  } catch (...) {
    error = std::current_exception();
  }
  written(t, result, op, w, followups, queue_on_failure, error);
}

void Processor::written(const std::shared_ptr<InFlightTask>& t, TaskResult result, const char* op,
                        const OutcomeWrite& w, std::vector<task::EnqueueRequest>& followups,
                        bool queue_on_failure, const std::exception_ptr& error) {
  if (!error) {
    ctx_.health.succeeded();
    if (ctx_.log.enabled(log::Level::debug))
      ctx_.task_log(t->task).debug("Task finished", {{"result", to_string(result)}});
    report(t, result);
    return;
  }
  try {
    std::rethrow_exception(error);
  } catch (const NotFound&) {
    ctx_.task_log(t->task).warn("Task was moved while it ran; nothing written", {{"op", op}});
    report(t, TaskResult::abandoned);
  } catch (const std::invalid_argument& e) {
    // A follow-up the queue refuses (staging validates them, so only a host bug gets here). Not
    // an outage, and retrying the write cannot help: the recoverer takes the task after its lease.
    ctx_.task_log(t->task).error("Outcome refused; nothing written", {{"op", op}, {"error", e.what()}});
    report(t, TaskResult::abandoned);
  } catch (const std::exception& e) {
    ctx_.health.failed(op, e);
    if (queue_on_failure) {
      // The syncer retries it until the lease expires; it owns a copy of the follow-ups.
      auto keep = std::make_shared<std::vector<task::EnqueueRequest>>(std::move(followups));
      OutcomeWrite retry_write = w;
      retry_write.followups = keep.get();
      syncer_.add(
          std::string(op) + " " + t->task.id,
          [this, t, retry_write, keep] { ctx_.broker.write_outcome(retry_write); }, t->lease_expiry());
    } else {
      ctx_.task_log(t->task).error("Write failed", {{"op", op}, {"error", e.what()}});
    }
    report(t, result);
  } catch (...) {
    ctx_.task_log(t->task).error("Write failed", {{"op", op}, {"error", "unknown exception"}});
    report(t, result);
  }
}

bool Processor::abandon_if_lease_expired(PendingWrite& pending) {
  if (pending.task->lease_valid(Clock::now())) return false;
  ctx_.task_log(pending.task->task)
      .warn("Local lease expired; leaving the task to the recoverer", {{"op", pending.op}});
  report(pending.task, TaskResult::abandoned);
  ctx_.inflight.remove(pending.task);
  pending.task.reset();
  pending.followups.clear();
  return true;
}

void Processor::flush_pending(PendingWrite& pending) {
  if (abandon_if_lease_expired(pending)) return;
  std::exception_ptr error;
  try {
    ctx_.broker.write_outcome(pending.write);
  } catch (...) {
    error = std::current_exception();
  }
  settle_pending(pending, error);
}

void Processor::settle_pending(PendingWrite& pending, const std::exception_ptr& error) {
  const std::shared_ptr<InFlightTask> t = std::move(pending.task);
  pending.task.reset();
  written(t, pending.result, pending.op, pending.write, pending.followups, pending.queue_on_failure, error);
  pending.followups.clear();
  ctx_.inflight.remove(t);
}

void Processor::report(const std::shared_ptr<InFlightTask>& t, TaskResult result) {
  if (ctx_.observer == nullptr) return;
  ctx_.observer->task_finished(t->task.type, t->task.queue, result, SteadyClock::now() - t->started_steady);
}

void Processor::abort_running() {
  for (const auto& t : ctx_.inflight.snapshot()) {
    t->cancellation.cancel(task::CancelReason::shutdown);
    if (!t->settle()) continue;  // its handler returned and is writing its own outcome
    ctx_.task_log(t->task).info("Shutdown: requeueing unfinished task");
    OutcomeWrite w;
    w.op = OutcomeWrite::Op::requeue;
    w.msg = &t->msg;
    write(t, TaskResult::requeued, "requeue", std::move(w), {}, false, nullptr);
  }
}

}  // namespace wk::queue
