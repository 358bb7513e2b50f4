#include "app/runtime.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/signals.hpp"
#include "http/server.hpp"
#include "metrics/worker_metrics.hpp"
#include "plugins/plugins.hpp"
#include "queue/broker_redis.hpp"
#include "queue/crash_ledger.hpp"
#include "queue/engine.hpp"
#include "queue/host_queues.hpp"
#include "queue/subscriber.hpp"
#include "runner/runner.hpp"
#include "task/task.hpp"

namespace wk::app {

redis::Settings redis_settings(const config::Config& c) {
  redis::Settings s;
  s.host = c.redis_host;
  s.port = c.redis_port;
  s.username = c.redis_username;
  s.password = c.redis_password;
  s.db = c.redis_db;
  if (c.redis_tls) {
    redis::TlsOptions tls;
    tls.ca_file = c.redis_tls_ca_file;
    tls.cert_file = c.redis_tls_cert_file;
    tls.key_file = c.redis_tls_key_file;
    tls.server_name = c.redis_tls_server_name;
    tls.insecure = c.redis_tls_insecure;
    s.tls = redis::make_tls_client(tls);
  }
  // The config checked every entry is host:port.
  const auto addresses = [](const std::vector<std::string>& list) {
    std::vector<redis::Address> out;
    out.reserve(list.size());
    for (const auto& text : list) out.push_back(redis::Address::parse(text));
    return out;
  };
  if (!c.redis_sentinels.empty()) {
    redis::Sentinel::Options o;
    o.sentinels = addresses(c.redis_sentinels);
    o.master_name = c.redis_sentinel_master;
    o.connection = s;  // timeouts and TLS as for the master; the sentinels' own password
    o.connection.username.clear();
    o.connection.password = c.redis_sentinel_password;
    o.connection.db = 0;
    s.sentinel = std::make_shared<redis::Sentinel>(std::move(o));
  }
  if (!c.redis_cluster_nodes.empty()) {
    redis::Cluster::Options o;
    o.seeds = addresses(c.redis_cluster_nodes);
    o.connection = s;
    s.cluster = std::make_shared<redis::Cluster>(std::move(o));
  }
  return s;
}

db::Settings db_settings(const config::Config& c) {
  db::Settings s;
  s.host = c.db_host;
  s.port = c.db_port;
  s.user = c.db_username;
  s.password = c.db_password;
  s.dbname = c.db_name;
  s.sslmode = c.db_sslmode;
  s.pool_size = c.db_pool_size;
  return s;
}

std::unique_ptr<plugins::Host> make_plugin_host(
    const config::Config& c, const log::Logger& logger, db::Pool* pool, task::Enqueuer* enqueuer,
    task::CrashLedger* crash_ledger, std::function<void(const std::string&, const std::string&)> on_crash) {
  plugins::HostOptions host_options;
  host_options.shutdown_grace = c.shutdown_timeout;
  if (c.isolation == "none") {
    return std::make_unique<plugins::PluginHost>(logger, c.settings, pool, enqueuer, host_options);
  }
  runner::RunnerOptions options;
  options.host = host_options;
  options.liveness_timeout = c.plugin_liveness_timeout;
  options.liveness_interval = std::min(options.liveness_interval, c.plugin_liveness_timeout / 4);
  options.memory_max = c.plugin_memory_max;
  options.memory_max_by_plugin = c.plugin_memory_max_by_plugin;
  options.open_files_max = c.plugin_open_files_max;
  options.in_process.insert(c.in_process_plugins.begin(), c.in_process_plugins.end());
  options.crash_limit = c.crash_limit;
  options.crash_ledger = crash_ledger;
  options.on_crash = std::move(on_crash);
  return std::make_unique<runner::RunnerHost>(logger, c.settings, pool, enqueuer, options);
}

constexpr std::chrono::milliseconds kShutdownSlack{std::chrono::seconds(5)};

// Runs `on_expiry` on a thread of its own unless destroyed within `limit`.
class ShutdownWatchdog {
 public:
  ShutdownWatchdog(std::chrono::milliseconds limit, std::function<void()> on_expiry)
      : thread_([this, limit, on_expiry = std::move(on_expiry)] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [&] { return done_; })) on_expiry();
        }) {}
  ~ShutdownWatchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  ShutdownWatchdog(const ShutdownWatchdog&) = delete;
  ShutdownWatchdog& operator=(const ShutdownWatchdog&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: started once the rest exists
};

// The long-lived parts, declared in construction order so they are destroyed in reverse: the
// engine stops before the plugins it calls, the plugins before the pools they use.
struct Runtime::Parts {
  std::unique_ptr<redis::SentinelWatch> sentinel_watch;  // under Sentinel: failovers, as announced
  std::unique_ptr<queue::RedisBroker> broker;
  std::unique_ptr<db::Pool> db;
  std::unique_ptr<queue::RedisCrashLedger> crash_ledger;
  std::unique_ptr<plugins::Host> plugins;
  metrics::Registry registry;
  std::unique_ptr<metrics::WorkerMetrics> worker_metrics;  // the engine's observer
  std::unique_ptr<queue::Engine> engine;
  std::unique_ptr<queue::HostQueueTakeover> takeover;  // engines of other machines' queues
  std::unique_ptr<http::Server> http;                  // destroyed first: its callbacks read the parts above
  // Where runner deaths are counted; cleared before any member goes, since a runner may die
  // while the plugins (destroyed after the metrics) still run.
  std::atomic<metrics::WorkerMetrics*> crash_counter{nullptr};
  ~Parts() { crash_counter = nullptr; }
};

// "dev.acme.resize crash-looping (crashed (SIGSEGV)); bad.so refused (init failed ...)", or ""
// when every plugin serves; what /readyz says of the plugins.
std::string plugin_problems(const plugins::Host& host, const std::string& dir) {
  const auto status = host.status();
  std::string out;
  bool serving = false;
  for (const auto& s : status) {
    if (s.state == "serving" || s.state == "draining") {
      serving = true;
      continue;
    }
    if (s.state == "restarting") continue;  // a runner coming back: not a standing problem
    const std::string name = s.plugin_id.empty() ? s.file.filename().string() : s.plugin_id;
    out += (out.empty() ? "" : "; ") + name + " " + s.state + (s.reason.empty() ? "" : " (" + s.reason + ")");
  }
  if (!serving && out.empty()) out = "no plugin loaded from " + dir;
  return out;
}

std::string plugins_json(const plugins::Host& host) {
  auto list = nlohmann::json::array();
  for (const auto& s : host.status()) {
    list.push_back({{"plugin", s.plugin_id},
                    {"version", s.version},
                    {"file", s.file.string()},
                    {"state", s.state},
                    {"reason", s.reason},
                    {"pid", s.pid},
                    {"in_process", s.in_process},
                    {"crashes", s.crashes},
                    {"in_flight", s.in_flight},
                    {"resident_bytes", s.resident_bytes}});
  }
  return list.dump();
}

Runtime::Runtime(config::Config config, log::Logger logger)
    : config_(std::move(config)), logger_(std::move(logger)) {}

Runtime::~Runtime() = default;

void Runtime::request_stop(bool immediate) {
  std::lock_guard lock(mu_);
  stop_requested_ = true;
  abort_requested_ = abort_requested_ || immediate;
  // A second signal while the engine drains: requeue what still runs, now.
  if (immediate && engine_running_) parts_->engine->abort();
  stop_cv_.notify_all();
}

int Runtime::serve() {
  logger_.info("Starting job worker");
  if (config_.env_file_used) logger_.info("Read settings file", {{"path", config_.env_file_used->string()}});
  for (const auto& name : config_.unknown_variables) {
    logger_.warn("Unknown setting ignored (typo?)", {{"variable", name}});
  }
  if (logger_.enabled(log::Level::debug)) {
    for (const auto& [key, value] : config_.redacted()) {
      // The rest of the environment is the plugins' business (and may hold secrets by any name).
      if (config_.other_keys.count(key) == 0) logger_.debug("Setting", {{"key", key}, {"value", value}});
    }
  }

  StopSignals signals([this](int signo, int count) {
    if (signo == SIGHUP) {
      std::lock_guard lock(mu_);
      if (parts_) {
        parts_->plugins->request_rescan("SIGHUP");
      } else {
        logger_.info("SIGHUP before the plugins were loaded: nothing to rescan");
      }
      return;
    }
    const char* name = signo == SIGINT ? "SIGINT" : "SIGTERM";
    if (count == 1) {
      logger_.info("Shutdown requested", {{"signal", name}});
      request_stop(false);
    } else {
      logger_.warn("Second stop signal: requeueing running tasks and exiting", {{"signal", name}});
      request_stop(true);
    }
  });

  auto parts = std::make_unique<Parts>();
  try {
    queue::RedisBrokerSettings broker_settings;
    broker_settings.redis = redis_settings(config_);
    // Handler slots, the loops (heartbeat, forwarder, recoverer, janitor, syncer) and enqueues.
    broker_settings.pool_size = static_cast<size_t>(config_.concurrency) + 6;
    if (broker_settings.redis.sentinel) {
      parts->sentinel_watch = std::make_unique<redis::SentinelWatch>(
          broker_settings.redis.sentinel, [this](const std::string& announcement) {
            logger_.warn("Redis failover announced by a sentinel; connections move to the new master",
                         {{"switch_master", announcement}});
          });
    }
    parts->broker = std::make_unique<queue::RedisBroker>(broker_settings, logger_);
    if (config_.redis_tls_insecure) {
      logger_.warn(
          "REDIS_TLS_INSECURE is on: the Redis server's certificate is not verified, so anyone "
          "on the network path can read and change the queues. Use it for a test only");
    }
    // A connection refused because of a setting (a certificate that does not verify, a client
    // certificate the server refuses) will not heal by waiting: stop before any task is touched.
    // A Redis that is merely down is waited for, as always.
    try {
      parts->broker->pool().acquire()->command({"PING"});
    } catch (const redis::Error& e) {
      if (e.is_setting()) throw;
      logger_.warn("Redis does not answer yet; the worker waits for it", {{"error", e.what()}});
    }
    parts->db = db::make_pool(db_settings(config_), logger_);

    Parts& p = *parts;
    parts->crash_ledger = std::make_unique<queue::RedisCrashLedger>(parts->broker->pool());
    parts->plugins =
        make_plugin_host(config_, logger_, parts->db.get(), &parts->broker->client(),
                         parts->crash_ledger.get(), [&p](const std::string& plugin, const std::string& why) {
                           if (auto* counter = p.crash_counter.load()) counter->plugin_crashed(plugin, why);
                         });

    queue::Settings engine_settings;
    engine_settings.queues = config_.queues;
    engine_settings.host_queue = task::host_queue(config_.host_id);
    engine_settings.strict_priority = config_.strict_priority;
    engine_settings.concurrency = config_.concurrency;
    engine_settings.shutdown_timeout = config_.shutdown_timeout;
    engine_settings.unhandled_timeout = config_.unhandled_timeout;
    engine_settings.limits = config_.limits;
    engine_settings.parked_max = config_.parked_max;
    engine_settings.loops = config_.loops;
    // Advanced timings (hidden settings; the config validated them): unset keeps the defaults.
    using std::chrono::duration_cast;
    using std::chrono::seconds;
    if (config_.lease) engine_settings.lease = duration_cast<seconds>(*config_.lease);
    if (config_.heartbeat_interval) engine_settings.heartbeat_interval = *config_.heartbeat_interval;
    if (config_.recoverer_interval) engine_settings.recoverer_interval = *config_.recoverer_interval;
    if (config_.recoverer_cutoff)
      engine_settings.lease_expiry_cutoff = duration_cast<seconds>(*config_.recoverer_cutoff);
    if (config_.forwarder_interval) engine_settings.forwarder_interval = *config_.forwarder_interval;
    if (config_.retry_delay) {
      const seconds fixed = duration_cast<seconds>(*config_.retry_delay);
      engine_settings.retry_delay = [fixed](int32_t, const std::string&, const task::Task&) { return fixed; };
    }
    parts->engine =
        std::make_unique<queue::Engine>(*parts->broker, *parts->plugins, logger_, engine_settings,
                                        std::make_unique<queue::RedisCancelSource>(broker_settings.redis));
    // A machine gone for good: its queue taken over, one task at a time, once no worker has
    // served it for WORKER_HOST_QUEUE_TIMEOUT (docs/operations.md, "Several machines").
    parts->takeover = std::make_unique<queue::HostQueueTakeover>(
        *parts->broker, engine_settings.host_queue, config_.host_queue_timeout,
        [&p, engine_settings, broker_settings, log = logger_](const std::string& queue) {
          queue::Settings s = engine_settings;
          s.queues = {{queue, 1}};
          s.host_queue.clear();
          s.concurrency = 1;
          // Its tasks end quickly (their handlers find their files out of reach); its shutdown
          // comes before the main engine's and must leave that one its whole grace.
          s.shutdown_timeout = std::min(s.shutdown_timeout, std::chrono::milliseconds(2000));
          s.identity = queue::ServerIdentity::of_this_process();
          // A broker of its own: an engine's waits for work and their wake-ups are its broker's.
          queue::HostQueueTakeover::Engines taken;
          auto own = broker_settings;
          own.pool_size = 4;
          taken.broker = std::make_unique<queue::RedisBroker>(own, log);
          taken.engine = std::make_unique<queue::Engine>(
              *taken.broker, *p.plugins, log.with({{"taken_over", queue}}), std::move(s),
              std::make_unique<queue::RedisCancelSource>(own.redis));
          if (p.worker_metrics) taken.engine->set_observer(p.worker_metrics.get());
          return taken;
        },
        logger_);

    metrics::WorkerMetricsOptions metric_options;
    metric_options.worker_name = config_.worker_name;
    metric_options.version = WK_VERSION;
    for (const auto& q : config_.queues) metric_options.queues.push_back(q.name);
    metric_options.redis = broker_settings.redis;
    metric_options.redis_up = [&p] { return p.engine->redis_up(); };
    metric_options.db_up = [&p] { return p.db->healthy(); };
    metric_options.plugins_loaded = [&p] { return static_cast<int>(p.plugins->plugins().size()); };
    metric_options.flow_limits = [&p] { return p.engine->flow_limits(); };
    metric_options.flow_types = [&p] { return p.engine->flow_types(); };
    metric_options.plugins = [&p] {
      std::vector<metrics::PluginGauge> out;
      for (const auto& s : p.plugins->status()) {
        if (s.plugin_id.empty()) continue;  // refused files have no plugin to label
        metrics::PluginGauge g{s.plugin_id, s.version, s.state, std::nullopt};
        if (!s.in_process && s.pid != 0) g.runner_resident_bytes = s.resident_bytes;
        out.push_back(std::move(g));
      }
      return out;
    };
    parts->worker_metrics = std::make_unique<metrics::WorkerMetrics>(parts->registry, metric_options);
    parts->crash_counter = parts->worker_metrics.get();
    parts->engine->set_observer(parts->worker_metrics.get());

    if (!config_.metrics_addr.empty()) {
      http::ServerOptions http_options;
      http_options.address = config_.metrics_addr;
      http_options.liveness = [&p] { return p.engine->healthy(); };
      http_options.readiness = {
          {"redis", [&p] { return p.engine->redis_up(); }},
          {"postgres", [&p] { return p.db->healthy(); }},
          {"plugins", {}, [&p, dir = config_.plugins_dir] { return plugin_problems(*p.plugins, dir); }}};
      http_options.metrics = [&p] { return p.registry.render(); };
      http_options.json = {{"/plugins", [&p] { return plugins_json(*p.plugins); }}};
      parts->http = std::make_unique<http::Server>(http_options);
      parts->http->start();
      logger_.info("Serving metrics and health",
                   {{"addr", config_.metrics_addr}, {"port", parts->http->port()}});
    }

    logger_.info("Starting job server",
                 {{"redis_addr", config_.redis_addr()}, {"redis_tls", config_.redis_tls ? "true" : "false"}});
    const auto report = parts->plugins->load_directory(config_.plugins_dir);
    parts->plugins->watch(config_.plugins_dir);
    std::string types;
    for (const auto& t : parts->plugins->task_types()) types += (types.empty() ? "" : ",") + t;
    logger_.info("Plugins loaded", {{"dir", config_.plugins_dir},
                                    {"loaded", report.loaded.size()},
                                    {"refused", report.refused.size()},
                                    {"task_types", types}});
    if (types.empty()) {
      logger_.warn(
          "No plugin serves a task type: this worker takes no tasks until one is loaded "
          "(a file added to the directory is picked up while it runs)",
          {{"dir", std::filesystem::absolute(config_.plugins_dir).string()},
           {"refused", report.refused.size()},
           {"hint",
            "the shipped plugins are built into build/release/plugins (scripts/run-worker.sh) "
            "and installed into /usr/lib/autodevs-worker/plugins (the .deb); set WORKER_PLUGINS_DIR "
            "or --plugins"}});
    }
  } catch (const std::exception& e) {
    logger_.error("Cannot start", {{"error", e.what()}});
    return 1;
  }

  bool started = false;
  {
    std::unique_lock lock(mu_);
    parts_ = std::move(parts);
    if (!stop_requested_) {
      parts_->engine->start();
      parts_->takeover->start();
      engine_running_ = started = true;
    }
    stop_cv_.wait(lock, [this] { return stop_requested_; });
  }

  // Graceful: stop fetching, give running tasks WORKER_SHUTDOWN_TIMEOUT, requeue the rest.
  logger_.info("Shutting down", {{"timeout", config::format_duration(config_.shutdown_timeout)}});
  // A frozen Redis (or a plugin whose shutdown() never returns) must not hold the process: past
  // the grace and a few seconds, exit. Tasks not requeued by then keep their leases, which
  // expire; another worker's recoverer takes them (docs/operations.md).
  ShutdownWatchdog watchdog(config_.shutdown_timeout + kShutdownSlack, [this] {
    logger_.error(
        "Shutdown did not finish in time; exiting now. Tasks not requeued are recovered "
        "by their leases",
        {{"waited", config::format_duration(config_.shutdown_timeout + kShutdownSlack)}});
    std::_Exit(1);
  });
  if (started) {
    parts_->engine->stop();  // fetches nothing more while the takeover engines shut down
    parts_->takeover->stop();
    parts_->engine->shutdown();
  }
  if (parts_->http) parts_->http->stop();
  {
    std::lock_guard lock(mu_);
    engine_running_ = false;
  }
  parts_->plugins->shutdown();
  {
    std::lock_guard lock(mu_);
    parts_.reset();
  }
  logger_.info("Worker stopped");
  return 0;
}

}  // namespace wk::app
