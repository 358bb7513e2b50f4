#include "queue/flow_control.hpp"

#include <algorithm>

#include "queue/context.hpp"

namespace wk::queue {

namespace {

using std::chrono::milliseconds;
// A pause set by another worker is seen within this (the pauses are read again when a task is
// admitted after it has passed), so one read serves every admission in between.
constexpr milliseconds kPauseRefresh{100};
// How soon a task refused a fleet permit asks again: permits are given back as tasks end (the
// lease is only for dead workers), which no worker is told of.
constexpr milliseconds kFleetPoll{100};
// After a Redis error, when to try again (the task stays parked meanwhile).
constexpr milliseconds kErrorRetry{1000};

}  // namespace

FlowControl::FlowControl(Broker& broker, task::Dispatcher& dispatcher, RedisHealth& health, log::Logger log,
                         Options options)
    : broker_(broker),
      dispatcher_(dispatcher),
      health_(health),
      log_(std::move(log)),
      options_(std::move(options)),
      local_in_use_(options_.limits.size(), 0),
      fleet_members_(options_.limits.size()) {}

const std::vector<size_t>& FlowControl::matching(const std::string& type) {
  auto it = matching_.find(type);
  if (it != matching_.end()) return it->second;
  std::vector<size_t> found;
  for (size_t i = 0; i < options_.limits.size(); ++i) {
    if (options_.limits[i].matches(type)) found.push_back(i);
  }
  // Task types are few (one per handler), so the cache stays small; bound it all the same
  // against a producer that invents types.
  if (matching_.size() > 10000) matching_.clear();
  return matching_.emplace(type, std::move(found)).first->second;
}

// One attempt's name: a later attempt of the task on this worker (after an overrun) is another.
std::string FlowControl::member(const InFlightTask& t) const {
  return options_.server_id + ":" + t.task.id + ":" + std::to_string(t.msg.retried);
}

std::chrono::milliseconds FlowControl::paused_for(const std::string& type) {
  std::lock_guard lock(pause_mu_);
  const auto now = Clock::now();
  const auto steady_now = std::chrono::steady_clock::now();
  if (steady_now - paused_read_ >= kPauseRefresh) {
    const auto started = SteadyClock::now();
    try {
      const auto paused = broker_.paused_types();
      health_.succeeded(started);
      // Redis's pauses, and ours that Redis may not have (its write failed) while they last.
      std::map<std::string, Clock::time_point, std::less<>> merged;
      for (const auto& [name, ends] : paused_) {
        if (ends > now) merged[name] = ends;
      }
      for (const auto& [name, left] : paused) merged[name] = std::max(merged[name], now + left);
      paused_ = std::move(merged);
    } catch (const std::exception& e) {
      health_.failed("paused_types", e);  // the pauses known stay in force
    }
    paused_read_ = steady_now;
  }
  const auto it = paused_.find(type);
  if (it == paused_.end() || it->second <= now) return milliseconds(0);
  return std::chrono::ceil<milliseconds>(it->second - now);
}

FlowControl::Admission FlowControl::try_admit(const InFlightTask& t) {
  const std::string& type = t.task.type;
  const auto now = Clock::now();
  const auto refused = [](Clock::time_point retry_at, std::string reason, std::string limit) {
    return Admission{false, retry_at, std::move(reason), std::move(limit)};
  };
  if (const auto left = paused_for(type); left.count() > 0) return refused(now + left, "paused", type);
  std::vector<size_t> limits;
  const uint32_t own = dispatcher_.max_concurrency(type);
  bool own_applies = own > 0;
  {
    std::lock_guard lock(mu_);
    limits = matching(type);
    // Limits with fleet concurrency first, rate-only ones last: a rate token taken is spent, so
    // it is taken only once every permit that could refuse has been granted.
    std::stable_partition(limits.begin(), limits.end(),
                          [&](size_t i) { return options_.limits[i].fleet > 0; });
    for (const size_t i : limits) {
      const auto& limit = options_.limits[i];
      if (limit.concurrency == 0) continue;
      if (local_in_use_[i] >= limit.concurrency)
        return refused(Clock::time_point::max(), "concurrency", limit.pattern);
    }
    if (own_applies) {
      const auto it = own_in_use_.find(type);
      if (it != own_in_use_.end() && it->second >= own)
        return refused(Clock::time_point::max(), "concurrency", type);
    }
  }
  // Fleet permits, one limit at a time; a refusal gives back what this attempt took so far.
  Held held;
  std::string name;  // built only for a fleet-wide limit: most tasks have none
  for (const size_t i : limits) {
    const auto& limit = options_.limits[i];
    if (!limit.fleet_wide()) continue;
    if (name.empty()) name = member(t);
    PermitGrant grant;
    const auto started = SteadyClock::now();
    try {
      grant = broker_.acquire_permit(limit, name, options_.lease);
      health_.succeeded(started);
    } catch (const std::exception& e) {
      health_.failed("acquire_permit", e);
      grant.granted = false;
      grant.retry_in = kErrorRetry;
      grant.reason = "fleet";
    }
    if (!grant.granted) {
      for (const size_t j : held.fleet) {
        try {
          broker_.release_permit(options_.limits[j], name);
        } catch (const std::exception& e) {
          health_.failed("release_permit", e);  // it expires with its lease
        }
      }
      const auto wait =
          std::string_view(grant.reason) == "fleet" ? std::min(grant.retry_in, kFleetPoll) : grant.retry_in;
      return refused(now + wait, grant.reason, limit.pattern);
    }
    if (limit.fleet > 0) held.fleet.push_back(i);
  }
  std::lock_guard lock(mu_);
  for (const size_t i : limits) {
    if (options_.limits[i].concurrency == 0) continue;
    ++local_in_use_[i];
    held.local.push_back(i);
  }
  if (own_applies) {
    ++own_in_use_[type];
    held.own_type = type;
  }
  for (const size_t i : held.fleet) fleet_members_[i].push_back(name);
  if (!held.local.empty() || !held.fleet.empty() || !held.own_type.empty())
    held_.emplace(&t, std::move(held));
  return Admission{true, {}, {}, {}};
}

void FlowControl::release(const InFlightTask& t) {
  Held held;
  std::string name;
  {
    std::lock_guard lock(mu_);
    if (held_.empty()) return;  // the common case: no task holds a permit
    const auto it = held_.find(&t);
    if (it == held_.end()) return;
    held = std::move(it->second);
    held_.erase(it);
    if (!held.fleet.empty()) name = member(t);
    for (const size_t i : held.local) --local_in_use_[i];
    if (!held.own_type.empty()) {
      const auto own = own_in_use_.find(held.own_type);
      if (own != own_in_use_.end() && --own->second == 0) own_in_use_.erase(own);
    }
    for (const size_t i : held.fleet) {
      auto& members = fleet_members_[i];
      members.erase(std::remove(members.begin(), members.end(), name), members.end());
    }
  }
  if (!held.local.empty() || !held.own_type.empty()) {
    local_releases_.fetch_add(1, std::memory_order_acq_rel);
    if (on_local_release_) on_local_release_();
  }
  for (const size_t i : held.fleet) {
    const auto started = SteadyClock::now();
    try {
      broker_.release_permit(options_.limits[i], name);
      health_.succeeded(started);
    } catch (const std::exception& e) {
      health_.failed("release_permit", e);  // it expires with its lease
    }
  }
}

void FlowControl::extend_fleet_permits() {
  std::vector<std::pair<size_t, std::vector<std::string>>> work;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < fleet_members_.size(); ++i) {
      if (!fleet_members_[i].empty()) work.emplace_back(i, fleet_members_[i]);
    }
  }
  for (const auto& [i, members] : work) {
    const auto started = SteadyClock::now();
    try {
      broker_.extend_permits(options_.limits[i], members, options_.lease);
      health_.succeeded(started);
    } catch (const std::exception& e) {
      health_.failed("extend_permits", e);
    }
  }
}

void FlowControl::pause(const std::string& type, std::chrono::milliseconds duration) {
  if (duration.count() <= 0) return;
  {
    std::lock_guard lock(pause_mu_);
    auto& ends = paused_[type];
    ends = std::max(ends, Clock::now() + duration);
  }
  log_.warn("Task type paused across the fleet: the service it calls is rate limiting",
            {{"task_type", type}, {"for_ms", static_cast<int64_t>(duration.count())}});
  const auto started = SteadyClock::now();
  try {
    broker_.pause_type(type, duration);
    health_.succeeded(started);
  } catch (const std::exception& e) {
    health_.failed("pause_type", e);  // this worker keeps the pause; the others do not learn it
  }
}

void FlowControl::parked(const std::string& type, const std::string& reason, const std::string& limit) {
  std::lock_guard lock(mu_);
  Throttled& th = throttled_[type];
  if (th.parked++ == 0) {
    th.since = std::chrono::steady_clock::now();
    log_.info("Task type throttled: its tasks wait for a permit",
              {{"task_type", type}, {"reason", reason}, {"limit", limit}});
  }
}

void FlowControl::unparked(const std::string& type) {
  std::lock_guard lock(mu_);
  const auto it = throttled_.find(type);
  if (it == throttled_.end() || it->second.parked == 0) return;
  Throttled& th = it->second;
  if (--th.parked == 0) {
    const auto spell = std::chrono::steady_clock::now() - th.since;
    th.total += spell;
    log_.info(
        "Task type no longer throttled",
        {{"task_type", type},
         {"throttled_ms", static_cast<int64_t>(std::chrono::duration_cast<milliseconds>(spell).count())}});
  }
}

std::vector<FlowLimitState> FlowControl::limits() const {
  std::lock_guard lock(mu_);
  std::vector<FlowLimitState> out;
  for (size_t i = 0; i < options_.limits.size(); ++i) {
    out.push_back(FlowLimitState{options_.limits[i], local_in_use_[i],
                                 static_cast<uint32_t>(fleet_members_[i].size())});
  }
  return out;
}

std::vector<FlowTypeState> FlowControl::types() const {
  std::lock_guard lock(mu_);
  std::vector<FlowTypeState> out;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [type, th] : throttled_) {
    auto total = th.total;
    if (th.parked > 0) total += now - th.since;
    out.push_back(FlowTypeState{type, th.parked, std::chrono::duration<double>(total).count()});
  }
  return out;
}

}  // namespace wk::queue
