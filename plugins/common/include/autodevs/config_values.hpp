#pragma once
// Parsing of configuration values as operators write them (Go-style durations, byte counts,
// booleans). Each throws ConfigError naming the variable.
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace autodevs {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "90s", "5m", "1h30m", "250ms", "24h"; a bare integer means seconds.
std::chrono::milliseconds parse_duration(std::string_view name, std::string_view text);
// A non-negative integer number of bytes; K/M/G/T suffixes (powers of 1024, optional "i"/"B").
std::uint64_t parse_byte_size(std::string_view name, std::string_view text);
std::uint64_t parse_unsigned(std::string_view name, std::string_view text);
// true/false/1/0/yes/no/on/off.
bool parse_bool(std::string_view name, std::string_view text);

}  // namespace autodevs
