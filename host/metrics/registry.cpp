#include "metrics/registry.hpp"

#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>

namespace wk::metrics {

namespace {

bool valid_name(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(letter || (i > 0 && digit))) return false;
  }
  return true;
}

void validate(const std::string& name, const LabelNames& labels) {
  if (!valid_name(name, true)) throw std::invalid_argument("invalid metric name: " + name);
  std::set<std::string_view> seen;
  for (const auto& label : labels) {
    if (!valid_name(label, false) || label.starts_with("__") || label == "le") {
      throw std::invalid_argument(
          std::string("invalid label name for ").append(name).append(": ").append(label));
    }
    if (!seen.insert(label).second) {
      throw std::invalid_argument(std::string("duplicate label ").append(label).append(" in ").append(name));
    }
  }
}

}  // namespace

std::vector<double> default_buckets() { return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

std::vector<double> task_duration_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}

namespace {
// The text format escapes backslash and newline everywhere, and the double quote in label values.
std::string escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

std::string escape_label_value(std::string_view value) { return escape(value, true); }

std::string escape_help(std::string_view text) { return escape(text, false); }

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, result.ptr);
}

// ---- Family ---------------------------------------------------------------------------------

Family::Family(std::string name, std::string help, LabelNames labels)
    : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)) {}

void Family::check_arity(const LabelValues& values) const {
  if (values.size() != labels_.size()) {
    throw std::invalid_argument(name_ + ": expected " + std::to_string(labels_.size()) +
                                " label values, got " + std::to_string(values.size()));
  }
}

std::string Family::label_text(const LabelValues& values, std::string_view extra) const {
  if (labels_.empty() && extra.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (i > 0) out += ',';
    out += labels_[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
  if (!extra.empty()) {
    if (!labels_.empty()) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

void Family::render_header(std::string& out, std::string_view type) const {
  out += "# HELP " + name_ + " " + escape_help(help_) + "\n";
  out += "# TYPE " + name_ + " ";
  out += type;
  out += '\n';
}

// ---- Counter --------------------------------------------------------------------------------

void CounterFamily::inc(const LabelValues& values, double by) {
  check_arity(values);
  if (!(by >= 0)) throw std::invalid_argument(name_ + ": a counter cannot decrease");
  std::lock_guard lock(mu_);
  series_[values] += by;
}

double CounterFamily::value(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  const auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second;
}

void CounterFamily::render(std::string& out) const {
  render_header(out, "counter");
  std::lock_guard lock(mu_);
  for (const auto& [values, v] : series_) out += name_ + label_text(values) + " " + format_value(v) + "\n";
}

// ---- Gauge ----------------------------------------------------------------------------------

void GaugeFamily::set(const LabelValues& values, double value) {
  check_arity(values);
  std::lock_guard lock(mu_);
  series_[values] = value;
}

void GaugeFamily::add(const LabelValues& values, double delta) {
  check_arity(values);
  std::lock_guard lock(mu_);
  series_[values] += delta;
}

double GaugeFamily::value(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  const auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second;
}

void GaugeFamily::clear() {
  std::lock_guard lock(mu_);
  series_.clear();
}

void GaugeFamily::render(std::string& out) const {
  render_header(out, "gauge");
  std::lock_guard lock(mu_);
  for (const auto& [values, v] : series_) out += name_ + label_text(values) + " " + format_value(v) + "\n";
}

// ---- Histogram ------------------------------------------------------------------------------

HistogramFamily::HistogramFamily(std::string name, std::string help, LabelNames labels,
                                 std::vector<double> buckets)
    : Family(std::move(name), std::move(help), std::move(labels)), bounds_(std::move(buckets)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i] > bounds_[i - 1]))) {
      throw std::invalid_argument(name_ + ": buckets must be finite and strictly increasing");
    }
  }
}

void HistogramFamily::observe(const LabelValues& values, double value) {
  check_arity(values);
  // The first bucket whose upper bound holds the value ("le" is inclusive); past all: +Inf.
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  std::lock_guard lock(mu_);
  auto& s = series_[values];
  if (s.counts.empty()) s.counts.assign(bounds_.size() + 1, 0);
  ++s.counts[bucket];
  s.sum += value;
  ++s.count;
}

HistogramFamily::Snapshot HistogramFamily::snapshot(const LabelValues& values) const {
  Snapshot snap;
  snap.cumulative.assign(bounds_.size() + 1, 0);
  std::lock_guard lock(mu_);
  const auto it = series_.find(values);
  if (it == series_.end()) return snap;
  uint64_t running = 0;
  for (size_t i = 0; i < it->second.counts.size(); ++i) {
    running += it->second.counts[i];
    snap.cumulative[i] = running;
  }
  snap.sum = it->second.sum;
  snap.count = it->second.count;
  return snap;
}

void HistogramFamily::render(std::string& out) const {
  render_header(out, "histogram");
  std::lock_guard lock(mu_);
  for (const auto& [values, s] : series_) {
    uint64_t running = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      running += s.counts[i];
      const std::string le = i < bounds_.size() ? format_value(bounds_[i]) : "+Inf";
      out +=
          name_ + "_bucket" + label_text(values, "le=\"" + le + "\"") + " " + std::to_string(running) + "\n";
    }
    out += name_ + "_sum" + label_text(values) + " " + format_value(s.sum) + "\n";
    out += name_ + "_count" + label_text(values) + " " + std::to_string(s.count) + "\n";
  }
}

// ---- Registry -------------------------------------------------------------------------------

template <class F, class... Args>
F& Registry::add(std::string name, Args&&... args) {
  std::lock_guard lock(mu_);
  for (const auto& f : families_) {
    if (f->name() == name) throw std::invalid_argument("metric registered twice: " + name);
  }
  auto family = std::make_unique<F>(std::move(name), std::forward<Args>(args)...);
  F& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

CounterFamily& Registry::counter(std::string name, std::string help, LabelNames labels) {
  validate(name, labels);
  return add<CounterFamily>(std::move(name), std::move(help), std::move(labels));
}

GaugeFamily& Registry::gauge(std::string name, std::string help, LabelNames labels) {
  validate(name, labels);
  return add<GaugeFamily>(std::move(name), std::move(help), std::move(labels));
}

HistogramFamily& Registry::histogram(std::string name, std::string help, LabelNames labels,
                                     std::vector<double> buckets) {
  validate(name, labels);
  return add<HistogramFamily>(std::move(name), std::move(help), std::move(labels), std::move(buckets));
}

void Registry::add_collector(std::function<void()> collect) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::render() const {
  std::lock_guard scrape(scrape_mu_);
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  // A collector handles its own source's failures (it clears its gauges); one that still throws
  // must not take the whole scrape down with it.
  for (const auto& collect : collectors) {
    try {
      collect();
    } catch (...) {
    }
  }
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& f : families_) f->render(out);
  return out;
}

}  // namespace wk::metrics
