#pragma once
// The recoverer (spec §7.7): at start and every recoverer_interval, tasks of the served queues
// whose lease score is <= now - lease_expiry_cutoff go to retry (or archive when exhausted) with
// "asynq: task lease expired". It also recovers ids that sit in `active` with no lease entry at
// all (asynq #1144: a crash between the list move and the lease write of another implementation),
// but only after it has seen the same id lease-less for orphan_grace, and never one this
// process is running.
#include <unordered_map>
#include <unordered_set>

#include "queue/context.hpp"

namespace wk::queue {

class Recoverer {
 public:
  explicit Recoverer(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  void tick();
  void recover(const asynq::TaskMessage& msg);
  EngineContext& ctx_;
  std::unordered_map<std::string, SteadyClock::time_point> leaseless_since_;  // loop thread only
  std::unordered_set<std::string> reported_leaseless_;                       // loop thread only
  PeriodicLoop loop_;
};

}  // namespace wk::queue
