#include "queue/syncer.hpp"

namespace wk::queue {

Syncer::Syncer(EngineContext& ctx)
    : ctx_(ctx), loop_("syncer", ctx.settings.sync_interval, false, [this] {
        tick();
        return ctx_.settings.sync_interval;
      }) {}

void Syncer::add(std::string what, std::function<void()> write, Clock::time_point deadline) {
  std::lock_guard lock(mu_);
  items_.push_back({std::move(what), std::move(write), deadline});
}

std::size_t Syncer::pending() const {
  std::lock_guard lock(mu_);
  return items_.size();
}

void Syncer::stop() {
  loop_.stop();
  tick();
}

void Syncer::tick() {
  std::vector<Item> work;
  {
    std::lock_guard lock(mu_);
    work.swap(items_);
  }
  std::vector<Item> keep;
  bool redis_away = false;
  for (auto& item : work) {
    if (Clock::now() > item.deadline) {
      ctx_.log.warn("Dropping a queued write: the task's lease has expired; the recoverer will handle it",
                    {{"op", item.what}});
      continue;
    }
    if (redis_away) {  // one failed attempt per tick is enough to know
      keep.push_back(std::move(item));
      continue;
    }
    const auto started = SteadyClock::now();
    try {
      item.write();
      ctx_.health.succeeded(started);
    } catch (const NotFound&) {
      ctx_.log.warn("Queued write found the task moved; nothing written", {{"op", item.what}});
    } catch (const std::exception& e) {
      ctx_.health.failed(item.what, e);
      redis_away = true;
      keep.push_back(std::move(item));
    }
  }
  std::lock_guard lock(mu_);
  for (auto& item : keep) items_.push_back(std::move(item));
}

}  // namespace wk::queue
