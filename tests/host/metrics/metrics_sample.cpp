// Prints the worker's /metrics text with every family populated (awkward label values
// included), without Redis: the input of `promtool check metrics` in the packaging tests.
#include <iostream>

#include "metrics/registry.hpp"
#include "metrics/worker_metrics.hpp"

int main() {
  using wk::queue::TaskResult;
  wk::metrics::Registry registry;
  wk::metrics::WorkerMetricsOptions options;
  options.worker_name = "sample \"worker\"\n1";
  options.version = "0.1.0";
  options.db_up = [] { return true; };
  options.plugins_loaded = [] { return 3; };
  wk::metrics::WorkerMetrics metrics(registry, options);
  auto& sizes =
      registry.gauge("autodevs_worker_queue_size", "Tasks in a queue by state.", {"queue", "state"});
  for (const char* state : {"pending", "active", "scheduled", "retry", "archived", "completed"}) {
    sizes.set({"default", state}, 1);
  }
  int n = 0;
  for (auto result : {TaskResult::done, TaskResult::completed, TaskResult::retried, TaskResult::archived,
                      TaskResult::requeued, TaskResult::abandoned}) {
    metrics.task_started("planning:task", "planning");
    metrics.task_finished("planning:task", "planning", result, std::chrono::milliseconds(10 * ++n));
    metrics.task_finished("weird\\type", "q\"1", result, std::chrono::seconds(5000));
  }
  std::cout << registry.render();
  return 0;
}
