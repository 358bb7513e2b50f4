#pragma once
// The janitor (protocol §6.19): deletes completed tasks whose retention has run out, janitor_batch
// per script call, for every served queue. The live servers take turns (fleet_slot_delay), once
// per janitor_interval for the fleet; a turn costs a plain probe per queue until one has work.
#include "queue/context.hpp"

namespace wk::queue {

class Janitor {
 public:
  explicit Janitor(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  std::chrono::milliseconds tick();  // returns the wait until our next turn
  EngineContext& ctx_;
  std::vector<std::string> completed_;  // the completed key of each queue, in queue order
  PeriodicLoop loop_;
};

}  // namespace wk::queue
