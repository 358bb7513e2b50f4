#include "queue/forwarder.hpp"

namespace wk::queue {

Forwarder::Forwarder(EngineContext& ctx)
    : ctx_(ctx), loop_("forwarder", ctx.settings.forwarder_interval, false, [this] { return tick(); }) {
  for (const auto& queue : ctx_.order.names()) {
    sources_.push_back(asynq::scheduled_key(queue));
    sources_.push_back(asynq::retry_key(queue));
  }
}

std::chrono::milliseconds Forwarder::tick() {
  const auto& queues = ctx_.order.names();
  const auto started = SteadyClock::now();
  try {
    const std::vector<bool> due = ctx_.broker.any_due(sources_, Clock::now());
    for (size_t i = 0; i < queues.size(); ++i) {
      if (!due[2 * i] && !due[2 * i + 1]) continue;
      const int moved = ctx_.broker.forward(queues[i]);
      if (moved > 0)
        ctx_.log.debug("Forwarded due tasks to pending", {{"queue", queues[i]}, {"count", moved}});
    }
    ctx_.health.succeeded(started);
  } catch (const std::exception& e) {
    ctx_.health.failed("forward", e);  // the next turn tries again
  }
  return fleet_slot_delay(ctx_.settings.forwarder_interval, ctx_.fleet, Clock::now());
}

}  // namespace wk::queue
