#include "queue/recoverer.hpp"

#include <set>

namespace wk::queue {

namespace {
// asynq's servers lease tasks for 30 s; ours for Settings::lease.
constexpr std::chrono::seconds kAsynqLease{30};
}  // namespace

Recoverer::Recoverer(EngineContext& ctx)
    : ctx_(ctx), loop_("recoverer", ctx.settings.recoverer_interval, true, [this] { return tick(); }) {}

void Recoverer::recover(const asynq::TaskMessage& msg) {
  const auto view = task_of(msg);
  const auto log = ctx_.task_log(view);
  const auto started = SteadyClock::now();
  try {
    if (msg.retried >= msg.retry) {
      log.warn("Recovering a task whose lease expired: retries exhausted, archiving");
      ctx_.broker.archive(msg, kLeaseExpired);
    } else {
      // Due at once: the worker that held it died, and a backoff would only delay the rerun
      // (unless a fixed retry delay was configured: it applies to every retry). The attempt
      // counts, as asynq counts it: a task that kills its worker must end somewhere.
      log.warn("Recovering a task whose lease expired: retrying");
      const auto due = ctx_.settings.retry_delay
                           ? Clock::now() + ctx_.retry_delay(msg.retried, kLeaseExpired, view)
                           : Clock::now();
      ctx_.broker.retry(msg, due, kLeaseExpired, true);
    }
    ctx_.health.succeeded(started);
  } catch (const NotFound&) {
    log.info("Task moved before it could be recovered; nothing to do");
  }
}

bool Recoverer::recover_orphan(const asynq::TaskMessage& msg) {
  const auto view = task_of(msg);
  const auto log = ctx_.task_log(view);
  const bool archive = msg.retried >= msg.retry;
  std::optional<Clock::time_point> retry_at;
  if (!archive) retry_at = Clock::now() + ctx_.retry_delay(msg.retried, kLeaseExpired, view);
  const auto started = SteadyClock::now();
  try {
    switch (ctx_.broker.recover_orphan(msg, retry_at, kLeaseExpired)) {
      case OrphanRecovery::recovered:
        log.warn(archive ? "Recovered a task that was active without a lease: retries exhausted, archived"
                         : "Recovered a task that was active without a lease: retrying");
        break;
      case OrphanRecovery::leased:
        log.info("Task active without a lease got one before it could be recovered; left alone");
        break;
      case OrphanRecovery::not_active:
        log.info("Task active without a lease moved before it could be recovered; nothing to do");
        break;
    }
    ctx_.health.succeeded(started);
    return true;
  } catch (const std::exception& e) {
    ctx_.health.failed("recover_orphan", e);
    log.warn("Cannot recover a task that is active without a lease", {{"error", e.what()}});
    return false;  // try again on the next pass
  }
}

std::chrono::milliseconds Recoverer::tick() {
  const auto& queues = ctx_.order.names();
  const auto started = SteadyClock::now();
  bool busy = true;  // on a failure, keep the busy cadence
  try {
    const auto cutoff = Clock::now() - ctx_.settings.lease_expiry_cutoff;
    const std::vector<Broker::LeaseProbe> probes = ctx_.broker.probe_leases(queues);
    busy = false;
    std::vector<std::string> expiring;  // queues with a lease at or past the cutoff
    std::vector<std::string> active;    // queues with active tasks (orphans are among them)
    for (size_t i = 0; i < queues.size(); ++i) {
      const auto& probe = probes[i];
      busy = busy || probe.active > 0 || probe.earliest_expiry.has_value();
      if (probe.earliest_expiry && *probe.earliest_expiry <= cutoff) expiring.push_back(queues[i]);
      if (probe.active > 0) active.push_back(queues[i]);
    }
    std::vector<asynq::TaskMessage> expired;
    if (!expiring.empty()) expired = ctx_.broker.list_lease_expired(expiring, cutoff);
    ctx_.health.succeeded(started);
    std::set<std::string> recovered_queues;
    for (const auto& msg : expired) {
      recover(msg);
      recovered_queues.insert(msg.queue);
    }
    // Straight on to pending rather than at the forwarder's next pass.
    for (const auto& queue : recovered_queues) ctx_.broker.forward(queue);

    const auto now = SteadyClock::now();
    std::unordered_map<std::string, SteadyClock::time_point> still_leaseless;
    for (const auto& queue : active) {
      for (const auto& msg : ctx_.broker.list_active_without_lease(queue)) {
        if (ctx_.inflight.find(msg.id)) continue;
        const auto key = queue + '\n' + msg.id;
        auto it = leaseless_since_.find(key);
        if (it == leaseless_since_.end()) {  // first sighting: only remember it
          still_leaseless.emplace(key, now);
          continue;
        }
        // Seen lease-less on this pass and the previous one, at least orphan_grace apart: an
        // orphan (asynq #1144). The broker re-checks "in active, no lease" atomically with the
        // move, so a task that got a lease meanwhile is left alone.
        if (now - it->second < ctx_.settings.orphan_grace) {
          still_leaseless.emplace(key, it->second);
          continue;
        }
        if (!recover_orphan(msg)) still_leaseless.emplace(key, it->second);
      }
    }
    leaseless_since_.swap(still_leaseless);
  } catch (const std::exception& e) {
    ctx_.health.failed("recover", e);
  }
  if (busy) return ctx_.settings.recoverer_interval;
  // Not in turns: a server that dies just after another's probe would take its turn with it.
  return std::max(ctx_.settings.recoverer_interval,
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::min<std::chrono::seconds>(ctx_.settings.lease, kAsynqLease)));
}

}  // namespace wk::queue
