// What the CLI calls: `worker plugins check FILE...` and `worker exec` (one task, no Redis).
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "plugins/loader.hpp"
#include "plugins/plugins.hpp"

namespace wk::plugins {
namespace fs = std::filesystem;

std::string_view disposition_name(task::Disposition disposition) {
  switch (disposition) {
    case task::Disposition::succeeded:
      return "succeeded";
    case task::Disposition::retry:
      return "retry";
    case task::Disposition::retry_after:
      return "retry_after";
    case task::Disposition::fail_no_retry:
      return "fail_no_retry";
    case task::Disposition::cancelled:
      return "cancelled";
    case task::Disposition::requeue:
      return "requeue";
  }
  return "unknown";
}

std::vector<FileCheck> check_files(const std::vector<fs::path>& files, const log::Logger& logger,
                                   const HostOptions& options) {
  detail::StagingDir staging(options.staging_dir, true);
  std::vector<FileCheck> checks;
  std::map<std::string, fs::path> type_owner;
  for (const auto& file : files) {
    FileCheck check;
    check.file = file;
    try {
      detail::LoadedLibrary library = detail::load_plugin_file(file, staging);
      check.info = library.info;
      check.would_load = true;
      for (const auto& handler : library.info.handlers) {
        auto [it, inserted] = type_owner.emplace(handler.task_type, file);
        if (!inserted && check.would_load) {
          check.would_load = false;
          check.reason = "task type \"" + handler.task_type + "\" is also declared by " + it->second.string();
        }
      }
    } catch (const std::exception& e) {
      check.reason = e.what();
    }
    if (!check.would_load)
      logger.debug("plugin check refused", {{"file", file.string()}, {"reason", check.reason}});
    checks.push_back(std::move(check));
  }
  return checks;
}

int print_file_checks(const std::vector<fs::path>& files, std::ostream& out, const log::Logger& logger,
                      const HostOptions& options) {
  bool all_ok = true;
  for (const FileCheck& check : check_files(files, logger, options)) {
    out << check.file.string() << ": " << (check.would_load ? "OK" : "REFUSED: " + check.reason) << "\n";
    all_ok = all_ok && check.would_load;
    if (!check.info) continue;
    const PluginInfo& info = *check.info;
    out << "  plugin " << info.plugin_id << " " << info.plugin_version << " (ABI " << info.abi_major << "."
        << info.abi_minor << ", needs host " << info.abi_major << "." << info.min_host_minor << ")\n";
    if (!info.build_info.empty()) out << "  built  " << info.build_info << "\n";
    out << "  sha256 " << info.sha256 << "\n";
    for (const HandlerInfo& handler : info.handlers) {
      out << "  handler " << handler.task_type;
      if (!handler.description.empty()) out << "  " << handler.description;
      if (handler.max_concurrency > 0) out << "  (max concurrency " << handler.max_concurrency << ")";
      out << "\n";
    }
  }
  return all_ok ? 0 : 1;
}

namespace {

class LocalServices final : public task::TaskServices {
 public:
  bool write_result(std::string_view data) override {
    std::lock_guard lock(mu_);
    result_ = std::string(data);
    return true;
  }
  void heartbeat(const task::Progress& progress) override {
    std::lock_guard lock(mu_);
    progress_ = progress;
  }
  std::optional<std::string> result() const {
    std::lock_guard lock(mu_);
    return result_;
  }
  std::optional<task::Progress> progress() const {
    std::lock_guard lock(mu_);
    return progress_;
  }

 private:
  mutable std::mutex mu_;
  std::optional<std::string> result_;
  std::optional<task::Progress> progress_;
};

class RecordingEnqueuer final : public task::Enqueuer {
 public:
  std::string enqueue(const task::EnqueueRequest& request) override {
    std::lock_guard lock(mu_);
    task::EnqueueRequest copy = request;
    if (copy.task_id.empty()) copy.task_id = task::new_uuid();
    requests_.push_back(copy);
    return copy.task_id;
  }
  std::vector<task::EnqueueRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<task::EnqueueRequest> requests_;
};

// Cancels with `deadline` when the timeout passes, unless stopped first.
class DeadlineWatch {
 public:
  DeadlineWatch(task::Cancellation& cancellation, std::chrono::milliseconds timeout) {
    if (timeout.count() <= 0) return;
    thread_ = std::thread([this, &cancellation, timeout] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, timeout, [&] { return stopped_; }))
        cancellation.cancel(task::CancelReason::deadline);
    });
  }
  ~DeadlineWatch() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  DeadlineWatch(const DeadlineWatch&) = delete;
  DeadlineWatch& operator=(const DeadlineWatch&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace

LocalResult run_local(const LocalRun& run, const log::Logger& logger, const ConfigSnapshot& config,
                      db::Pool* pool, const HostOptions& options) {
  RecordingEnqueuer enqueuer;
  PluginHost host(logger, config, pool, &enqueuer, options);
  LocalResult out;
  out.load = host.load_directory(run.plugins_dir);
  if (!host.handles(run.type)) {
    std::string types;
    for (const auto& t : host.task_types()) types += (types.empty() ? "" : ", ") + t;
    throw std::runtime_error("no loaded plugin serves task type \"" + run.type +
                             "\" (served: " + (types.empty() ? "none" : types) + ")");
  }
  task::Task t;
  t.id = run.task_id.empty() ? task::new_uuid() : run.task_id;
  t.type = run.type;
  t.queue = run.queue.empty() ? "default" : run.queue;
  t.payload = run.payload;
  t.headers = run.headers;
  t.retried = 0;
  t.max_retry = 25;
  t.started_at = task::Clock::now();
  if (run.timeout.count() > 0) t.deadline = t.started_at + run.timeout;

  task::Cancellation cancellation;
  LocalServices services;
  std::vector<task::EnqueueRequest> staged;
  task::Execution execution{t, cancellation, services, staged};
  {
    DeadlineWatch watch(cancellation, run.timeout);
    out.outcome = host.dispatch(execution);
  }
  host.shutdown();
  out.result = services.result();
  out.progress = services.progress();
  out.staged = std::move(staged);
  out.immediate = enqueuer.requests();
  return out;
}

int exec_local(const LocalRun& run, std::ostream& out, const log::Logger& logger,
               const ConfigSnapshot& config, db::Pool* pool, const HostOptions& options) {
  LocalResult result;
  try {
    result = run_local(run, logger, config, pool, options);
  } catch (const std::exception& e) {
    out << "error: " << e.what() << "\n";
    return 2;
  }
  out << "disposition: " << disposition_name(result.outcome.disposition) << "\n";
  if (!result.outcome.error.empty()) out << "error: " << result.outcome.error << "\n";
  if (result.outcome.disposition == task::Disposition::retry_after) {
    out << "retry_after_ms: " << result.outcome.retry_after.count() << "\n";
  }
  if (result.progress) {
    out << "progress: " << result.progress->done << "/" << result.progress->total;
    if (!result.progress->note.empty()) out << " " << result.progress->note;
    out << "\n";
  }
  if (result.result) out << "result: " << *result.result << "\n";
  auto print = [&](const char* label, const std::vector<task::EnqueueRequest>& requests) {
    for (const auto& r : requests) {
      out << label << ": type=" << r.type << " queue=" << (r.queue.empty() ? "default" : r.queue)
          << " id=" << r.task_id;
      if (r.timeout) out << " timeout=" << r.timeout->count() << "s";
      out << " payload=" << r.payload << "\n";
    }
  };
  print("staged", result.staged);
  print("enqueued", result.immediate);
  return result.outcome.disposition == task::Disposition::succeeded ? 0 : 1;
}

}  // namespace wk::plugins
