// The Prometheus text format as rendered by metrics::Registry, and WorkerMetrics' outcome mapping.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "metrics/registry.hpp"
#include "metrics/worker_metrics.hpp"

namespace wk::metrics {
namespace {

TEST(MetricsFormat, ValuesUseShortestFormAndSpecialNames) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1e21), "1e+21");
  EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(format_value(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(format_value(0.0 / 0.0), "NaN");
}

TEST(MetricsFormat, LabelValuesEscapeBackslashQuoteNewline) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)"
                               "\n"
                               "d"),
            R"(a\\b\"c\nd)");
  EXPECT_EQ(escape_help("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");  // quotes stay in HELP
}

TEST(MetricsRegistry, CounterRendersHelpTypeAndSortedSeries) {
  Registry r;
  auto& c = r.counter("jobs_total", "Jobs\nseen.", {"queue", "type"});
  c.inc({"default", "b"});
  c.inc({"critical", "a\"x"}, 2);
  c.inc({"default", "b"}, 0.5);
  EXPECT_EQ(r.render(),
            "# HELP jobs_total Jobs\\nseen.\n"
            "# TYPE jobs_total counter\n"
            "jobs_total{queue=\"critical\",type=\"a\\\"x\"} 2\n"
            "jobs_total{queue=\"default\",type=\"b\"} 1.5\n");
  EXPECT_DOUBLE_EQ(c.value({"default", "b"}), 1.5);
  EXPECT_THROW(c.inc({"default", "b"}, -1), std::invalid_argument);
  EXPECT_THROW(c.inc({"only-one"}), std::invalid_argument);
}

TEST(MetricsRegistry, GaugeWithoutLabelsAndClear) {
  Registry r;
  auto& g = r.gauge("up", "Up.");
  g.set({}, 1);
  g.add({}, 2);
  EXPECT_EQ(r.render(), "# HELP up Up.\n# TYPE up gauge\nup 3\n");
  g.clear();
  EXPECT_EQ(r.render(), "# HELP up Up.\n# TYPE up gauge\n");
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithInfSumCount) {
  Registry r;
  auto& h = r.histogram("d_seconds", "D.", {"t"}, {0.1, 1});
  h.observe({"x"}, 0.1);  // le is inclusive: lands in 0.1
  h.observe({"x"}, 0.5);
  h.observe({"x"}, 7);  // only +Inf
  EXPECT_EQ(r.render(),
            "# HELP d_seconds D.\n"
            "# TYPE d_seconds histogram\n"
            "d_seconds_bucket{t=\"x\",le=\"0.1\"} 1\n"
            "d_seconds_bucket{t=\"x\",le=\"1\"} 2\n"
            "d_seconds_bucket{t=\"x\",le=\"+Inf\"} 3\n"
            "d_seconds_sum{t=\"x\"} 7.6\n"
            "d_seconds_count{t=\"x\"} 3\n");
  const auto snap = h.snapshot({"x"});
  EXPECT_EQ(snap.cumulative, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(snap.count, 3u);
}

TEST(MetricsRegistry, HistogramWithoutLabelsHasOnlyLe) {
  Registry r;
  r.histogram("h", "H.", {}, {1}).observe({}, 2);
  const auto text = r.render();
  EXPECT_NE(text.find("h_bucket{le=\"1\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_bucket{le=\"+Inf\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_sum 2\nh_count 1\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, RejectsBadNamesDuplicatesAndBuckets) {
  Registry r;
  EXPECT_THROW(r.counter("1abc", "x"), std::invalid_argument);
  EXPECT_THROW(r.counter("a-b", "x"), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "x", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "x", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h", "x", {"le"}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h2", "x", {}, {1, 1}), std::invalid_argument);
  r.gauge("ns:name_1", "x");
  EXPECT_THROW(r.counter("ns:name_1", "x"), std::invalid_argument);
}

TEST(MetricsRegistry, CollectorsRunBeforeEachRenderAndAThrowingOneIsContained) {
  Registry r;
  auto& g = r.gauge("g", "G.");
  int runs = 0;
  r.add_collector([&] { g.set({}, ++runs); });
  r.add_collector([] { throw std::runtime_error("source down"); });
  EXPECT_NE(r.render().find("\ng 1\n"), std::string::npos);
  EXPECT_NE(r.render().find("\ng 2\n"), std::string::npos);
}

TEST(WorkerMetrics, MapsTaskResultsToCounters) {
  Registry r;
  WorkerMetricsOptions options;
  options.worker_name = "w1";
  options.version = "1.2.3";
  options.plugins_loaded = [] { return 3; };
  WorkerMetrics m(r, options);
  using queue::TaskResult;
  const auto ms = std::chrono::milliseconds(20);
  for (auto result : {TaskResult::done, TaskResult::completed, TaskResult::retried, TaskResult::archived,
                      TaskResult::requeued, TaskResult::abandoned}) {
    m.task_started("email:send", "default");
    m.task_finished("email:send", "default", result, ms);
  }
  m.task_started("email:send", "default");  // still running
  const auto text = r.render();
  const auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  const std::string l = "{task_type=\"email:send\",queue=\"default\"}";
  EXPECT_TRUE(has("autodevs_worker_tasks_processed_total" + l + " 2")) << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_failed_total" + l + " 2")) << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_retried_total" + l + " 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_archived_total" + l + " 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_requeued_total" + l + " 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_abandoned_total" + l + " 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_task_duration_seconds_count{task_type=\"email:send\"} 6")) << text;
  EXPECT_TRUE(has("autodevs_worker_task_duration_seconds_bucket{task_type=\"email:send\",le=\"0.025\"} 6"))
      << text;
  EXPECT_TRUE(has("autodevs_worker_task_duration_seconds_bucket{task_type=\"email:send\",le=\"0.01\"} 0"))
      << text;
  EXPECT_TRUE(has("autodevs_worker_tasks_in_flight 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_plugins_loaded 3")) << text;
  EXPECT_TRUE(has("autodevs_worker_build_info{version=\"1.2.3\",worker=\"w1\"} 1")) << text;
  EXPECT_TRUE(has("autodevs_worker_redis_up 1")) << text;
  m.redis_down();
  EXPECT_NE(r.render().find("autodevs_worker_redis_up 0\n"), std::string::npos);
  m.redis_up();
  EXPECT_NE(r.render().find("autodevs_worker_redis_up 1\n"), std::string::npos);
  // No queue list: no queue_size family at all (and no Redis needed).
  EXPECT_EQ(text.find("queue_size"), std::string::npos);
}

}  // namespace
}  // namespace wk::metrics
