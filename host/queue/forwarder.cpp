#include "queue/forwarder.hpp"

namespace wk::queue {

Forwarder::Forwarder(EngineContext& ctx)
    : ctx_(ctx), loop_("forwarder", ctx.settings.forwarder_interval, false, [this] { tick(); }) {}

void Forwarder::tick() {
  for (const auto& queue : ctx_.order.names()) {
    const auto started = SteadyClock::now();
    try {
      const int moved = ctx_.broker.forward(queue);
      ctx_.health.succeeded(started);
      if (moved > 0) ctx_.log.debug("Forwarded due tasks to pending", {{"queue", queue}, {"count", moved}});
    } catch (const std::exception& e) {
      ctx_.health.failed("forward", e);
      return;  // the next tick tries again; no point hammering a Redis that is away
    }
  }
}

}  // namespace wk::queue
