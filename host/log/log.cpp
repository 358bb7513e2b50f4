#include "log/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace wk::log {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

const char* level_name(Level l) {
  switch (l) {
    case Level::trace:
      return "TRACE";
    case Level::debug:
      return "DEBUG";
    case Level::info:
      return "INFO";
    case Level::warn:
      return "WARN";
    case Level::error:
      return "ERROR";
  }
  return "INFO";
}

std::string iso_time(long long epoch_ms) {
  const std::time_t secs = static_cast<std::time_t>(epoch_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%.*s.%03lldZ", static_cast<int>(n), buf, epoch_ms % 1000);
  return out;
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  return std::any_of(v.begin(), v.end(), [](unsigned char c) {
    return c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f;
  });
}

void append_logfmt_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (unsigned char c : v) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", c);
          out.append(esc);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

}  // namespace

Level parse_level(std::string_view text) {
  const std::string t = lower(text);
  if (t == "trace") return Level::trace;
  if (t == "debug") return Level::debug;
  if (t == "info") return Level::info;
  if (t == "warn" || t == "warning") return Level::warn;
  if (t == "error") return Level::error;
  throw std::invalid_argument("expected one of trace, debug, info, warn, error");
}

Format parse_format(std::string_view text) {
  const std::string t = lower(text);
  if (t == "logfmt" || t == "text") return Format::logfmt;
  if (t == "json") return Format::json;
  throw std::invalid_argument("expected logfmt or json");
}

std::string format_line(Format format, long long epoch_ms, Level level, std::string_view msg,
                        const Fields& fields) {
  if (format == Format::json) {
    nlohmann::ordered_json j;
    j["time"] = iso_time(epoch_ms);
    j["level"] = level_name(level);
    j["msg"] = std::string(msg);
    for (const auto& f : fields) j[f.key] = f.value;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string out;
  out.reserve(96 + msg.size());
  out.append("time=").append(iso_time(epoch_ms));
  out.append(" level=").append(level_name(level));
  out.append(" msg=");
  // The seed's format always quotes msg.
  std::string quoted;
  append_logfmt_value(quoted, msg);
  if (quoted.empty() || quoted.front() != '"') quoted = "\"" + quoted + "\"";
  out.append(quoted);
  for (const auto& f : fields) {
    out.push_back(' ');
    out.append(f.key).push_back('=');
    append_logfmt_value(out, f.value);
  }
  return out;
}

class Sink {
 public:
  Sink(Level level, Format format, bool in_memory) : level_(level), format_(format), in_memory_(in_memory) {
    if (!in_memory_) {
      out_ = std::make_shared<spdlog::logger>("wk", std::make_shared<spdlog::sinks::stderr_sink_mt>());
      out_->set_pattern("%v");
      out_->set_level(spdlog::level::trace);
      out_->flush_on(spdlog::level::trace);
    }
  }
  Sink(Level level, Logger::Forward forward)
      : level_(level), format_(Format::logfmt), in_memory_(false), forward_(std::move(forward)) {}
  bool enabled(Level l) const noexcept { return static_cast<int>(l) >= static_cast<int>(level_); }
  Level level() const noexcept { return level_; }
  void write(Level level, std::string_view msg, const Fields& bound, const Fields& fields) {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    Fields all;
    all.reserve(bound.size() + fields.size());
    all.insert(all.end(), fields.begin(), fields.end());
    for (const auto& b : bound) {
      const bool overridden =
          std::any_of(fields.begin(), fields.end(), [&](const Field& f) { return f.key == b.key; });
      if (!overridden) all.push_back(b);
    }
    if (forward_) {
      forward_(level, msg, all);
      return;
    }
    std::string line = format_line(format_, now, level, msg, all);
    if (in_memory_) {
      std::lock_guard lock(mu_);
      lines_.push_back(std::move(line));
    } else {
      out_->info(line);
    }
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  Level level_;
  Format format_;
  bool in_memory_;
  std::shared_ptr<spdlog::logger> out_;
  Logger::Forward forward_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

Logger Logger::to_stderr(Level level, Format format) {
  return Logger(std::make_shared<Sink>(level, format, false), {});
}
Logger Logger::in_memory(Level level, Format format) {
  return Logger(std::make_shared<Sink>(level, format, true), {});
}

Logger Logger::forwarding(Level level, Forward forward) {
  return Logger(std::make_shared<Sink>(level, std::move(forward)), {});
}

Logger Logger::with(std::initializer_list<Field> fields) const { return with(Fields(fields)); }
Logger Logger::with(const Fields& fields) const {
  Fields bound = fields;
  bound.insert(bound.end(), bound_.begin(), bound_.end());
  return Logger(sink_, std::move(bound));
}
Level Logger::level() const noexcept { return sink_ ? sink_->level() : Level::error; }
bool Logger::enabled(Level level) const noexcept { return sink_ && sink_->enabled(level); }
void Logger::log(Level level, std::string_view msg, const Fields& fields) const {
  if (!enabled(level)) return;
  sink_->write(level, msg, bound_, fields);
}
std::vector<std::string> Logger::lines() const { return sink_ ? sink_->lines() : std::vector<std::string>{}; }

}  // namespace wk::log
