#pragma once
// The janitor (protocol §6.19): every janitor_interval, deletes completed tasks whose retention has
// run out, janitor_batch per script call, for every served queue.
#include "queue/context.hpp"

namespace wk::queue {

class Janitor {
 public:
  explicit Janitor(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop() { loop_.stop(); }
  bool healthy() const { return loop_.healthy(); }

 private:
  void tick();
  EngineContext& ctx_;
  PeriodicLoop loop_;
};

}  // namespace wk::queue
