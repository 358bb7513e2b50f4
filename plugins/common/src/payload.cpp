#include "autodevs/payload.hpp"

#include <cctype>

namespace autodevs {

bool is_uuid(std::string_view text) noexcept {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position ? text[i] != '-' : !std::isxdigit(static_cast<unsigned char>(text[i]))) return false;
  }
  return true;
}

std::string normalize_uuid(std::string_view text, const std::string& field) {
  if (!is_uuid(text)) throw PayloadError(field, "must be a UUID (8-4-4-4-12 hex digits)");
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

nlohmann::json parse_payload_object(std::string_view bytes) {
  nlohmann::json parsed = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw PayloadError("payload", "not valid JSON");
  if (!parsed.is_object()) throw PayloadError("payload", "must be a JSON object");
  return parsed;
}

std::string required_uuid(const nlohmann::json& payload, const std::string& field) {
  const auto it = payload.find(field);
  if (it == payload.end() || it->is_null()) throw PayloadError(field, "is required");
  if (!it->is_string()) throw PayloadError(field, "must be a string");
  return normalize_uuid(it->get_ref<const std::string&>(), field);
}

std::optional<std::string> optional_string(const nlohmann::json& payload, const std::string& field) {
  const auto it = payload.find(field);
  if (it == payload.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw PayloadError(field, "must be a string");
  return it->get<std::string>();
}

std::int64_t required_positive_integer(const nlohmann::json& payload, const std::string& field,
                                       std::int64_t max_value) {
  const auto it = payload.find(field);
  if (it == payload.end() || it->is_null()) throw PayloadError(field, "is required");
  if (!it->is_number_integer()) throw PayloadError(field, "must be an integer");
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(max_value)) {
    throw PayloadError(field, "must be at most " + std::to_string(max_value));
  }
  const auto value = it->get<std::int64_t>();
  if (value < 1) throw PayloadError(field, "must be at least 1");
  if (value > max_value) throw PayloadError(field, "must be at most " + std::to_string(max_value));
  return value;
}

std::optional<bool> optional_bool(const nlohmann::json& payload, const std::string& field) {
  const auto it = payload.find(field);
  if (it == payload.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) throw PayloadError(field, "must be true or false");
  return it->get<bool>();
}

}  // namespace autodevs
