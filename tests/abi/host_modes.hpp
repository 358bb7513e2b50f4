#pragma once
// The two ways a worker serves plugins (docs/plugin-isolation.md): in its own process
// (plugins::PluginHost) and in runner processes (runner::RunnerHost). ABI tests run in both.
// Targets that include this define WK_WORKER_BINARY (the `worker` the runners are started from).
#include <memory>
#include <string>

#include "plugins/plugins.hpp"
#include "runner/runner.hpp"

namespace wk::test {

enum class Isolation { none, process };

inline std::string isolation_name(Isolation isolation) {
  return isolation == Isolation::none ? "InProcess" : "RunnerProcess";
}

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

}  // namespace wk::test
