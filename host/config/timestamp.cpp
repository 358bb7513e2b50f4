// RFC 3339 timestamps for `worker enqueue --at/--deadline`.
#include <chrono>
#include <stdexcept>
#include <string>

#include "config/config.hpp"

namespace wk::config {

namespace {

[[noreturn]] void bad(std::string_view text, const char* why) {
  throw std::invalid_argument("invalid time \"" + std::string(text) + "\": " + why +
                              " (expected RFC 3339, e.g. 2024-01-01T12:00:00Z)");
}

// Reads exactly `n` digits at `pos`.
int digits(std::string_view text, std::string_view original, size_t& pos, size_t n) {
  if (pos + n > text.size()) bad(original, "too short");
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') bad(original, "expected a digit");
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

void expect(std::string_view text, std::string_view original, size_t& pos, std::string_view choices) {
  if (pos >= text.size() || choices.find(text[pos]) == std::string_view::npos) bad(original, "malformed");
  ++pos;
}

}  // namespace

std::chrono::system_clock::time_point parse_rfc3339(std::string_view text) {
  using namespace std::chrono;
  size_t pos = 0;
  const int y = digits(text, text, pos, 4);
  expect(text, text, pos, "-");
  const int mo = digits(text, text, pos, 2);
  expect(text, text, pos, "-");
  const int d = digits(text, text, pos, 2);
  expect(text, text, pos, "Tt ");
  const int h = digits(text, text, pos, 2);
  expect(text, text, pos, ":");
  const int mi = digits(text, text, pos, 2);
  expect(text, text, pos, ":");
  const int s = digits(text, text, pos, 2);
  nanoseconds frac{0};
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    long long scale = 100000000;
    bool any = false;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      frac += nanoseconds((text[pos] - '0') * scale);
      scale /= 10;
      any = true;
      ++pos;
    }
    if (!any) bad(text, "empty fraction");
  }
  if (pos >= text.size()) bad(text, "missing time zone (Z or +hh:mm)");
  minutes offset{0};
  if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else {
    const char sign = text[pos];
    expect(text, text, pos, "+-");
    const int oh = digits(text, text, pos, 2);
    expect(text, text, pos, ":");
    const int om = digits(text, text, pos, 2);
    if (oh > 23 || om > 59) bad(text, "time zone offset out of range");
    offset = minutes(oh * 60 + om) * (sign == '-' ? -1 : 1);
  }
  if (pos != text.size()) bad(text, "trailing text");
  const year_month_day date{year(y), month(static_cast<unsigned>(mo)), day(static_cast<unsigned>(d))};
  if (!date.ok()) bad(text, "no such date");
  if (h > 23 || mi > 59 || s > 60) bad(text, "time of day out of range");
  const auto local = sys_days(date) + hours(h) + minutes(mi) + seconds(s) + frac;
  return time_point_cast<system_clock::duration>(local - offset);
}

}  // namespace wk::config
