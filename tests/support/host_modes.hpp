#pragma once
// The two ways a worker serves plugins (docs/plugin-isolation.md): in its own process
// (plugins::PluginHost) and in runner processes (runner::RunnerHost). ABI tests run in both.
// make_plugin_host needs WK_WORKER_BINARY (the `worker` the runners are started from).
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "plugins/plugins.hpp"
#include "runner/runner.hpp"

namespace wk::test {

enum class Isolation { none, process };

// TaskServices that keep the written result, count heartbeats (a test awaits a handler's start
// by its first heartbeat) and keep the last progress reported.
class RecordingServices final : public task::TaskServices {
 public:
  bool write_result(std::string_view data) override {
    std::lock_guard lock(mu);
    result = std::string(data);
    return true;
  }
  void heartbeat(const task::Progress& reported) override {
    {
      std::lock_guard lock(mu);
      progress = reported;
    }
    ++heartbeats;
  }
  std::mutex mu;
  std::optional<std::string> result;
  task::Progress progress;
  std::atomic<int> heartbeats{0};
};

inline std::string isolation_name(Isolation isolation) {
  return isolation == Isolation::none ? "InProcess" : "RunnerProcess";
}

#ifdef WK_WORKER_BINARY
inline std::unique_ptr<plugins::Host> make_plugin_host(Isolation isolation, const log::Logger& logger,
                                                       plugins::ConfigSnapshot config, db::Pool* pool,
                                                       task::Enqueuer* enqueuer,
                                                       plugins::HostOptions options = {}) {
  if (isolation == Isolation::none) {
    return std::make_unique<plugins::PluginHost>(logger, std::move(config), pool, enqueuer,
                                                 std::move(options));
  }
  runner::RunnerOptions runner_options;
  runner_options.executable = WK_WORKER_BINARY;
  runner_options.host = std::move(options);
  return std::make_unique<runner::RunnerHost>(logger, std::move(config), pool, enqueuer,
                                              std::move(runner_options));
}
#endif

}  // namespace wk::test
