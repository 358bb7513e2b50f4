#pragma once
// wk_payload.hpp: a task's payload as JSON, where every kind of bad input is a permanent failure.
//
//   #include <wk_payload.hpp>              // needs nlohmann/json (Debian: nlohmann-json3-dev);
//                                          // link WorkerSDK::payload instead of WorkerSDK::sdk
//   wk::Outcome greet(wk::TaskContext& tc, const wk::Task& task) {
//     const wk::JsonPayload payload(task);                      // not JSON, not an object
//     const std::string name = payload.required<std::string>("name");   // absent, wrong type
//     const int times = payload.optional<int>("times").value_or(1);
//     ...
//   }
//
// A payload the handler cannot read will not become readable by retrying, yet a JSON library's
// exception escaping a handler is retried (25 times over three weeks, by asynq's defaults). Here
// each such error throws wk::Permanent with code "bad_payload" and a message naming the field
// ("invalid payload: name: must be a string"), so the task is archived after its first attempt
// with the reason, for someone to fix and run again.
//
// An empty payload counts as {} (asynq tasks may carry none). Whole structures can be read with
// payload_as<T>(task), through nlohmann's from_json for T: any std::exception it raises is
// bad_payload too (the SDK's own exceptions pass through unchanged).
#include <nlohmann/json.hpp>

#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "wk_sdk.hpp"

namespace wk {

inline constexpr const char* kBadPayload = "bad_payload";

// Throws the permanent failure for a payload problem in `field` ("payload" for the whole).
[[noreturn]] inline void bad_payload(std::string_view field, std::string_view problem) {
  throw Permanent(kBadPayload, "invalid payload: " + std::string(field) + ": " + std::string(problem));
}

namespace detail {

// `value` as T through nlohmann's from_json. Any std::exception on the way (nlohmann's type
// errors, or std::stoi, vector::at, ... in a from_json of the author's) is bad input in `field`;
// the SDK's own exceptions pass through as thrown.
template <class T>
T json_as(const nlohmann::json& value, std::string_view field) {
  try {
    return value.get<T>();
  } catch (const Permanent&) {
    throw;
  } catch (const RetryLater&) {
    throw;
  } catch (const Cancelled&) {
    throw;
  } catch (const HostError&) {
    throw;
  } catch (const std::exception& e) {
    bad_payload(field, e.what());
  }
}

}  // namespace detail

class JsonPayload {
 public:
  explicit JsonPayload(const Task& task) : JsonPayload(task.payload) {}
  explicit JsonPayload(std::string_view bytes) {
    if (bytes.find_first_not_of(" \t\r\n") == std::string_view::npos) {
      json_ = nlohmann::json::object();
      return;
    }
    json_ = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
    if (json_.is_discarded()) bad_payload("payload", "not valid JSON");
    if (!json_.is_object()) bad_payload("payload", "must be a JSON object");
  }

  // The field's value as T. Absent or null: bad_payload "is required".
  template <class T>
  T required(const std::string& field) const {
    const auto it = json_.find(field);
    if (it == json_.end() || it->is_null()) bad_payload(field, "is required");
    return convert<T>(*it, field);
  }

  // The field's value as T, or nothing when it is absent or null.
  template <class T>
  std::optional<T> optional(const std::string& field) const {
    const auto it = json_.find(field);
    if (it == json_.end() || it->is_null()) return std::nullopt;
    return convert<T>(*it, field);
  }

  bool has(const std::string& field) const { return json_.contains(field) && !json_.at(field).is_null(); }
  const nlohmann::json& json() const noexcept { return json_; }

 private:
  template <class T>
  static T convert(const nlohmann::json& value, const std::string& field) {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!value.is_string()) bad_payload(field, "must be a string");
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!value.is_boolean()) bad_payload(field, "must be true or false");
    } else if constexpr (std::is_integral_v<T>) {
      if (!value.is_number_integer()) bad_payload(field, "must be an integer");
      // Range: nlohmann would wrap silently; compare in the widest types first.
      if (value.is_number_unsigned()) {
        if (value.get<unsigned long long>() > static_cast<unsigned long long>(std::numeric_limits<T>::max()))
          bad_payload(field, "is out of range");
      } else {
        const long long v = value.get<long long>();
        if constexpr (std::is_unsigned_v<T>) {
          if (v < 0) bad_payload(field, "must not be negative");
        } else {
          if (v < static_cast<long long>(std::numeric_limits<T>::min()) ||
              v > static_cast<long long>(std::numeric_limits<T>::max()))
            bad_payload(field, "is out of range");
        }
      }
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!value.is_number()) bad_payload(field, "must be a number");
    }
    return detail::json_as<T>(value, field);
  }

  nlohmann::json json_;
};

// The whole payload as T through nlohmann's from_json(const json&, T&).
template <class T>
T payload_as(const Task& task) {
  return detail::json_as<T>(JsonPayload(task).json(), "payload");
}

}  // namespace wk
