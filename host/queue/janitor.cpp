#include "queue/janitor.hpp"

namespace wk::queue {

Janitor::Janitor(EngineContext& ctx)
    : ctx_(ctx), loop_("janitor", ctx.settings.janitor_interval, false, [this] { tick(); }) {}

void Janitor::tick() {
  for (const auto& queue : ctx_.order.names()) {
    const auto started = SteadyClock::now();
    try {
      const int deleted = ctx_.broker.delete_expired_completed(queue, ctx_.settings.janitor_batch);
      ctx_.health.succeeded(started);
      if (deleted > 0)
        ctx_.log.debug("Deleted expired completed tasks", {{"queue", queue}, {"count", deleted}});
    } catch (const std::exception& e) {
      ctx_.health.failed("delete_expired_completed", e);
      return;
    }
  }
}

}  // namespace wk::queue
