#pragma once
// The plugin layer: loads handler plugins (.so, C ABI of sdk/include/wk/wk_abi.h), offers them
// the host-services table, and routes tasks to them (task::Dispatcher).
//
//   PluginHost host(logger, config, pool, enqueuer, {});
//   host.load_directory("./plugins");        // one log line per plugin, one error per refusal
//   engine.run(host);                         // the engine calls host.dispatch(execution)
//   host.shutdown();                          // after the engine drained: plugin shutdown()
//
// The plugin layer knows nothing about Redis: results, heartbeats and cancellation come in
// through task::Execution; immediate enqueues go out through task::Enqueuer.
// See docs/plugin-loading.md for the checks a file goes through and why.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "log/log.hpp"
#include "task/task.hpp"

namespace wk::db {
class Pool;
}

namespace wk::plugins {

// Environment / .env snapshot taken by the app at start-up; plugins read it with config_get.
using ConfigSnapshot = std::map<std::string, std::string>;

struct PluginInfo;

// The answer to HostOptions::admit.
struct Admission {
  enum class Verdict { admit, refuse, withdraw } verdict = Verdict::admit;
  std::string reason;  // refuse: logged and returned as the refusal; withdraw: returned, not logged
};

struct HostOptions {
  // Private copies of plugin files (<basename>@<sha256>.so) are staged in a fresh 0700
  // directory wk-plugins-<uid>-<pid>-XXXXXX made (mkdtemp) under this base.
  // Empty base: $XDG_RUNTIME_DIR when set and writable, else /tmp.
  std::filesystem::path staging_dir;
  // Remove that directory when the PluginHost is destroyed (the mapped images stay valid: each
  // copy is unlinked right after dlopen anyway).
  bool remove_staging_dir = true;
  // How long shutdown() waits for running handlers before it gives up on a plugin ("zombie":
  // its shutdown() is never called, its library stays mapped).
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(30)};
  // Asked once a file's declarations are validated, before init() runs: a plugin runner asks
  // the worker, which knows the other plugins. Empty = admit everything.
  std::function<Admission(const PluginInfo&)> admit;
};

struct HandlerInfo {
  std::string task_type;
  std::string description;
  uint32_t flags = 0;            // WK_HANDLER_*
  uint32_t max_concurrency = 0;  // 0 = host default (no extra limit)
  uint32_t default_timeout_ms = 0;
};

// What a plugin file declares (copied out of its entry at load; the host never reads plugin
// static data again).
struct PluginInfo {
  std::filesystem::path file;  // the file as found in the plugin directory
  std::string sha256;          // hex digest of the file's bytes
  std::string plugin_id;
  std::string plugin_version;
  std::string build_info;
  uint16_t abi_major = 0;
  uint16_t abi_minor = 0;
  uint16_t min_host_minor = 0;
  uint32_t flags = 0;  // WK_PLUGIN_*
  std::vector<HandlerInfo> handlers;
};

struct Refusal {
  std::filesystem::path file;
  std::string reason;  // one clear sentence, e.g. "needs host ABI 1.5, this host is 1.0"
};

struct LoadReport {
  std::vector<PluginInfo> loaded;  // initialised and serving
  std::vector<Refusal> refused;    // not loaded, or loaded but retired (init failed)
};

// What `worker plugins`, /metrics and /readyz show of one plugin file.
struct PluginStatus {
  std::string plugin_id;  // empty for a file refused before it declared one
  std::string version;
  std::filesystem::path file;
  // serving, draining (an old version finishing its tasks), restarting, crash-looping, or
  // refused (never served: see reason)
  std::string state;
  std::string reason;           // refused: why; restarting/crash-looping: the last death
  int64_t pid = 0;              // the runner (the worker's own pid in process; 0 while down)
  int64_t crashes = 0;          // runner deaths since the worker started
  int64_t in_flight = 0;        // tasks running on it now
  uint64_t resident_bytes = 0;  // the runner's RSS (0 in process)
  bool in_process = false;
};

// What the runtime needs of whoever serves plugins: PluginHost (in this process) or
// runner::RunnerHost (each plugin in a runner process of its own; docs/plugin-isolation.md).
class Host : public task::Dispatcher {
 public:
  // Loads every regular *.so in `dir` (sorted by name). A broken plugin never stops the others.
  // Throws std::runtime_error only when the directory itself is unusable (missing, not a
  // directory, writable by group/others).
  LoadReport load_directory(const std::filesystem::path& dir);
  // Loads one file; on refusal returns the reason (also logged).
  virtual std::optional<Refusal> load_file(const std::filesystem::path& file) = 0;
  // Plugins serving now, in load order.
  virtual std::vector<PluginInfo> plugins() const = 0;
  virtual std::vector<std::string> task_types() const = 0;
  // Every plugin file loaded or refused, in load order.
  virtual std::vector<PluginStatus> status() const = 0;
  // Stops routing, waits (up to the shutdown grace) for running handlers, then shuts every
  // plugin down in reverse load order. Idempotent.
  virtual void shutdown() = 0;

  // Hot swap (docs/plugin-isolation.md): keep `dir` in step with what is served, rescanning when
  // its files change and on request_rescan() (SIGHUP). Only runners can swap a plugin; the
  // in-process host says so once and does nothing.
  virtual void watch(const std::filesystem::path& dir);
  virtual void request_rescan(std::string_view why);
};

class PluginHost final : public Host {
 public:
  // `pool` and `enqueuer` may be null: pg_* and WK_ENQ_IMMEDIATE then return WK_E_UNSUPPORTED.
  // Both must outlive the PluginHost.
  PluginHost(log::Logger logger, ConfigSnapshot config, db::Pool* pool, task::Enqueuer* enqueuer,
             HostOptions options = {});
  ~PluginHost() override;  // shutdown() if not done; removes the staging dir
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  std::optional<Refusal> load_file(const std::filesystem::path& file) override;
  std::vector<PluginInfo> plugins() const override;
  std::vector<std::string> task_types() const override;
  std::vector<PluginStatus> status() const override;

  bool handles(std::string_view type) const override;
  std::chrono::milliseconds attempt_timeout(std::string_view type) const override;
  uint32_t max_concurrency(std::string_view type) const override;
  bool serving() const override;
  // Never throws. An unknown type gives task::unhandled_type (requeue, no attempt counted).
  task::Outcome dispatch(task::Execution& execution) override;

  // Calls each plugin's shutdown() once, after its running handlers returned (up to
  // shutdown_grace). Libraries stay mapped until process exit (retired).
  void shutdown() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- for the CLI (`worker plugins check`, `worker exec`) ----------------------------------

struct FileCheck {
  std::filesystem::path file;
  bool would_load = false;
  std::string reason;              // why not, when !would_load
  std::optional<PluginInfo> info;  // what it declares, when its entry could be read
};

// Preflight + load + entry validation of each file, without init() and without serving.
// Duplicate task types across the given files are reported too.
std::vector<FileCheck> check_files(const std::vector<std::filesystem::path>& files, const log::Logger& logger,
                                   const HostOptions& options = {});
// Prints one block per file (id, version, ABI, handlers, "OK" or "REFUSED: reason") to `out`.
// Returns the process exit code: 0 when every file would load, 1 otherwise.
int print_file_checks(const std::vector<std::filesystem::path>& files, std::ostream& out,
                      const log::Logger& logger, const HostOptions& options = {});

struct LocalRun {
  std::filesystem::path plugins_dir;
  std::string type;
  std::string payload;
  std::string queue = "default";
  task::Headers headers;
  std::string task_id;                   // empty = random UUID
  std::chrono::milliseconds timeout{0};  // 0 = no deadline
};

struct LocalResult {
  task::Outcome outcome;
  std::optional<std::string> result;            // what the handler wrote with result_write
  std::optional<task::Progress> progress;       // its last heartbeat's progress, if it sent one
  std::vector<task::EnqueueRequest> staged;     // follow-ups it staged (not published)
  std::vector<task::EnqueueRequest> immediate;  // WK_ENQ_IMMEDIATE requests (recorded, not published)
  LoadReport load;                              // what loading the directory gave
};

// Loads `run.plugins_dir`, runs one task through its handler without Redis, shuts down.
// Throws std::runtime_error when no plugin serves `run.type` or the directory is unusable.
LocalResult run_local(const LocalRun& run, const log::Logger& logger, const ConfigSnapshot& config,
                      db::Pool* pool, const HostOptions& options = {});
// run_local + prints the disposition (succeeded, retry, retry_after, fail_no_retry, cancelled),
// the error, the result and the staged follow-ups to `out`. Returns 0 on succeeded, 1 on any
// other disposition, 2 when the task could not be run at all (message printed).
int exec_local(const LocalRun& run, std::ostream& out, const log::Logger& logger,
               const ConfigSnapshot& config, db::Pool* pool, const HostOptions& options = {});

// "succeeded", "retry", "retry_after", "fail_no_retry", "cancelled".
std::string_view disposition_name(task::Disposition disposition);

}  // namespace wk::plugins
