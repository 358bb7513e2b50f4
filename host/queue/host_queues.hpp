#pragma once
// Machines that stopped for good (docs/operations.md, "Several machines"). Each worker serves
// its machine's queue (task::host_queue) first; steps that need that machine's files wait there.
// When no live worker has served a host queue that holds tasks (pending, active, or due) for
// `timeout`, the workers that notice take it over: each runs a small engine of its own on that
// queue (listed among asynq's servers like any other), so its tasks reach their handlers, which
// end them as they must (the shipped plugins fail a step whose worktree is out of reach, with
// the reason). The engine stops once the queue is served again or empty. asynq's tools list the
// tasks throughout.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "log/log.hpp"
#include "queue/broker.hpp"
#include "queue/context.hpp"  // PeriodicLoop
#include "queue/engine.hpp"

namespace wk::queue {

// Which host queues hold work that no live worker serves, and since when (as this worker saw).
class UnservedHostQueues {
 public:
  UnservedHostQueues(Broker& broker, std::string own_queue) : broker_(broker), own_(std::move(own_queue)) {}
  // Looks again (throws on Redis errors). Returns the host queues with tasks that no live worker
  // has served (takeover engines, ours or others', do not count) for at least `timeout`, each
  // with how long.
  std::map<std::string, std::chrono::milliseconds> check(std::chrono::milliseconds timeout,
                                                         Clock::time_point now);

 private:
  Broker& broker_;
  std::string own_;
  std::map<std::string, Clock::time_point> unserved_since_;
};

class HostQueueTakeover {
 public:
  // The engine that serves one taken-over queue, and the broker it uses (its own: an engine's
  // waits for work and their wake-ups belong to its broker). The engine goes first.
  struct Engines {
    std::unique_ptr<Broker> broker;
    std::unique_ptr<Engine> engine;
  };
  // Makes them (not started).
  using EngineFactory = std::function<Engines(const std::string& queue)>;
  HostQueueTakeover(Broker& broker, std::string own_queue, std::chrono::milliseconds timeout,
                    EngineFactory factory, log::Logger log);
  ~HostQueueTakeover();  // stop()
  void start();
  // Shuts the engines down (their running tasks requeued, as any shutdown does).
  void stop();
  std::vector<std::string> taken_over() const;

 private:
  void tick();

  UnservedHostQueues unserved_;
  const std::chrono::milliseconds timeout_;
  EngineFactory factory_;
  log::Logger log_;
  mutable std::mutex mu_;
  std::map<std::string, Engines> engines_;  // queue -> its engine
  PeriodicLoop loop_;                       // last: its thread ticks on the members above
};

}  // namespace wk::queue
