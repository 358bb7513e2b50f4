#pragma once
// The heartbeat loop (protocol §6.8, §6.16, §7.6, §7.8): at start and every heartbeat_interval,
// extends the lease of every running task whose local lease is still valid (one ZADD XX per
// queue), fires the lease-lost notice (cancel, reason lease_lost) once for the others, and writes
// ServerInfo + one WorkerInfo per running task. stop() clears the server state (§6.17). Every
// 30 s it also reads the live servers, for this server's place among those that serve the same
// queues (FleetPosition); each new server's ServerInfo is read once.
#include <map>
#include <string>

#include "queue/context.hpp"

namespace wk::queue {

class Heartbeat {
 public:
  explicit Heartbeat(EngineContext& ctx);
  void start() { loop_.start(); }
  void stop();
  bool healthy() const { return loop_.healthy(); }

 private:
  void tick();
  void refresh_fleet_position();
  bool serves_our_queues(const asynq::ServerInfo& info) const;
  EngineContext& ctx_;
  asynq::Timestamp start_time_;
  SteadyClock::time_point fleet_read_at_{};  // loop thread only
  std::map<std::string, bool> peer_cache_;   // live server key -> serves our queues; loop thread only
  PeriodicLoop loop_;
};

}  // namespace wk::queue
