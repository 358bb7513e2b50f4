// Go-style durations ("30s", "1h30m", "500ms"), as the seed's configuration uses them.
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "config/config.hpp"

namespace wk::config {

namespace {

struct Unit {
  std::string_view name;
  double nanos;
};
// Longest names first so "ms" is not read as "m" + "s".
constexpr Unit kUnits[] = {{"ns", 1.0}, {"us", 1e3}, {"\xC2\xB5s", 1e3}, {"\xCE\xBCs", 1e3},
                           {"ms", 1e6}, {"s", 1e9},  {"m", 60e9},        {"h", 3600e9}};

[[noreturn]] void bad(std::string_view text, const char* why) {
  throw std::invalid_argument("invalid duration \"" + std::string(text) + "\": " + why +
                              " (expected e.g. 30s, 5m, 1h30m, 500ms)");
}

}  // namespace

std::chrono::nanoseconds parse_duration(std::string_view text) {
  const std::string_view original = text;
  if (text.empty()) bad(original, "empty");
  if (text.front() == '-') bad(original, "negative");
  if (text.front() == '+') text.remove_prefix(1);
  if (text == "0") return std::chrono::nanoseconds{0};
  if (text.empty()) bad(original, "no number");
  long double total = 0;
  while (!text.empty()) {
    // Number: digits, optional fraction.
    size_t i = 0;
    long double number = 0;
    bool digits = false;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      number = number * 10 + (text[i] - '0');
      digits = true;
      ++i;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      long double scale = 0.1L;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        number += (text[i] - '0') * scale;
        scale /= 10;
        digits = true;
        ++i;
      }
    }
    if (!digits) bad(original, "expected a number");
    text.remove_prefix(i);
    const Unit* unit = nullptr;
    for (const auto& u : kUnits) {
      if (text.substr(0, u.name.size()) == u.name) {
        // "m" must not swallow the "m" of "ms".
        if (u.name == "m" && text.substr(0, 2) == "ms") continue;
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) bad(original, text.empty() ? "missing unit" : "unknown unit");
    text.remove_prefix(unit->name.size());
    total += number * static_cast<long double>(unit->nanos);
  }
  if (total > static_cast<long double>(std::chrono::nanoseconds::max().count())) bad(original, "too large");
  return std::chrono::nanoseconds{static_cast<std::chrono::nanoseconds::rep>(std::llround(total))};
}

std::string format_duration(std::chrono::milliseconds d) {
  using namespace std::chrono;
  if (d.count() == 0) return "0s";
  if (d % seconds(1) != milliseconds(0)) {
    if (d < seconds(1)) return std::to_string(d.count()) + "ms";
    return std::to_string(d.count() / 1000) + "." + [&] {
      std::string frac = std::to_string(d.count() % 1000);
      frac.insert(0, 3 - frac.size(), '0');
      while (!frac.empty() && frac.back() == '0') frac.pop_back();
      return frac;
    }() + "s";
  }
  auto rest = duration_cast<seconds>(d);
  std::string out;
  if (const auto h = duration_cast<hours>(rest); h.count() > 0) {
    out += std::to_string(h.count()) + "h";
    rest -= h;
  }
  if (const auto m = duration_cast<minutes>(rest); m.count() > 0) {
    out += std::to_string(m.count()) + "m";
    rest -= m;
  }
  if (rest.count() > 0) out += std::to_string(rest.count()) + "s";
  return out;
}

}  // namespace wk::config
