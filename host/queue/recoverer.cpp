#include "queue/recoverer.hpp"

namespace wk::queue {

namespace {
constexpr const char* kLeaseExpired = "asynq: task lease expired";

task::Task view_of(const asynq::TaskMessage& msg) {
  task::Task t;
  t.id = msg.id;
  t.type = msg.type;
  t.queue = msg.queue;
  t.payload = msg.payload;
  t.headers = msg.headers;
  t.retried = msg.retried;
  t.max_retry = msg.retry;
  return t;
}
}  // namespace

Recoverer::Recoverer(EngineContext& ctx)
    : ctx_(ctx), loop_("recoverer", ctx.settings.recoverer_interval, true, [this] { tick(); }) {}

void Recoverer::recover(const asynq::TaskMessage& msg) {
  const auto view = view_of(msg);
  const auto log = ctx_.task_log(view);
  try {
    if (msg.retried >= msg.retry) {
      log.warn("Recovering a task whose lease expired: retries exhausted, archiving");
      ctx_.broker.archive(msg, kLeaseExpired);
    } else {
      log.warn("Recovering a task whose lease expired: retrying");
      ctx_.broker.retry(msg, Clock::now() + ctx_.retry_delay(msg.retried, kLeaseExpired, view), kLeaseExpired,
                        true);
    }
    ctx_.health.succeeded();
  } catch (const NotFound&) {
    log.info("Task moved before it could be recovered; nothing to do");
  }
}

void Recoverer::tick() {
  try {
    const auto expired = ctx_.broker.list_lease_expired(ctx_.order.names(), Clock::now() - ctx_.settings.lease_expiry_cutoff);
    ctx_.health.succeeded();
    for (const auto& msg : expired) recover(msg);

    const auto now = SteadyClock::now();
    std::unordered_map<std::string, SteadyClock::time_point> still_leaseless;
    for (const auto& queue : ctx_.order.names()) {
      for (const auto& msg : ctx_.broker.list_active_without_lease(queue)) {
        if (ctx_.inflight.find(msg.id)) continue;
        const auto key = queue + '\n' + msg.id;
        auto it = leaseless_since_.find(key);
        const auto since = it == leaseless_since_.end() ? now : it->second;
        // The completion scripts take LREM then ZREM and answer NOT FOUND on a missing lease
        // *after* the LREM took effect, so calling retry/archive here would drop the id from
        // `active` and strand the task. Until the broker has an operation for this case we only
        // report it, once per id, after the grace.
        if (now - since >= ctx_.settings.orphan_grace && it != leaseless_since_.end() &&
            !reported_leaseless_.count(key)) {
          ctx_.task_log(view_of(msg)).warn("Task is active without a lease; not recovered automatically");
          reported_leaseless_.insert(key);
        }
        still_leaseless.emplace(key, since);
      }
    }
    leaseless_since_.swap(still_leaseless);
  } catch (const std::exception& e) {
    ctx_.health.failed("recover", e);
  }
}

}  // namespace wk::queue
