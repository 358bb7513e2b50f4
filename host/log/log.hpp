#pragma once
// Structured logging: one line per event, logfmt or JSON (docs/operations.md, "Logs").
//
//   time=2024-01-01T12:00:00.000Z level=INFO msg="Starting job worker" worker_name=w1
//
// A Logger is a cheap value: a shared sink plus fields bound with with(). There is no global
// logger; main() makes one and hands it to each part.
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wk::log {

enum class Level { trace = 0, debug = 1, info = 2, warn = 3, error = 4 };
enum class Format { logfmt, json };

struct Field {
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v != nullptr ? v : "") {}
  Field(std::string_view k, const std::string& v) : key(k), value(v) {}
  template <class Int, class = std::enable_if_t<std::is_integral_v<Int>>>
  Field(std::string_view k, Int v) : key(k), value(std::to_string(v)) {}
  std::string key;
  std::string value;
};
using Fields = std::vector<Field>;

// Parses "trace|debug|info|warn|warning|error" (case-insensitive). Throws std::invalid_argument.
Level parse_level(std::string_view text);
Format parse_format(std::string_view text);

// Pure formatting, exposed for tests. `epoch_ms` is the event time.
std::string format_line(Format format, long long epoch_ms, Level level, std::string_view msg,
                        const Fields& fields);

class Sink;

class Logger {
 public:
  // Writes to stderr.
  static Logger to_stderr(Level level, Format format);
  // Collects lines in memory (tests). lines() returns them.
  static Logger in_memory(Level level, Format format);
  // Hands every enabled event, with its bound fields merged in, to `forward` unformatted (a
  // plugin runner ships them to the worker, whose logger writes them). Called on the logging
  // thread; must be thread-safe.
  using Forward = std::function<void(Level level, std::string_view msg, const Fields& fields)>;
  static Logger forwarding(Level level, Forward forward);
  // The lowest level this logger writes.
  Level level() const noexcept;

  Logger with(std::initializer_list<Field> fields) const;
  Logger with(const Fields& fields) const;

  bool enabled(Level level) const noexcept;
  void log(Level level, std::string_view msg, const Fields& fields = {}) const;
  void trace(std::string_view msg, const Fields& fields = {}) const { log(Level::trace, msg, fields); }
  void debug(std::string_view msg, const Fields& fields = {}) const { log(Level::debug, msg, fields); }
  void info(std::string_view msg, const Fields& fields = {}) const { log(Level::info, msg, fields); }
  void warn(std::string_view msg, const Fields& fields = {}) const { log(Level::warn, msg, fields); }
  void error(std::string_view msg, const Fields& fields = {}) const { log(Level::error, msg, fields); }

  // Lines written so far (in_memory loggers only; empty otherwise).
  std::vector<std::string> lines() const;

 private:
  Logger(std::shared_ptr<Sink> sink, Fields bound) : sink_(std::move(sink)), bound_(std::move(bound)) {}
  std::shared_ptr<Sink> sink_;
  Fields bound_;
};

}  // namespace wk::log
