#pragma once
// The recoverer (protocol §7.7): at start and every recoverer_interval, tasks of the served queues
// whose lease score is <= now - lease_expiry_cutoff go to retry (or archive when exhausted) with
// "asynq: task lease expired". It also recovers ids that sit in `active` with no lease entry at
// all (asynq #1144: a worker that died between steps, or an old bug), through
// Broker::recover_orphan (which re-checks "in active, no lease" atomically with the move), but
// only once it has seen the same id lease-less on two consecutive passes at least orphan_grace
// apart, and never one this process is running.
//
// Each pass first probes every queue with plain reads (the earliest lease expiry, the length of
// `active`) and runs the listing scripts only where there is something to list. While any queue
// has active tasks the passes come every recoverer_interval. When none has, no lease can expire
// sooner than a lease's length after the probe, so the next pass comes min(lease, 30 s) later
// (asynq's lease is 30 s). Each server keeps its own passes: taking turns would let a server that
// dies right after another's probe take the next turn, and its leases' recovery, with it.
#include <unordered_map>

#include "queue/context.hpp"

namespace wk::queue {

class Recoverer {
 public:
  explicit Recoverer(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  std::chrono::milliseconds tick();  // returns the wait until the next pass
  void recover(const asynq::TaskMessage& msg);
  bool recover_orphan(const asynq::TaskMessage& msg);  // false: Redis failed, try next pass
  EngineContext& ctx_;
  std::unordered_map<std::string, SteadyClock::time_point> leaseless_since_;  // loop thread only
  PeriodicLoop loop_;
};

}  // namespace wk::queue
