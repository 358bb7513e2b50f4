#pragma once
// Plugin isolation: every plugin runs in a runner process of its own (docs/plugin-isolation.md).
//
//   runner::RunnerHost host(logger, config, pool, enqueuer, options);
//   host.load_directory("./plugins");   // one runner per plugin file, init() inside it
//   engine.run(host);                   // tasks go to the runner over a socket
//   host.shutdown();                    // drain, plugin shutdown() in each runner, runners exit
//
// A runner that dies (signal, exit, memory limit, no answer to liveness checks) takes only its
// own tasks with it: they go back to their queue at once without counting an attempt, one ERROR
// line says what happened, and the runner is restarted with exponential backoff. The worker's
// engine, Redis, PostgreSQL pool and HTTP endpoint never run plugin code.
#include <sys/types.h>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "plugins/plugins.hpp"

namespace wk::db {
class Pool;
}

namespace wk::runner {

struct RunnerOptions {
  // The program that runs `<executable> --plugin-runner ...`: the worker binary itself.
  std::filesystem::path executable = "/proc/self/exe";
  // Staging base and shutdown grace, as for the in-process host.
  plugins::HostOptions host;
  // A runner is pinged every liveness_interval; one that has not answered for liveness_timeout
  // is killed and counts as crashed ("no answer to liveness check").
  std::chrono::milliseconds liveness_interval{std::chrono::seconds(2)};
  std::chrono::milliseconds liveness_timeout{std::chrono::seconds(20)};
  // A runner runs the tasks of a type that takes less than this (on average, over its last runs
  // there) on the thread that read them, one after the other, so that their outcomes leave in
  // one write (docs/plugin-isolation.md, "What it costs"); zero: never.
  std::chrono::microseconds inline_max{50};
  // Restart delays after a crash: doubling from min to max; back to min once a runner has
  // served for a minute.
  std::chrono::milliseconds restart_backoff_min{100};
  std::chrono::milliseconds restart_backoff_max{std::chrono::seconds(30)};
  // How long a task waits for its plugin's runner to come back before it is handed back to
  // its queue (without counting an attempt).
  std::chrono::milliseconds restart_wait{std::chrono::seconds(5)};
  // Resident memory limit per runner in bytes (0 = none), by plugin id where set. A runner over
  // it is killed: a crash with the reason "memory limit".
  uint64_t memory_max = 0;
  std::map<std::string, uint64_t> memory_max_by_plugin;
  // RLIMIT_NOFILE of each runner (0 = inherit the worker's).
  uint64_t open_files_max = 0;
  // Plugin ids served in the worker's own process (trusted plugins; no crash containment).
  std::set<std::string> in_process;
  // Poison tasks: a task that crashed its plugin's runner crash_limit times while running alone
  // in a fresh runner is archived. Counts are kept by `crash_ledger` (Redis in the worker); null
  // keeps them in this process only.
  int crash_limit = 2;
  task::CrashLedger* crash_ledger = nullptr;
  // Called once per runner death that was not asked for, with the plugin id and a short reason
  // ("SIGSEGV", "exit", "memory_limit", "liveness", "channel"): a metrics counter.
  std::function<void(const std::string& plugin_id, const std::string& reason)> on_crash;
};

class RunnerHost final : public plugins::Host {
 public:
  // `pool` and `enqueuer` may be null (as for PluginHost); both must outlive the RunnerHost.
  RunnerHost(log::Logger logger, plugins::ConfigSnapshot config, db::Pool* pool, task::Enqueuer* enqueuer,
             RunnerOptions options = {});
  ~RunnerHost() override;  // shutdown() if not done
  RunnerHost(const RunnerHost&) = delete;
  RunnerHost& operator=(const RunnerHost&) = delete;

  std::optional<plugins::Refusal> load_file(const std::filesystem::path& file) override;
  std::vector<plugins::PluginInfo> plugins() const override;
  std::vector<std::string> task_types() const override;
  std::vector<plugins::PluginStatus> status() const override;
  bool handles(std::string_view type) const override;
  std::chrono::milliseconds attempt_timeout(std::string_view type) const override;
  uint32_t max_concurrency(std::string_view type) const override;
  bool serving() const override;
  task::Outcome dispatch(task::Execution& execution) override;
  // A task of a serving runner starts without a thread of the caller's: its run frame is posted,
  // and flush_started() writes every frame posted since, per runner in one write. The outcome
  // comes on the runner's reader thread.
  bool start(task::Execution& execution, task::AttemptCompletion& done) override;
  void flush_started() override;
  void shutdown() override;

  // The runner process of `plugin_id` now (0 when it has none: in process, or restarting).
  pid_t runner_pid(const std::string& plugin_id) const;

  // Watches `dir` (inotify) and rescans it on every change: a new file is loaded, a changed one
  // replaces its plugin once the new version has loaded (tasks running on the old version
  // finish there), a removed one stops taking tasks and its runner exits once drained.
  void watch(const std::filesystem::path& dir) override;
  // Rescans the watched directory soon (from the supervisor thread); `why` is logged.
  void request_rescan(std::string_view why) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The runner process's main (`worker --plugin-runner CHANNEL_FD CRASH_FD WORKER_PID`).
int run_plugin_runner(int channel_fd, int crash_fd, pid_t worker_pid);

}  // namespace wk::runner
