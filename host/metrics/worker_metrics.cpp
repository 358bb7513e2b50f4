#include "metrics/worker_metrics.hpp"

#include <algorithm>
#include <string>

#include "asynq/keys.hpp"

namespace wk::metrics {

namespace {
std::string metric(std::string_view name) { return std::string(kPrefix) + std::string(name); }
}  // namespace

// ---- QueueSizeReader ------------------------------------------------------------------------

QueueSizeReader::QueueSizeReader(redis::Settings settings, std::vector<std::string> queues)
    : settings_(std::move(settings)), queues_(std::move(queues)) {}

QueueSizeReader::~QueueSizeReader() = default;

std::vector<QueueSize> QueueSizeReader::read() {
  std::lock_guard lock(mu_);
  try {
    if (!conn_) conn_ = std::make_unique<redis::Connection>(settings_);
    // This worker's queues, then every other queue producers registered (asynq:queues, as
    // asynq's exporter reports): a queue with tasks and no worker serving it is the one an
    // operator most needs to see.
    std::vector<std::string> queues = queues_;
    {
      redis::Reply registered = conn_->command({"SMEMBERS", asynq::kAllQueuesKey});
      std::vector<std::string> others;
      for (size_t i = 0; i < registered.size(); ++i) {
        std::string name(registered[i].str());
        if (std::find(queues.begin(), queues.end(), name) == queues.end()) others.push_back(std::move(name));
      }
      std::sort(others.begin(), others.end());
      queues.insert(queues.end(), others.begin(), others.end());
    }
    constexpr size_t kPerQueue = 7;
    std::vector<std::string> keys;
    keys.reserve(queues.size() * kPerQueue);
    for (const auto& q : queues) {
      keys.push_back(asynq::pending_key(q));
      keys.push_back(asynq::active_key(q));
      keys.push_back(asynq::scheduled_key(q));
      keys.push_back(asynq::retry_key(q));
      keys.push_back(asynq::archived_key(q));
      keys.push_back(asynq::completed_key(q));
      keys.push_back(asynq::paused_key(q));
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      const auto slot = i % kPerQueue;
      const std::string_view command = slot < 2 ? "LLEN" : slot < 6 ? "ZCARD" : "EXISTS";
      conn_->append({command, keys[i]});
    }
    std::vector<long long> values(keys.size(), 0);
    std::string failure;
    for (size_t i = 0; i < keys.size(); ++i) {
      auto reply = conn_->read_reply();  // read every reply, even after an error, to keep the stream aligned
      if (reply.is_error()) {
        failure = std::string(reply.str());
      } else if (reply.is_integer()) {
        values[i] = reply.integer();
      }
    }
    // WRONGTYPE and the like: a key that is not what asynq's layout says is worth an error.
    if (!failure.empty()) throw redis::Error(redis::Error::Kind::reply, failure);
    std::vector<QueueSize> out;
    for (size_t qi = 0; qi < queues.size(); ++qi) {
      const long long* v = &values[qi * kPerQueue];
      out.push_back({queues[qi], v[0], v[1], v[2], v[3], v[4], v[5], v[6] != 0});
    }
    return out;
  } catch (const redis::Error& e) {
    if (e.is_connection()) conn_.reset();
    throw;
  }
}

// ---- WorkerMetrics --------------------------------------------------------------------------

WorkerMetrics::WorkerMetrics(Registry& registry, WorkerMetricsOptions options)
    : options_(std::move(options)),
      processed_(registry.counter(metric("tasks_processed_total"),
                                  "Tasks that succeeded (done, or completed with retention).",
                                  {"task_type", "queue"})),
      failed_(registry.counter(metric("tasks_failed_total"),
                               "Task attempts that failed (retried or archived).", {"task_type", "queue"})),
      retried_(registry.counter(metric("tasks_retried_total"), "Failed attempts scheduled for a retry.",
                                {"task_type", "queue"})),
      archived_(registry.counter(metric("tasks_archived_total"),
                                 "Tasks archived (retries exhausted or not retryable).",
                                 {"task_type", "queue"})),
      requeued_(registry.counter(metric("tasks_requeued_total"),
                                 "Tasks put back to pending on shutdown, not counted as an attempt.",
                                 {"task_type", "queue"})),
      abandoned_(registry.counter(metric("tasks_abandoned_total"),
                                  "Attempts whose outcome was not written (lease lost or task moved): "
                                  "the recoverer owns them.",
                                  {"task_type", "queue"})),
      duration_(registry.histogram(metric("task_duration_seconds"), "Handler run time per attempt.",
                                   {"task_type"}, task_duration_buckets())),
      in_flight_(registry.gauge(metric("tasks_in_flight"), "Tasks being handled now.")),
      redis_up_(registry.gauge(metric("redis_up"), "1 when the last Redis operation succeeded.")),
      plugin_crashes_(registry.counter(metric("plugin_crashes_total"),
                                       "Deaths of plugin runner processes not asked for, by reason.",
                                       {"plugin", "reason"})),
      build_info_(registry.gauge(metric("build_info"), "Always 1; labels carry the version and worker name.",
                                 {"version", "worker"})) {
  in_flight_.set({}, 0);
  redis_up_.set({}, 1);
  build_info_.set({options_.version, options_.worker_name}, 1);
  if (options_.db_up) db_up_ = &registry.gauge(metric("db_up"), "1 when the PostgreSQL pool answers.");
  if (options_.plugins_loaded) {
    plugins_loaded_ = &registry.gauge(metric("plugins_loaded"), "Handler plugins loaded and serving.");
  }
  if (options_.plugins) {
    plugin_info_ = &registry.gauge(metric("plugin_info"),
                                   "Always 1; labels carry each plugin's version and state "
                                   "(serving, draining, restarting, crash-looping).",
                                   {"plugin", "version", "state"});
    plugin_rss_ = &registry.gauge(metric("plugin_runner_resident_bytes"),
                                  "Resident memory of each plugin's runner process.", {"plugin"});
  }
  if (options_.flow_limits) {
    permits_in_use_ =
        &registry.gauge(metric("limit_permits_in_use"),
                        "Permits of a flow-control limit held by this worker; scope local "
                        "(this worker's concurrency) or fleet (sum over workers for the fleet).",
                        {"limit", "scope"});
    permits_max_ = &registry.gauge(metric("limit_permits_max"),
                                   "The configured size of a flow-control limit.", {"limit", "scope"});
  }
  if (options_.flow_types) {
    parked_ = &registry.gauge(metric("tasks_parked"),
                              "Tasks dequeued but waiting for a permit of their type (no handler slot held).",
                              {"task_type"});
    throttled_ =
        &registry.counter(metric("throttled_seconds_total"),
                          "Time a task type had tasks waiting for a permit on this worker.", {"task_type"});
  }
  if (!options_.queues.empty() && options_.redis) {
    queue_size_ = &registry.gauge(
        metric("queue_size"), "Tasks in a queue by state (LLEN/ZCARD at scrape time).", {"queue", "state"});
    queue_paused_ = &registry.gauge(metric("queue_paused"), "1 when the queue is paused.", {"queue"});
    scrape_errors_ = &registry.gauge(metric("queue_size_read_errors"),
                                     "1 when the last scrape could not read queue sizes from Redis.");
    scrape_errors_->set({}, 0);
    sizes_ = std::make_unique<QueueSizeReader>(*options_.redis, options_.queues);
  }
  registry.add_collector([this] { collect(); });
}

WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::task_started(std::string_view, std::string_view) { in_flight_.add({}, 1); }

void WorkerMetrics::task_finished(std::string_view type, std::string_view queue, queue::TaskResult result,
                                  std::chrono::nanoseconds duration) {
  in_flight_.add({}, -1);
  const LabelValues labels{std::string(type), std::string(queue)};
  switch (result) {
    case queue::TaskResult::done:
    case queue::TaskResult::completed:
      processed_.inc(labels);
      break;
    case queue::TaskResult::retried:
      failed_.inc(labels);
      retried_.inc(labels);
      break;
    case queue::TaskResult::archived:
      failed_.inc(labels);
      archived_.inc(labels);
      break;
    case queue::TaskResult::requeued:
      requeued_.inc(labels);
      break;
    case queue::TaskResult::abandoned:
      abandoned_.inc(labels);
      break;
  }
  duration_.observe({std::string(type)}, std::chrono::duration<double>(duration).count());
}

void WorkerMetrics::redis_down() {
  if (!options_.redis_up) redis_up_.set({}, 0);
}

void WorkerMetrics::redis_up() {
  if (!options_.redis_up) redis_up_.set({}, 1);
}

void WorkerMetrics::plugin_crashed(std::string_view plugin, std::string_view reason) {
  plugin_crashes_.inc({std::string(plugin), std::string(reason)});
}

void WorkerMetrics::collect() {
  // Each source is read on its own: one failing must not hide the others.
  if (options_.redis_up) {
    bool up = false;
    try {
      up = options_.redis_up();
    } catch (...) {
    }
    redis_up_.set({}, up ? 1 : 0);
  }
  if (db_up_ != nullptr) {
    bool up = false;
    try {
      up = options_.db_up();
    } catch (...) {
    }
    db_up_->set({}, up ? 1 : 0);
  }
  if (plugin_info_ != nullptr) {
    plugin_info_->clear();
    plugin_rss_->clear();
    try {
      for (const auto& p : options_.plugins()) {
        plugin_info_->set({p.plugin, p.version, p.state}, 1);
        if (p.runner_resident_bytes)
          plugin_rss_->set({p.plugin}, static_cast<double>(*p.runner_resident_bytes));
      }
    } catch (...) {
      plugin_info_->clear();
    }
  }
  if (plugins_loaded_ != nullptr) {
    try {
      plugins_loaded_->set({}, options_.plugins_loaded());
    } catch (...) {
      plugins_loaded_->clear();
    }
  }
  if (permits_in_use_ != nullptr) {
    try {
      for (const auto& s : options_.flow_limits()) {
        const std::string& name = s.limit.pattern;
        if (s.limit.concurrency > 0) {
          permits_in_use_->set({name, "local"}, s.local_in_use);
          permits_max_->set({name, "local"}, s.limit.concurrency);
        }
        if (s.limit.fleet > 0) {
          permits_in_use_->set({name, "fleet"}, s.fleet_in_use);
          permits_max_->set({name, "fleet"}, s.limit.fleet);
        }
      }
    } catch (...) {
      permits_in_use_->clear();
    }
  }
  if (parked_ != nullptr) {
    try {
      for (const auto& t : options_.flow_types()) {
        parked_->set({t.type}, t.parked);
        const double before = throttled_->value({t.type});
        if (t.throttled_seconds > before) throttled_->inc({t.type}, t.throttled_seconds - before);
      }
    } catch (...) {
      parked_->clear();
    }
  }
  if (sizes_) {
    try {
      const auto sizes = sizes_->read();
      for (const auto& s : sizes) {
        queue_size_->set({s.queue, "pending"}, static_cast<double>(s.pending));
        queue_size_->set({s.queue, "active"}, static_cast<double>(s.active));
        queue_size_->set({s.queue, "scheduled"}, static_cast<double>(s.scheduled));
        queue_size_->set({s.queue, "retry"}, static_cast<double>(s.retry));
        queue_size_->set({s.queue, "archived"}, static_cast<double>(s.archived));
        queue_size_->set({s.queue, "completed"}, static_cast<double>(s.completed));
        queue_paused_->set({s.queue}, s.paused ? 1 : 0);
      }
      scrape_errors_->set({}, 0);
    } catch (const std::exception&) {
      // Stale sizes would look like a healthy, idle queue; report none and flag the failure.
      queue_size_->clear();
      queue_paused_->clear();
      scrape_errors_->set({}, 1);
    }
  }
}

}  // namespace wk::metrics
