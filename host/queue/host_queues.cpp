#include "queue/host_queues.hpp"

#include <algorithm>
#include <set>
#include <thread>

namespace wk::queue {

std::map<std::string, std::chrono::milliseconds> UnservedHostQueues::check(std::chrono::milliseconds timeout,
                                                                           Clock::time_point now) {
  // Cheapest first: other machines' queues, then those holding tasks, and only for those the
  // server records (one read per live server). Usually the first read ends it.
  std::vector<std::string> hosts;
  for (auto& q : broker_.all_queues()) {
    if (!task::host_of_queue(q).empty() && q != own_) hosts.push_back(std::move(q));
  }
  std::vector<std::string> waiting;
  if (!hosts.empty()) {
    const auto backlogs = broker_.backlogs(hosts);
    for (size_t i = 0; i < hosts.size(); ++i) {
      if (backlogs[i] > 0) waiting.push_back(std::move(hosts[i]));
    }
  }
  std::map<std::string, Clock::time_point> still;
  std::map<std::string, std::chrono::milliseconds> out;
  if (!waiting.empty()) {
    // Served: listed by a live server that is not a takeover engine. A worker lists its own
    // host queue beside its WORKER_QUEUES; a takeover engine lists one host queue and nothing
    // else, and must not count, or the workers that took a queue over would each see the
    // others and give it back.
    std::set<std::string> served;
    for (const auto& key : broker_.live_servers()) {
      const auto info = broker_.server_info(key);
      if (!info) continue;
      const bool takeover =
          info->queues.size() == 1 && !task::host_of_queue(info->queues.front().first).empty();
      if (takeover) continue;
      for (const auto& [name, priority] : info->queues) served.insert(name);
    }
    for (const auto& q : waiting) {
      if (served.count(q) != 0) continue;
      const auto known = unserved_since_.find(q);
      const Clock::time_point since = known == unserved_since_.end() ? now : known->second;
      still.emplace(q, since);
      const auto unserved_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - since);
      if (unserved_for >= timeout) out.emplace(q, unserved_for);
    }
  }
  unserved_since_ = std::move(still);
  return out;
}

namespace {
// Often enough that a queue is taken over soon after its timeout, rarely enough to cost Redis
// nothing (a few reads per look).
std::chrono::milliseconds look_interval(std::chrono::milliseconds timeout) {
  return std::clamp(timeout / 4, std::chrono::milliseconds(200), std::chrono::milliseconds(15000));
}
}  // namespace

HostQueueTakeover::HostQueueTakeover(Broker& broker, std::string own_queue, std::chrono::milliseconds timeout,
                                     EngineFactory factory, log::Logger log)
    : unserved_(broker, std::move(own_queue)),
      timeout_(timeout),
      factory_(std::move(factory)),
      log_(std::move(log)),
      loop_("host queue takeover", look_interval(timeout), false, [this] {
        try {
          tick();
        } catch (const std::exception& e) {
          // Redis away: the engines keep serving what they took; the next look decides again.
          log_.debug("Cannot look for unserved host queues", {{"error", e.what()}});
        }
        return look_interval(timeout_);
      }) {}

HostQueueTakeover::~HostQueueTakeover() { stop(); }

void HostQueueTakeover::start() { loop_.start(); }

void HostQueueTakeover::stop() {
  loop_.stop();  // no look after this one, so none races the shutdown below
  std::map<std::string, Engines> engines;
  {
    std::lock_guard lock(mu_);
    engines.swap(engines_);
  }
  // At once, not one after the other: each may wait its grace for a running task.
  std::vector<std::thread> shutdowns;
  shutdowns.reserve(engines.size());
  for (auto& [queue, taken] : engines) shutdowns.emplace_back([e = taken.engine.get()] { e->shutdown(); });
  for (auto& t : shutdowns) t.join();
  for (auto& [queue, taken] : engines) taken.engine.reset();  // before its broker
}

std::vector<std::string> HostQueueTakeover::taken_over() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  out.reserve(engines_.size());
  for (const auto& [queue, taken] : engines_) out.push_back(queue);
  return out;
}

void HostQueueTakeover::tick() {
  const auto unserved = unserved_.check(timeout_, Clock::now());
  std::vector<Engines> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = engines_.begin(); it != engines_.end();) {
      if (unserved.count(it->first) != 0) {
        ++it;
        continue;
      }
      log_.info("A taken-over host queue is served again or empty; giving it back", {{"queue", it->first}});
      done.push_back(std::move(it->second));
      it = engines_.erase(it);
    }
    for (const auto& [queue, unserved_for] : unserved) {
      if (engines_.count(queue) != 0) continue;
      log_.warn("Taking over the queue of a machine no worker serves: its handlers end its tasks",
                {{"queue", queue}, {"unserved_ms", static_cast<int64_t>(unserved_for.count())}});
      Engines taken = factory_(queue);
      taken.engine->start();
      engines_.emplace(queue, std::move(taken));
    }
  }
  for (auto& taken : done) {
    taken.engine->shutdown();
    taken.engine.reset();  // before its broker
  }
}

}  // namespace wk::queue
