#pragma once
// A small thread-safe metrics registry that renders the Prometheus text exposition format 0.0.4.
//
// There is no global registry: the runtime owns one Registry and hands it to whoever records.
// Families are created once (at start-up) and live as long as the registry; their references
// stay valid. Recording (inc/set/observe) takes one family-local mutex, so hot paths on
// different families never contend.
//
//   metrics::Registry registry;
//   auto& done = registry.counter("x_tasks_total", "Tasks done.", {"queue"});
//   done.inc({"default"});
//   std::string text = registry.render();
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace wk::metrics {

using LabelNames = std::vector<std::string>;
using LabelValues = std::vector<std::string>;

// The Content-Type of render()'s output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Prometheus' default buckets (seconds), fine for request-like durations.
std::vector<double> default_buckets();
// Buckets for task handler durations: 5 ms ... 1 h, since handlers range from no-ops to AI runs.
std::vector<double> task_duration_buckets();

// Text-format helpers, exposed for tests.
std::string escape_label_value(std::string_view value);  // \ " and newline escaped
std::string escape_help(std::string_view text);          // \ and newline escaped
std::string format_value(double value);                  // shortest round trip; +Inf, -Inf, NaN

class Family {
 public:
  Family(std::string name, std::string help, LabelNames labels);
  virtual ~Family() = default;
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  const std::string& name() const noexcept { return name_; }
  // Appends this family's HELP, TYPE and sample lines to `out`.
  virtual void render(std::string& out) const = 0;

 protected:
  // Throws std::invalid_argument when the number of values differs from the label names.
  void check_arity(const LabelValues& values) const;
  // `{a="x",b="y"}` (empty when there are no labels); `extra` is appended last (le="...").
  std::string label_text(const LabelValues& values, std::string_view extra = {}) const;
  void render_header(std::string& out, std::string_view type) const;

  std::string name_;
  std::string help_;
  LabelNames labels_;
  mutable std::mutex mu_;
};

class CounterFamily final : public Family {
 public:
  using Family::Family;
  // `by` must be >= 0 (counters only go up); throws std::invalid_argument otherwise.
  void inc(const LabelValues& values, double by = 1);
  double value(const LabelValues& values) const;  // 0 when never incremented
  void render(std::string& out) const override;

 private:
  std::map<LabelValues, double> series_;
};

class GaugeFamily final : public Family {
 public:
  using Family::Family;
  void set(const LabelValues& values, double value);
  void add(const LabelValues& values, double delta);
  double value(const LabelValues& values) const;
  // Drops every series (a source that could not be read reports nothing rather than stale data).
  void clear();
  void render(std::string& out) const override;

 private:
  std::map<LabelValues, double> series_;
};

class HistogramFamily final : public Family {
 public:
  // `buckets`: upper bounds, strictly increasing, finite; +Inf is implied.
  HistogramFamily(std::string name, std::string help, LabelNames labels, std::vector<double> buckets);
  void observe(const LabelValues& values, double value);
  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bucket, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot(const LabelValues& values) const;
  void render(std::string& out) const override;

 private:
  struct Series {
    std::vector<uint64_t> counts;  // per bucket (not cumulative), last = +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  std::vector<double> bounds_;
  std::map<LabelValues, Series> series_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, labels [a-zA-Z_][a-zA-Z0-9_]* and not start with
  // "__"; a name may be registered once. Throws std::invalid_argument otherwise.
  CounterFamily& counter(std::string name, std::string help, LabelNames labels = {});
  GaugeFamily& gauge(std::string name, std::string help, LabelNames labels = {});
  HistogramFamily& histogram(std::string name, std::string help, LabelNames labels,
                             std::vector<double> buckets = default_buckets());

  // Runs before every render(): pull-style sources (queue sizes, health) refresh their gauges
  // here, so values are read when scraped and never polled in the background.
  void add_collector(std::function<void()> collect);

  // Runs the collectors (one scrape at a time), then renders every family in registration order.
  std::string render() const;

 private:
  template <class F, class... Args>
  F& add(std::string name, Args&&... args);

  mutable std::mutex mu_;         // families_ and collectors_
  mutable std::mutex scrape_mu_;  // serialises collectors: concurrent scrapes must not interleave
  std::vector<std::unique_ptr<Family>> families_;
  std::vector<std::function<void()>> collectors_;
};

}  // namespace wk::metrics
