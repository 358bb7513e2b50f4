#pragma once
// The serving process: owns every part of a running worker, builds them in dependency order
// (config -> logger -> Redis -> broker/client -> db pool -> plugins -> engine) and tears them
// down in reverse. main() only parses the command line and hands a Config to a Runtime.
#include <condition_variable>
#include <memory>
#include <mutex>

#include "config/config.hpp"
#include "db/db.hpp"
#include "log/log.hpp"
#include "redis/redis.hpp"

namespace wk::app {

// The connection settings a Config describes (shared with the one-shot commands). Loads the TLS
// files: throws redis::Error (Kind::setting, naming the variable) when one cannot be used.
redis::Settings redis_settings(const config::Config& config);
db::Settings db_settings(const config::Config& config);

class Runtime {
 public:
  Runtime(config::Config config, log::Logger logger);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Serves until a stop is requested; returns the process exit code. Blocks SIGTERM/SIGINT
  // handling onto a watcher thread for its duration: the first signal stops gracefully (running
  // tasks get WORKER_SHUTDOWN_TIMEOUT), the second requeues what still runs and exits at once.
  int serve();

  // Thread-safe. `immediate` skips the grace period.
  void request_stop(bool immediate);

 private:
  struct Parts;
  config::Config config_;
  log::Logger logger_;
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_requested_ = false;
  bool abort_requested_ = false;
  std::unique_ptr<Parts> parts_;
  bool engine_running_ = false;  // guarded by mu_: request_stop(true) may abort it
};

}  // namespace wk::app
