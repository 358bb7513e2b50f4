// PluginHost: loads plugins, owns their lifecycle (init / serve / drain / shutdown / retire) and
// dispatches tasks to their handlers.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <shared_mutex>

#include <unistd.h>

#include "db/db.hpp"
#include "plugins/context.hpp"
#include "plugins/loader.hpp"
#include "plugins/plugins.hpp"

namespace wk::plugins {
namespace fs = std::filesystem;
using detail::CtxState;
using detail::HandleKind;
using detail::HandleTable;

namespace {

constexpr std::chrono::milliseconds kMaxRetryAfter = std::chrono::hours(24);

struct PluginInstance {
  detail::LoadedLibrary library;
  std::shared_ptr<const detail::PluginServices> services;
  std::shared_ptr<CtxState> plugin_ctx;
  wk_plugin_state* state = nullptr;

  std::mutex mu;
  std::condition_variable idle;
  int in_flight = 0;
  bool closed = false;  // no more runs: shutdown started
};

struct Route {
  std::shared_ptr<PluginInstance> plugin;
  size_t handler = 0;
};

std::string join_types(const PluginInfo& info) {
  std::string out;
  for (const auto& h : info.handlers) out += (out.empty() ? "" : ",") + h.task_type;
  return out;
}

// The failure code a handler returns when something it depends on (not the task) is away.
constexpr std::string_view kUnavailableCode = "unavailable";

// How long a task waits out a dependency outage before it is tried again (not counted): long
// enough not to spin on a database that is away, short enough to resume within seconds of its
// return. A little jitter spreads a burst of such tasks.
std::chrono::milliseconds dependency_backoff(const task::Task& t) {
  return std::chrono::milliseconds(2000 + static_cast<int64_t>(std::hash<std::string>{}(t.id) % 1000));
}

std::string failure_text(wk_failure& failure, std::string_view fallback) {
  failure.code[sizeof failure.code - 1] = '\0';
  failure.message[sizeof failure.message - 1] = '\0';
  std::string code = failure.code;
  std::string message = failure.message;
  if (code.empty() && message.empty()) return std::string(fallback);
  if (code.empty()) return message;
  if (message.empty()) return code;
  return code + ": " + message;
}

}  // namespace

struct PluginHost::Impl {
  explicit Impl(log::Logger host_logger) : logger(std::move(host_logger)) {}
  log::Logger logger;
  std::shared_ptr<const ConfigSnapshot> config;
  db::Pool* pool;
  task::Enqueuer* enqueuer;
  HostOptions options;
  std::unique_ptr<detail::StagingDir> staging;

  std::mutex load_mu;  // loads are serialised (one control thread at a time)
  mutable std::shared_mutex mu;
  std::vector<std::shared_ptr<PluginInstance>> plugins;
  std::map<std::string, Route, std::less<>> routes;
  mutable std::mutex refused_mu;
  std::vector<Refusal> refused;  // every refusal, for status()
  bool stopping = false;
  bool shut_down = false;

  Refusal refuse(const fs::path& file, std::string reason) {
    logger.error("plugin refused", {{"file", file.string()}, {"reason", reason}});
    std::lock_guard lock(refused_mu);
    refused.push_back(Refusal{file, reason});
    return Refusal{file, std::move(reason)};
  }

  std::optional<Refusal> load(const fs::path& file);
  task::Outcome run(const Route& route, task::Execution& execution);
};

std::optional<Refusal> PluginHost::Impl::load(const fs::path& file) {
  std::lock_guard load_lock(load_mu);
  {
    std::shared_lock lock(mu);
    if (stopping) return refuse(file, "the plugin host is shutting down");
  }
  auto instance = std::make_shared<PluginInstance>();
  try {
    if (!staging)
      staging = std::make_unique<detail::StagingDir>(options.staging_dir, options.remove_staging_dir);
    instance->library = detail::load_plugin_file(file, *staging);
  } catch (const detail::Refused& e) {
    return refuse(file, e.what());
  } catch (const std::exception& e) {
    return refuse(file, e.what());
  }
  const PluginInfo& info = instance->library.info;
  {
    std::shared_lock lock(mu);
    for (const auto& other : plugins) {
      if (other->library.info.plugin_id == info.plugin_id) {
        return refuse(file, "plugin id " + info.plugin_id + " is already loaded from " +
                                other->library.info.file.string());
      }
    }
    for (const auto& handler : info.handlers) {
      if (auto it = routes.find(handler.task_type); it != routes.end()) {
        const PluginInfo& owner = it->second.plugin->library.info;
        return refuse(file, "task type \"" + handler.task_type + "\" of plugin " + info.plugin_id +
                                " is already served by plugin " + owner.plugin_id + " (" +
                                owner.file.string() + ")");
      }
    }
  }

  if (options.admit) {
    Admission admission = options.admit(info);
    if (admission.verdict == Admission::Verdict::refuse) return refuse(file, std::move(admission.reason));
    if (admission.verdict == Admission::Verdict::withdraw) return Refusal{file, std::move(admission.reason)};
  }

  auto owner = std::make_shared<detail::HandleOwner>(
      detail::HandleOwner{logger.with({{"plugin", info.plugin_id}}), info.plugin_id});
  auto services = std::make_shared<const detail::PluginServices>(
      detail::PluginServices{owner, owner->logger, info.plugin_id, config, pool, enqueuer});
  instance->services = services;
  instance->plugin_ctx = std::make_shared<CtxState>(HandleKind::plugin_ctx, services);
  instance->plugin_ctx->set_handle(
      HandleTable::process().add(HandleKind::plugin_ctx, instance->plugin_ctx, owner));
  wk_error error{};
  error.struct_size = sizeof error;
  wk_status status = WK_E_INTERNAL;
  try {
    status = instance->library.init(detail::host_api(),
                                    static_cast<wk_ctx*>(detail::to_pointer(instance->plugin_ctx->handle())),
                                    &instance->state, &error);
  } catch (...) {
    std::snprintf(error.message, sizeof error.message, "init threw an exception past the ABI boundary");
  }
  if (status != WK_OK) {
    // A failed init means no shutdown() (the plugin cleaned up itself); the library is retired.
    instance->plugin_ctx->close();
    error.code[sizeof error.code - 1] = '\0';
    error.message[sizeof error.message - 1] = '\0';
    std::string reason = "init failed (status " + std::to_string(status) + ")";
    if (error.code[0] != '\0') reason += ": " + std::string(error.code);
    if (error.message[0] != '\0') reason += ": " + std::string(error.message);
    return refuse(file, reason);
  }

  {
    std::unique_lock lock(mu);
    plugins.push_back(instance);
    for (size_t i = 0; i < instance->library.handlers.size(); ++i) {
      routes.emplace(instance->library.handlers[i].info.task_type, Route{instance, i});
    }
  }
  logger.info("plugin loaded",
              {{"plugin", info.plugin_id},
               {"version", info.plugin_version},
               {"abi", std::to_string(info.abi_major) + "." + std::to_string(info.abi_minor)},
               {"task_types", join_types(info)},
               {"file", info.file.string()},
               {"sha256", info.sha256.substr(0, 16)}});
  return std::nullopt;
}

task::Outcome PluginHost::Impl::run(const Route& route, task::Execution& execution) {
  PluginInstance& plugin = *route.plugin;
  const detail::LoadedHandler& handler = plugin.library.handlers[route.handler];
  const task::Task& t = execution.task;
  {
    std::lock_guard lock(plugin.mu);
    if (plugin.closed) return {task::Disposition::retry, "worker is shutting down", {}, {}};
    ++plugin.in_flight;
  }
  struct InFlight {
    PluginInstance& plugin;
    ~InFlight() {
      std::lock_guard lock(plugin.mu);
      if (--plugin.in_flight == 0) plugin.idle.notify_all();
    }
  } in_flight{plugin};

  if (plugin.services->deferred_migrations->pending() && plugin.services->pool != nullptr) {
    try {
      plugin.services->deferred_migrations->apply(*plugin.services->pool, plugin.services->plugin_id,
                                                  plugin.services->logger);
    } catch (const std::exception& e) {
      return {task::Disposition::requeue,
              "database unavailable: migrations of plugin " + plugin.services->plugin_id +
                  " are not applied yet: " + e.what(),
              dependency_backoff(t),
              {}};
    }
  }

  const int32_t attempt = t.retried + 1;
  std::vector<wk_kv> headers;
  headers.reserve(t.headers.size());
  for (const auto& [key, value] : t.headers) {
    headers.push_back(wk_kv{{key.c_str(), key.size()}, {value.c_str(), value.size()}});
  }
  auto to_ms = [](task::Clock::time_point tp) {
    return tp == task::Clock::time_point{}
               ? int64_t{0}
               : std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
  };
  wk_task_view view{};
  view.struct_size = sizeof view;
  view.attempt = static_cast<uint32_t>(std::max(attempt, 1));
  view.retried = t.retried;
  view.max_retry = t.max_retry;
  view.id = {t.id.c_str(), t.id.size()};
  view.type = {t.type.c_str(), t.type.size()};
  view.queue = {t.queue.c_str(), t.queue.size()};
  view.payload = {reinterpret_cast<const uint8_t*>(t.payload.c_str()), t.payload.size()};
  view.headers = headers.empty() ? nullptr : headers.data();
  view.header_count = headers.size();
  view.deadline_ms = to_ms(t.deadline);
  view.started_at_ms = to_ms(t.started_at);

  auto ctx = std::make_shared<CtxState>(plugin.services, execution);
  ctx->set_handle(HandleTable::process().add(HandleKind::task_ctx, ctx, plugin.services->owner));
  auto* const ctx_handle = static_cast<wk_ctx*>(detail::to_pointer(ctx->handle()));

  // on_cancel runs on the cancelling thread, only while run() is active, inside the ctx window
  // (close() below waits for it), and before wait_cancelled() wakes: a handler woken by the
  // cancellation finds what its on_cancel did (a child signalled, a flag set) already done.
  auto on_cancel = handler.on_cancel;
  wk_plugin_state* state = plugin.state;
  const auto token =
      execution.cancellation.on_cancel([ctx, on_cancel, state, ctx_handle](task::CancelReason) {
        if (on_cancel != nullptr && ctx->enter_while_running()) {
          try {
            on_cancel(state, ctx_handle);
          } catch (...) {
            ctx->logger().warn("plugin misbehaving", {{"problem", "on_cancel threw an exception"}});
          }
          ctx->leave();
        }
        ctx->notify();
      });

  wk_failure failure{};
  failure.struct_size = sizeof failure;
  wk_disposition disposition = WK_DISP_UNSET;
  bool threw = false;
  ctx->set_running(true);
  try {
    disposition = handler.run(state, ctx_handle, &view, &failure);
  } catch (...) {
    threw = true;
  }
  ctx->set_running(false);
  if (token != 0) execution.cancellation.remove(token);
  ctx->close();

  task::Outcome outcome;
  if (threw) {
    ctx->logger().warn("plugin misbehaving", {{"problem", "run threw an exception past the ABI boundary"}});
    outcome.disposition = task::Disposition::retry;
    outcome.error = "handler threw an exception past the ABI boundary";
    return outcome;
  }
  switch (disposition) {
    case WK_DISP_SUCCEEDED:
      outcome.disposition = task::Disposition::succeeded;
      break;
    case WK_DISP_RETRY:
      outcome.disposition = task::Disposition::retry;
      outcome.error = failure_text(failure, "handler asked for a retry");
      break;
    case WK_DISP_RETRY_AFTER:
      outcome.disposition = task::Disposition::retry_after;
      outcome.error = failure_text(failure, "handler asked for a retry later");
      outcome.retry_after = std::clamp(std::chrono::milliseconds(failure.retry_after_ms),
                                       std::chrono::milliseconds(0), kMaxRetryAfter);
      break;
    case WK_DISP_FAIL_NO_RETRY:
      outcome.disposition = task::Disposition::fail_no_retry;
      outcome.error = failure_text(failure, "handler failed without retry");
      break;
    case WK_DISP_CANCELLED:
      outcome.disposition = task::Disposition::cancelled;
      outcome.error = failure_text(failure, "context canceled");
      break;
    default:
      ctx->logger().warn("plugin misbehaving", {{"problem", "run returned an unknown disposition"},
                                                {"disposition", static_cast<int64_t>(disposition)}});
      outcome.disposition = task::Disposition::retry;
      outcome.error = "handler returned an invalid disposition " + std::to_string(disposition);
      break;
  }
  if (outcome.disposition != task::Disposition::succeeded) {
    failure.code[sizeof failure.code - 1] = '\0';
    outcome.code = failure.code;
  }
  // A dependency outage is not the task's fault: a handler that gives up (retry) after the
  // database was found away, or that says "unavailable" itself, has its task put back for a
  // couple of seconds without an attempt counted (docs/database.md).
  const bool gave_up = outcome.disposition == task::Disposition::retry ||
                       outcome.disposition == task::Disposition::retry_after;
  if (gave_up && (ctx->saw_unavailable() || std::string_view(failure.code) == kUnavailableCode)) {
    outcome.disposition = task::Disposition::requeue;
    outcome.error = "dependency unavailable, no attempt counted: " + outcome.error;
    outcome.retry_after = dependency_backoff(t);
  }
  return outcome;
}

PluginHost::PluginHost(log::Logger logger, ConfigSnapshot config, db::Pool* pool, task::Enqueuer* enqueuer,
                       HostOptions options)
    : impl_(std::make_unique<Impl>(std::move(logger))) {
  impl_->config = std::make_shared<const ConfigSnapshot>(std::move(config));
  impl_->pool = pool;
  impl_->enqueuer = enqueuer;
  impl_->options = std::move(options);
}

PluginHost::~PluginHost() { shutdown(); }

LoadReport Host::load_directory(const fs::path& dir) {
  const std::vector<fs::path> files = detail::plugin_files(dir);
  LoadReport report;
  for (const auto& file : files) {
    if (auto refusal = load_file(file)) {
      report.refused.push_back(std::move(*refusal));
    }
  }
  for (const auto& info : plugins()) {
    const bool from_here = std::find(files.begin(), files.end(), info.file) != files.end();
    if (from_here) report.loaded.push_back(info);
  }
  return report;
}

std::optional<Refusal> PluginHost::load_file(const fs::path& file) { return impl_->load(file); }

void Host::watch(const fs::path& /*dir*/) {}

void Host::request_rescan(std::string_view why) {
  (void)why;  // in process, a loaded library can never be replaced (plugin-loading.md: retired)
}

std::vector<PluginInfo> PluginHost::plugins() const {
  std::shared_lock lock(impl_->mu);
  std::vector<PluginInfo> out;
  for (const auto& p : impl_->plugins) out.push_back(p->library.info);
  return out;
}

std::vector<PluginStatus> PluginHost::status() const {
  std::vector<PluginStatus> out;
  {
    std::shared_lock lock(impl_->mu);
    for (const auto& p : impl_->plugins) {
      PluginStatus s;
      s.plugin_id = p->library.info.plugin_id;
      s.version = p->library.info.plugin_version;
      s.file = p->library.info.file;
      s.state = "serving";
      s.pid = ::getpid();
      s.in_process = true;
      std::lock_guard plugin_lock(p->mu);
      s.in_flight = p->in_flight;
      out.push_back(std::move(s));
    }
  }
  std::lock_guard lock(impl_->refused_mu);
  for (const auto& r : impl_->refused) {
    PluginStatus s;
    s.file = r.file;
    s.state = "refused";
    s.reason = r.reason;
    s.in_process = true;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> PluginHost::task_types() const {
  std::shared_lock lock(impl_->mu);
  std::vector<std::string> out;
  for (const auto& [type, route] : impl_->routes) out.push_back(type);
  return out;
}

bool PluginHost::handles(std::string_view type) const {
  std::shared_lock lock(impl_->mu);
  return !impl_->stopping && impl_->routes.find(type) != impl_->routes.end();
}

std::chrono::milliseconds PluginHost::attempt_timeout(std::string_view type) const {
  std::shared_lock lock(impl_->mu);
  const auto it = impl_->routes.find(type);
  if (it == impl_->routes.end()) return std::chrono::milliseconds(0);
  const Route& route = it->second;
  return std::chrono::milliseconds(route.plugin->library.info.handlers[route.handler].default_timeout_ms);
}

uint32_t PluginHost::max_concurrency(std::string_view type) const {
  std::shared_lock lock(impl_->mu);
  const auto it = impl_->routes.find(type);
  if (it == impl_->routes.end()) return 0;
  const Route& route = it->second;
  return route.plugin->library.info.handlers[route.handler].max_concurrency;
}

bool PluginHost::serving() const {
  std::shared_lock lock(impl_->mu);
  return !impl_->stopping && !impl_->routes.empty();
}

task::Outcome PluginHost::dispatch(task::Execution& execution) {
  try {
    Route route;
    {
      std::shared_lock lock(impl_->mu);
      if (impl_->stopping) return {task::Disposition::retry, "worker is shutting down", {}, {}};
      auto it = impl_->routes.find(execution.task.type);
      if (it == impl_->routes.end()) return task::unhandled_type(execution.task.type);
      route = it->second;
    }
    return impl_->run(route, execution);
  } catch (const std::exception& e) {
    impl_->logger.error("dispatch failed", {{"task_id", execution.task.id}, {"error", e.what()}});
    return {task::Disposition::retry, std::string("dispatch failed: ") + e.what(), {}, {}};
  } catch (...) {
    return {task::Disposition::retry, "dispatch failed", {}, {}};
  }
}

void PluginHost::shutdown() {
  std::vector<std::shared_ptr<PluginInstance>> plugins;
  {
    std::unique_lock lock(impl_->mu);
    impl_->stopping = true;
    if (impl_->shut_down) return;
    impl_->shut_down = true;
    plugins = impl_->plugins;
    impl_->routes.clear();
  }
  for (auto it = plugins.rbegin(); it != plugins.rend(); ++it) {
    PluginInstance& plugin = **it;
    const std::string& id = plugin.library.info.plugin_id;
    bool drained = false;
    {
      std::unique_lock lock(plugin.mu);
      plugin.closed = true;
      drained =
          plugin.idle.wait_for(lock, impl_->options.shutdown_grace, [&] { return plugin.in_flight == 0; });
    }
    if (!drained) {
      // Never call shutdown() under a running run(): the plugin stays as it is until exit.
      impl_->logger.error(
          "plugin still running after the shutdown grace; not shut down (zombie)",
          {{"plugin", id}, {"grace_ms", static_cast<int64_t>(impl_->options.shutdown_grace.count())}});
      continue;
    }
    if (plugin.library.shutdown != nullptr) {
      try {
        plugin.library.shutdown(plugin.state);
      } catch (...) {
        impl_->logger.warn("plugin misbehaving",
                           {{"plugin", id}, {"problem", "shutdown threw an exception"}});
      }
    }
    plugin.plugin_ctx->close();
    impl_->logger.info("plugin shut down", {{"plugin", id}});
  }
}

}  // namespace wk::plugins
