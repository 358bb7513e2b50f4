#pragma once
// The forwarder (protocol §6.14): every forwarder_interval, moves due scheduled and retry tasks of
// every served queue to pending. The LPUSH onto pending is what wakes idle fetchers.
#include "queue/context.hpp"

namespace wk::queue {

class Forwarder {
 public:
  explicit Forwarder(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  void tick();
  EngineContext& ctx_;
  PeriodicLoop loop_;
};

}  // namespace wk::queue
