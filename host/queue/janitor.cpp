#include "queue/janitor.hpp"

namespace wk::queue {

Janitor::Janitor(EngineContext& ctx)
    : ctx_(ctx), loop_("janitor", ctx.settings.janitor_interval, false, [this] { return tick(); }) {
  for (const auto& queue : ctx_.order.names()) completed_.push_back(asynq::completed_key(queue));
}

std::chrono::milliseconds Janitor::tick() {
  const auto& queues = ctx_.order.names();
  const auto started = SteadyClock::now();
  try {
    const std::vector<bool> due = ctx_.broker.any_due(completed_, Clock::now());
    for (size_t i = 0; i < queues.size(); ++i) {
      if (!due[i]) continue;
      const int deleted = ctx_.broker.delete_expired_completed(queues[i], ctx_.settings.janitor_batch);
      if (deleted > 0)
        ctx_.log.debug("Deleted expired completed tasks", {{"queue", queues[i]}, {"count", deleted}});
    }
    ctx_.health.succeeded(started);
  } catch (const std::exception& e) {
    ctx_.health.failed("delete_expired_completed", e);
  }
  return fleet_slot_delay(ctx_.settings.janitor_interval, ctx_.fleet, Clock::now());
}

}  // namespace wk::queue
