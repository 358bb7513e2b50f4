#pragma once
// Payload validation for the shipped plugins. Every failure names the offending field so the
// archived task says what to fix; handlers turn PayloadError into the SDK's Permanent error.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace autodevs {

class PayloadError : public std::runtime_error {
 public:
  PayloadError(std::string field, const std::string& problem)
      : std::runtime_error("invalid payload: " + field + ": " + problem), field_(std::move(field)) {}
  const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

// True for the canonical 8-4-4-4-12 hex form (either case).
bool is_uuid(std::string_view text) noexcept;
// The lower-case canonical form; throws PayloadError(field) when `text` is not a UUID.
std::string normalize_uuid(std::string_view text, const std::string& field);

// Parses the payload bytes as a JSON object (field "payload" when it is not one).
nlohmann::json parse_payload_object(std::string_view bytes);

// Field accessors. `required_*` throw when absent; all throw when the type is wrong.
std::string required_uuid(const nlohmann::json& payload, const std::string& field);
std::optional<std::string> optional_string(const nlohmann::json& payload, const std::string& field);
std::int64_t required_positive_integer(const nlohmann::json& payload, const std::string& field,
                                       std::int64_t max_value);
std::optional<bool> optional_bool(const nlohmann::json& payload, const std::string& field);

}  // namespace autodevs
