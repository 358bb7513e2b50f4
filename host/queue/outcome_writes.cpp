#include "queue/outcome_writes.hpp"

#include <stdexcept>

namespace wk::queue {

void report_finished(EngineContext& ctx, const InFlightTask& t, TaskResult result) {
  if (ctx.observer == nullptr || !t.started.load()) return;
  ctx.observer->task_finished(t.task.type, t.task.queue, result, SteadyClock::now() - t.started_steady);
}

void OutcomeWrites::defer(Write w) {
  std::lock_guard lock(mu_);
  waiting_.push_back(std::move(w));
}

bool OutcomeWrites::pending() const {
  std::lock_guard lock(mu_);
  return !waiting_.empty();
}

void OutcomeWrites::take() {
  {
    std::lock_guard lock(mu_);
    batch_.swap(waiting_);
  }
  const auto now = Clock::now();
  std::erase_if(batch_, [&](Write& w) {
    if (w.task->lease_valid(now)) return false;
    ctx_.task_log(w.task->task)
        .warn("Local lease expired; leaving the task to the recoverer", {{"op", w.op}});
    report_finished(ctx_, *w.task, TaskResult::abandoned);
    ctx_.inflight.remove(w.task);
    return true;
  });
  sent_.clear();
  for (Write& w : batch_) {
    w.write.followups = &w.followups;  // where the follow-ups are now (a Write moves on its way here)
    sent_.push_back(w.write);
  }
  errors_.assign(batch_.size(), nullptr);
}

void OutcomeWrites::send_with_dequeue(const std::vector<std::string>& queues, std::chrono::seconds lease,
                                      size_t max, std::vector<Dequeued>& got) {
  take();
  const auto sent = SteadyClock::now();
  std::exception_ptr dequeue_error;
  try {
    ctx_.broker.exchange(sent_, errors_, queues, lease, max, got);
  } catch (...) {
    dequeue_error = std::current_exception();
  }
  for (size_t i = 0; i < batch_.size(); ++i) settle(batch_[i], errors_[i], sent);
  batch_.clear();
  if (dequeue_error) std::rethrow_exception(dequeue_error);
}

void OutcomeWrites::send_now() {
  std::vector<Dequeued> none;
  send_with_dequeue({}, std::chrono::seconds(0), 0, none);
}

void OutcomeWrites::write_now(Write w) {
  w.write.followups = &w.followups;
  const auto sent = SteadyClock::now();
  std::exception_ptr error;
  try {
    ctx_.broker.write_outcome(w.write);
  } catch (...) {
    error = std::current_exception();
  }
  settle(w, error, sent);
}

void OutcomeWrites::settle(Write& w, const std::exception_ptr& error, SteadyClock::time_point sent) {
  const std::shared_ptr<InFlightTask>& t = w.task;
  if (!error) {
    ctx_.health.succeeded(sent);
    if (ctx_.log.enabled(log::Level::debug))
      ctx_.task_log(t->task).debug("Task finished", {{"result", to_string(w.result)}});
    report_finished(ctx_, *t, w.result);
  } else {
    try {
      std::rethrow_exception(error);
    } catch (const NotFound&) {
      ctx_.task_log(t->task).warn("Task was moved while it ran; nothing written", {{"op", w.op}});
      report_finished(ctx_, *t, TaskResult::abandoned);
    } catch (const task::InvalidRequest& e) {
      // A follow-up the queue refuses (staging validates them, so only a host bug gets here). Not
      // an outage, and retrying cannot help: the recoverer takes the task after its lease.
      ctx_.task_log(t->task).error("Outcome refused; nothing written", {{"op", w.op}, {"error", e.what()}});
      report_finished(ctx_, *t, TaskResult::abandoned);
    } catch (const std::exception& e) {
      ctx_.health.failed(w.op, e);
      if (w.retry_if_unanswered) {
        // The syncer retries it until the lease expires; it owns a copy of the follow-ups.
        auto keep = std::make_shared<std::vector<task::EnqueueRequest>>(std::move(w.followups));
        OutcomeWrite retry_write = w.write;
        retry_write.followups = keep.get();
        syncer_.add(
            std::string(w.op) + " " + t->task.id,
            [this, t, retry_write, keep] { ctx_.broker.write_outcome(retry_write); }, t->lease_expiry());
      } else {
        ctx_.task_log(t->task).error("Write failed", {{"op", w.op}, {"error", e.what()}});
      }
      report_finished(ctx_, *t, w.result);
    } catch (...) {
      ctx_.task_log(t->task).error("Write failed", {{"op", w.op}, {"error", "unknown exception"}});
      report_finished(ctx_, *t, w.result);
    }
  }
  ctx_.inflight.remove(t);
}

}  // namespace wk::queue
