#include "task/limits.hpp"

#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>

namespace wk::task {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t end = std::min(s.find(sep, pos), s.size());
    out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < s.size()) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n')) ++pos;
    size_t end = pos;
    while (end < s.size() && s[end] != ' ' && s[end] != '\t' && s[end] != '\n') ++end;
    if (end > pos) out.push_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

uint32_t count_of(std::string_view key, std::string_view value, uint32_t min) {
  uint32_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < min || n > 1000000) {
    throw std::invalid_argument(std::string(key) + "=" + std::string(value) + ": a whole number from " +
                                std::to_string(min) + " to 1000000");
  }
  return n;
}

// "20/s", "60/m", "600/h" (also /sec, /min, /hour) -> per second.
double rate_of(std::string_view value) {
  const size_t slash = value.find('/');
  const auto bad = [&] {
    return std::invalid_argument("rate=" + std::string(value) +
                                 ": a count per unit such as 20/s, 60/m or 600/h");
  };
  if (slash == std::string_view::npos) throw bad();
  uint32_t n = 0;
  const std::string_view count = value.substr(0, slash);
  const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (ec != std::errc() || end != count.data() + count.size() || n == 0 || n > 1000000) throw bad();
  const std::string_view unit = value.substr(slash + 1);
  if (unit == "s" || unit == "sec") return n;
  if (unit == "m" || unit == "min") return n / 60.0;
  if (unit == "h" || unit == "hour") return n / 3600.0;
  throw bad();
}

bool valid_pattern(std::string_view p) {
  if (p.empty()) return false;
  const size_t star = p.find('*');
  if (star != std::string_view::npos && star != p.size() - 1) return false;  // only a trailing *
  for (const char c : p) {
    if (c == ';' || c == '=' || static_cast<unsigned char>(c) < 0x21) return false;
  }
  return true;
}

std::string number_text(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

}  // namespace

bool TypeLimit::matches(std::string_view type) const {
  if (!pattern.empty() && pattern.back() == '*') {
    return type.substr(0, pattern.size() - 1) == std::string_view(pattern).substr(0, pattern.size() - 1);
  }
  return type == pattern;
}

std::string TypeLimit::text() const {
  std::string out = pattern;
  if (concurrency > 0) out += " concurrency=" + std::to_string(concurrency);
  if (fleet > 0) out += " fleet=" + std::to_string(fleet);
  if (rate > 0) out += " rate=" + (rate_text.empty() ? number_text(rate) + "/s" : rate_text);
  if (burst > 0) out += " burst=" + std::to_string(burst);
  return out;
}

std::vector<TypeLimit> parse_type_limits(std::string_view text) {
  std::vector<TypeLimit> out;
  std::set<std::string, std::less<>> seen;
  for (const std::string_view item : split(text, ';')) {
    const auto w = words(trim(item));
    if (w.empty()) continue;
    TypeLimit limit;
    limit.pattern = std::string(w.front());
    if (!valid_pattern(limit.pattern)) {
      throw std::invalid_argument("\"" + limit.pattern +
                                  "\": a task type, a prefix ending in * (such as ai:*), or *");
    }
    if (!seen.insert(limit.pattern).second) {
      throw std::invalid_argument("\"" + limit.pattern +
                                  "\" is limited twice; put its settings in one place");
    }
    for (size_t i = 1; i < w.size(); ++i) {
      const size_t eq = w[i].find('=');
      if (eq == std::string_view::npos) {
        throw std::invalid_argument("\"" + std::string(w[i]) + "\" after " + limit.pattern +
                                    ": settings are key=value (concurrency, fleet, rate, burst)");
      }
      const std::string_view key = w[i].substr(0, eq);
      const std::string_view value = w[i].substr(eq + 1);
      if (key == "concurrency") {
        limit.concurrency = count_of(key, value, 1);
      } else if (key == "fleet") {
        limit.fleet = count_of(key, value, 1);
      } else if (key == "rate") {
        limit.rate = rate_of(value);
        limit.rate_text = std::string(value);
      } else if (key == "burst") {
        limit.burst = count_of(key, value, 1);
      } else {
        throw std::invalid_argument("\"" + std::string(key) + "\" after " + limit.pattern +
                                    ": settings are concurrency, fleet, rate and burst");
      }
    }
    if (limit.concurrency == 0 && limit.fleet == 0 && limit.rate == 0) {
      throw std::invalid_argument(limit.pattern + " sets no limit: give concurrency=, fleet= or rate=");
    }
    if (limit.burst > 0 && limit.rate == 0) {
      throw std::invalid_argument(limit.pattern + ": burst= goes with rate=");
    }
    out.push_back(std::move(limit));
  }
  return out;
}

}  // namespace wk::task
