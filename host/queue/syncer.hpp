#pragma once
// Retries completion writes that failed because Redis was away (protocol §7.1 "syncer", §7.6): each
// write is retried every sync_interval until it succeeds, until the task moved under us, or until
// its deadline (the task's local lease) passes, after which the recoverer owns the task.
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "queue/context.hpp"

namespace wk::queue {

class Syncer {
 public:
  explicit Syncer(EngineContext& ctx);
  void add(std::string what, std::function<void()> write, Clock::time_point deadline);
  void start() { loop_.start(); }
  // Stops the loop and tries each queued write one last time.
  void stop();
  bool healthy() const { return loop_.healthy(); }
  std::size_t pending() const;

 private:
  struct Item {
    std::string what;
    std::function<void()> write;
    Clock::time_point deadline;
  };
  void tick();

  EngineContext& ctx_;
  mutable std::mutex mu_;
  std::vector<Item> items_;
  PeriodicLoop loop_;
};

}  // namespace wk::queue
