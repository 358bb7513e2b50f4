#include "queue/heartbeat.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace wk::queue {

namespace {
// How often the fleet is read: a server that joins takes its turns from then on; until then the
// others cover them.
constexpr std::chrono::seconds kFleetReadInterval{30};

asynq::Timestamp to_timestamp(Clock::time_point t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  asynq::Timestamp ts;
  ts.seconds = ns / 1'000'000'000;
  ts.nanos = static_cast<int32_t>(ns % 1'000'000'000);
  if (ts.nanos < 0) {
    ts.nanos += 1'000'000'000;
    ts.seconds -= 1;
  }
  return ts;
}
}  // namespace

Heartbeat::Heartbeat(EngineContext& ctx)
    : ctx_(ctx),
      start_time_(to_timestamp(Clock::now())),
      loop_("heartbeat", ctx.settings.heartbeat_interval, true, [this] {
        tick();
        return ctx_.settings.heartbeat_interval;
      }) {}

void Heartbeat::stop() {
  loop_.stop();
  const auto& id = ctx_.settings.identity;
  const auto started = SteadyClock::now();
  try {
    ctx_.broker.clear_server_state(id.host, id.pid, id.server_id);
    ctx_.health.succeeded(started);
  } catch (const std::exception& e) {
    ctx_.health.failed("clear_server_state", e);
  }
}

void Heartbeat::tick() {
  const auto now = Clock::now();
  const auto running = ctx_.inflight.snapshot();
  std::map<std::string, std::vector<std::shared_ptr<InFlightTask>>> by_queue;
  for (const auto& t : running) {
    if (t->lease_valid(now)) {
      by_queue[t->task.queue].push_back(t);
    } else if (!t->lease_lost_notified.exchange(true)) {
      ctx_.task_log(t->task).warn("Local lease expired; cancelling the task");
      t->cancellation.cancel(task::CancelReason::lease_lost);
    }
  }
  for (const auto& [queue, tasks] : by_queue) {
    std::vector<std::string> ids;
    ids.reserve(tasks.size());
    for (const auto& t : tasks) ids.push_back(t->task.id);
    const auto started = SteadyClock::now();
    try {
      const auto expiry = ctx_.broker.extend_leases(queue, ids, ctx_.settings.lease);
      ctx_.health.succeeded(started);
      const auto after = Clock::now();
      for (const auto& t : tasks) t->extend_lease(expiry, after);
    } catch (const std::exception& e) {
      ctx_.health.failed("extend_leases", e);
    }
  }
  // The fleet permits of running tasks live as long as their leases (a dead worker's expire).
  ctx_.flow.extend_fleet_permits();

  const auto& id = ctx_.settings.identity;
  asynq::ServerInfo info;
  info.host = id.host;
  info.pid = id.pid;
  info.server_id = id.server_id;
  info.concurrency = ctx_.settings.concurrency;
  int top = 0;
  for (const auto& q : ctx_.settings.queues) {
    info.queues.emplace_back(q.name, q.priority);
    top = std::max(top, q.priority);
  }
  // asynq's tools show a priority per queue: the host queue's is above all (it is tried first),
  // and other workers read it here to tell whether some live worker serves a host's queue.
  if (!ctx_.settings.host_queue.empty()) info.queues.emplace_back(ctx_.settings.host_queue, top + 1);
  info.strict_priority = ctx_.settings.strict_priority;
  info.status = to_string(ctx_.status.load());
  info.start_time = start_time_;
  info.active_worker_count = static_cast<int32_t>(running.size());
  std::vector<asynq::WorkerInfo> workers;
  workers.reserve(running.size());
  for (const auto& t : running) {  // including tasks whose lease expired (§7.8)
    asynq::WorkerInfo w;
    w.host = id.host;
    w.pid = id.pid;
    w.server_id = id.server_id;
    w.task_id = t->task.id;
    w.task_type = t->task.type;
    w.task_payload = t->task.payload;
    w.queue = t->task.queue;
    w.start_time = to_timestamp(t->task.started_at);
    w.deadline = to_timestamp(t->task.deadline);
    auto progress = t->progress();
    w.progress_done = progress.done;
    w.progress_total = progress.total;
    // Go's decoders refuse ill-formed UTF-8 in strings; the note is the plugin's text.
    w.progress_note = asynq::sanitize_utf8(progress.note);
    workers.push_back(std::move(w));
  }
  const auto started = SteadyClock::now();
  try {
    ctx_.broker.write_server_state(info, workers, ctx_.settings.server_ttl);
    ctx_.health.succeeded(started);
  } catch (const std::exception& e) {
    ctx_.health.failed("write_server_state", e);
    return;
  }
  if (fleet_read_at_ == SteadyClock::time_point{} ||
      SteadyClock::now() - fleet_read_at_ >= kFleetReadInterval) {
    refresh_fleet_position();
  }
}

void Heartbeat::refresh_fleet_position() {
  const auto& id = ctx_.settings.identity;
  const std::string own = asynq::server_info_key(id.host, id.pid, id.server_id);
  const auto started = SteadyClock::now();
  try {
    // Peers are the live servers that serve exactly our queues: a turn taken by a server of
    // other queues would leave ours undone. A server's queues never change, so each is read once.
    std::map<std::string, bool> same_queues;
    std::vector<std::string> peers;
    for (const std::string& key : ctx_.broker.live_servers()) {  // sorted
      auto known = peer_cache_.find(key);
      bool same = key == own;
      if (known != peer_cache_.end()) {
        same = known->second;
        same_queues.emplace(key, same);
      } else if (!same) {
        // A server listed before its ServerInfo is written (its first beat) is asked again next
        // time rather than remembered as a stranger.
        if (const auto info = ctx_.broker.server_info(key)) {
          same = serves_our_queues(*info);
          same_queues.emplace(key, same);
        }
      }
      if (same) peers.push_back(key);
    }
    peer_cache_.swap(same_queues);
    const auto at = std::lower_bound(peers.begin(), peers.end(), own);
    const bool listed = at != peers.end() && *at == own;
    ctx_.fleet.rank = static_cast<int>(at - peers.begin());
    ctx_.fleet.size = static_cast<int>(peers.size()) + (listed ? 0 : 1);
    fleet_read_at_ = SteadyClock::now();
    ctx_.health.succeeded(started);
  } catch (const std::exception& e) {
    ctx_.health.failed("live_servers", e);
  }
}

bool Heartbeat::serves_our_queues(const asynq::ServerInfo& info) const {
  std::set<std::string> theirs;
  for (const auto& [queue, priority] : info.queues) theirs.insert(queue);
  const auto& ours = ctx_.order.names();
  return theirs == std::set<std::string>(ours.begin(), ours.end());
}

}  // namespace wk::queue
