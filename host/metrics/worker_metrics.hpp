#pragma once
// The worker's own metrics: an EngineObserver that counts task outcomes, plus pull-style gauges
// (queue sizes, health) refreshed on each scrape.
//
// Wiring (the runtime owns all three objects; they must outlive the engine and the http server):
//   metrics::Registry registry;
//   metrics::WorkerMetricsOptions o;   // worker_name, version, queues, redis settings, and
//   o.redis_up = [&] { return engine.redis_up(); };           // the pull sources:
//   o.db_up = [&] { return db->healthy(); };
//   o.plugins_loaded = [&] { return static_cast<int>(plugins->plugins().size()); };
//   metrics::WorkerMetrics worker_metrics(registry, std::move(o));
//   engine.set_observer(&worker_metrics);   // before engine.start()
//   http server's metrics source: [&] { return registry.render(); }
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "metrics/registry.hpp"
#include "queue/engine.hpp"
#include "redis/redis.hpp"

namespace wk::metrics {

inline constexpr std::string_view kPrefix = "autodevs_worker_";

// Sizes of one queue, read with O(1) commands only.
struct QueueSize {
  std::string queue;
  long long pending = 0, active = 0, scheduled = 0, retry = 0, archived = 0, completed = 0;
  bool paused = false;
};

// Reads queue sizes in ONE pipelined round trip for all queues: LLEN pending/active, ZCARD
// scheduled/retry/archived/completed, EXISTS paused. Never SCAN, never per-task reads: a scrape
// stays O(queues) however many tasks wait (the asynq metrics exporter's cost problem, #1160).
// Owns one connection, made on first use and remade after an error. Thread-safe (serialised).
class QueueSizeReader {
 public:
  QueueSizeReader(redis::Settings settings, std::vector<std::string> queues);
  ~QueueSizeReader();
  // Throws redis::Error when Redis does not answer.
  std::vector<QueueSize> read();

 private:
  redis::Settings settings_;
  std::vector<std::string> queues_;
  std::mutex mu_;
  std::unique_ptr<redis::Connection> conn_;
};

// One plugin as /metrics shows it (the runtime maps the plugin host's status to this).
struct PluginGauge {
  std::string plugin;
  std::string version;
  std::string state;
  std::optional<uint64_t> runner_resident_bytes;  // none in process
};

struct WorkerMetricsOptions {
  std::string worker_name;
  std::string version;
  // Queues whose sizes are exported; empty = no queue_size gauge.
  std::vector<std::string> queues;
  // Where to read queue sizes; ignored when `queues` is empty.
  std::optional<redis::Settings> redis;
  // Pull sources, read at scrape time; an empty function leaves that gauge out (redis_up then
  // follows the engine's redis_down/redis_up hooks).
  std::function<bool()> redis_up;
  std::function<bool()> db_up;
  std::function<int()> plugins_loaded;
  // plugin_info{plugin,version,state} and plugin_runner_resident_bytes{plugin}.
  std::function<std::vector<PluginGauge>()> plugins;
  // Flow control per task type (docs/queue-engine.md): limit_permits_in_use{limit,scope},
  // limit_permits_max{limit,scope}, tasks_parked{task_type}, throttled_seconds_total{task_type}.
  std::function<std::vector<queue::FlowLimitState>()> flow_limits;
  std::function<std::vector<queue::FlowTypeState>()> flow_types;
};

class WorkerMetrics final : public queue::EngineObserver {
 public:
  WorkerMetrics(Registry& registry, WorkerMetricsOptions options);
  ~WorkerMetrics() override;
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  void task_started(std::string_view type, std::string_view queue) override;
  // done, completed -> processed; retried -> failed + retried; archived -> failed + archived;
  // requeued, abandoned -> their own counters. The duration goes to the histogram in every case.
  void task_finished(std::string_view type, std::string_view queue, queue::TaskResult result,
                     std::chrono::nanoseconds duration) override;
  void redis_down() override;
  void redis_up() override;
  // A plugin's runner died (docs/plugin-isolation.md): plugin_crashes_total{plugin,reason}.
  void plugin_crashed(std::string_view plugin, std::string_view reason);

 private:
  void collect();

  WorkerMetricsOptions options_;
  CounterFamily& processed_;
  CounterFamily& failed_;
  CounterFamily& retried_;
  CounterFamily& archived_;
  CounterFamily& requeued_;
  CounterFamily& abandoned_;
  HistogramFamily& duration_;
  GaugeFamily& in_flight_;
  GaugeFamily& redis_up_;
  GaugeFamily* db_up_ = nullptr;
  GaugeFamily* plugins_loaded_ = nullptr;
  CounterFamily& plugin_crashes_;
  GaugeFamily* plugin_info_ = nullptr;
  GaugeFamily* plugin_rss_ = nullptr;
  GaugeFamily& build_info_;
  GaugeFamily* permits_in_use_ = nullptr;
  GaugeFamily* permits_max_ = nullptr;
  GaugeFamily* parked_ = nullptr;
  CounterFamily* throttled_ = nullptr;
  GaugeFamily* queue_size_ = nullptr;
  GaugeFamily* queue_paused_ = nullptr;
  GaugeFamily* scrape_errors_ = nullptr;
  std::unique_ptr<QueueSizeReader> sizes_;
};

}  // namespace wk::metrics
