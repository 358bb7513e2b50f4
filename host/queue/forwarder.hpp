#pragma once
// The forwarder (protocol §6.14): moves due scheduled and retry tasks of every served queue to
// pending; the LPUSH onto pending is what wakes idle fetchers. Any server can do it for all, so
// the live servers take turns (fleet_slot_delay): the fleet forwards once per forwarder_interval
// however many servers it has, and each turn costs a plain probe per set until something is due.
#include "queue/context.hpp"

namespace wk::queue {

class Forwarder {
 public:
  explicit Forwarder(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  std::chrono::milliseconds tick();  // returns the wait until our next turn
  EngineContext& ctx_;
  std::vector<std::string> sources_;  // scheduled and retry key of each queue, in queue order
  PeriodicLoop loop_;
};

}  // namespace wk::queue
