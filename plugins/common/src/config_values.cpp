#include "autodevs/config_values.hpp"

#include <cctype>
#include <limits>

#include "autodevs/text.hpp"

namespace autodevs {
namespace {

ConfigError bad_value(std::string_view name, std::string_view text, std::string_view expected) {
  return ConfigError(std::string(name) + "=\"" + std::string(text) + "\" is invalid: expected " +
                     std::string(expected));
}

bool read_number(std::string_view text, std::size_t& pos, std::uint64_t& value) {
  const std::size_t start = pos;
  value = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    const auto digit = static_cast<std::uint64_t>(text[pos] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
    value = value * 10 + digit;
    ++pos;
  }
  return pos > start;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::uint64_t parse_unsigned(std::string_view name, std::string_view raw) {
  const std::string text = trim(raw);
  std::size_t pos = 0;
  std::uint64_t value = 0;
  if (!read_number(text, pos, value) || pos != text.size())
    throw bad_value(name, raw, "a non-negative integer");
  return value;
}

std::chrono::milliseconds parse_duration(std::string_view name, std::string_view raw) {
  const std::string text = trim(raw);
  const char* expected = "a duration such as 30s, 5m, 24h or 1h30m";
  if (text.empty()) throw bad_value(name, raw, expected);
  std::size_t pos = 0;
  std::uint64_t value = 0;
  if (read_number(text, pos, value) && pos == text.size()) {
    return std::chrono::seconds(static_cast<std::int64_t>(value));
  }
  pos = 0;
  std::uint64_t total_ms = 0;
  while (pos < text.size()) {
    if (!read_number(text, pos, value)) throw bad_value(name, raw, expected);
    std::uint64_t unit_ms = 0;
    if (text.compare(pos, 2, "ms") == 0) {
      unit_ms = 1;
      pos += 2;
    } else if (pos < text.size() && text[pos] == 's') {
      unit_ms = 1000;
      ++pos;
    } else if (pos < text.size() && text[pos] == 'm') {
      unit_ms = 60'000;
      ++pos;
    } else if (pos < text.size() && text[pos] == 'h') {
      unit_ms = 3'600'000;
      ++pos;
    } else {
      throw bad_value(name, raw, expected);
    }
    if (value > std::numeric_limits<std::int64_t>::max() / unit_ms / 2) throw bad_value(name, raw, expected);
    total_ms += value * unit_ms;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(total_ms));
}

std::uint64_t parse_byte_size(std::string_view name, std::string_view raw) {
  const std::string text = trim(raw);
  const char* expected = "a byte count such as 104857600, 100M or 2G";
  std::size_t pos = 0;
  std::uint64_t value = 0;
  if (!read_number(text, pos, value)) throw bad_value(name, raw, expected);
  std::string suffix = lower(std::string_view(text).substr(pos));
  if (!suffix.empty() && suffix.back() == 'b') suffix.pop_back();
  if (!suffix.empty() && suffix.back() == 'i') suffix.pop_back();
  std::uint64_t multiplier = 1;
  if (suffix == "k") {
    multiplier = 1ull << 10;
  } else if (suffix == "m") {
    multiplier = 1ull << 20;
  } else if (suffix == "g") {
    multiplier = 1ull << 30;
  } else if (suffix == "t") {
    multiplier = 1ull << 40;
  } else if (!suffix.empty()) {
    throw bad_value(name, raw, expected);
  }
  if (value > std::numeric_limits<std::uint64_t>::max() / multiplier) throw bad_value(name, raw, expected);
  return value * multiplier;
}

bool parse_bool(std::string_view name, std::string_view raw) {
  const std::string text = lower(trim(raw));
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  throw bad_value(name, raw, "true or false");
}

}  // namespace autodevs
