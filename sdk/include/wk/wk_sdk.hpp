// wk_sdk.hpp: the header-only C++17 layer over wk_abi.h. It is compiled into the plugin only;
// nothing C++ crosses the boundary.
//
// What it gives a plugin author:
//   - string_view access to everything the host lends (valid during the call, rule O1);
//   - RAII owners for host handles (Rows, Transaction; rule O2);
//   - exceptions inside the plugin, translated into a disposition at every trampoline: no
//     exception ever reaches the host;
//   - WK_PLUGIN_BEGIN / WK_HANDLER / WK_HANDLER_OPT / WK_PLUGIN_END, which expand to a
//     constant-initialised, internal-linkage handler table and the single exported getter
//     wk_plugin_entry_v1.
//
// Rules this header keeps so that plugins unload cleanly: every function is inline or a
// template, no inline function or template holds a function-local static, and there are no
// namespace-scope objects with dynamic initialisation (hence no STB_GNU_UNIQUE symbols and no
// static constructors).
#pragma once

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "wk_abi.h"

#define WK_SDK_VERSION_STRING "wk-sdk-cpp 1.1"
#ifndef WK_SDK_BUILD_INFO
#if defined(__clang__)
#define WK_SDK_BUILD_INFO WK_SDK_VERSION_STRING " / clang " __clang_version__
#elif defined(__GNUC__)
#define WK_SDK_BUILD_INFO WK_SDK_VERSION_STRING " / gcc " __VERSION__
#else
#define WK_SDK_BUILD_INFO WK_SDK_VERSION_STRING
#endif
#endif

namespace wk {

// ------------------------------------------------------------------------------------------------
// Views.

inline std::string_view view(wk_str s) noexcept {
  return s.len != 0 ? std::string_view{s.ptr, s.len} : std::string_view{};
}
inline std::string_view view(wk_bytes b) noexcept {
  return b.len != 0 ? std::string_view{reinterpret_cast<const char*>(b.ptr), b.len} : std::string_view{};
}
inline wk_str str(std::string_view s) noexcept { return wk_str{s.data(), s.size()}; }
inline wk_bytes bytes(std::string_view s) noexcept {
  return wk_bytes{reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// ------------------------------------------------------------------------------------------------
// Exceptions. Throw them anywhere inside a handler or the plugin constructor; the trampolines
// turn them into a disposition (handlers) or a wk_status (init).

// A host call failed. WK_E_CANCELLED becomes WK_DISP_CANCELLED, everything else a retry with the
// default backoff (WK_E_UNAVAILABLE is the typical transient case).
class HostError : public std::runtime_error {
 public:
  HostError(wk_status status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  wk_status status() const noexcept { return status_; }
  // Machine-readable code: a SQLSTATE for WK_E_DB, otherwise the host's code or the call name.
  const std::string& code() const noexcept { return code_; }

 private:
  wk_status status_;
  std::string code_;
};

// Transient failure with a known earliest retry time -> WK_DISP_RETRY_AFTER. The code
// "rate_limited" says the service the handler calls is throttling (an HTTP 429): the host then
// pauses the task type on every worker for `after` and counts no attempt.
class RetryLater : public std::runtime_error {
 public:
  RetryLater(std::chrono::milliseconds after, const std::string& message, std::string code = "retry_later")
      : std::runtime_error(message), after_(after), code_(std::move(code)) {}
  std::chrono::milliseconds after() const noexcept { return after_; }
  const std::string& code() const noexcept { return code_; }

 private:
  std::chrono::milliseconds after_;
  std::string code_;
};

// Retrying cannot help (bad payload, missing row) -> WK_DISP_FAIL_NO_RETRY, asynq SkipRetry.
class Permanent : public std::runtime_error {
 public:
  Permanent(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const noexcept { return code_; }

 private:
  std::string code_;
};

// The handler acknowledges cancellation -> WK_DISP_CANCELLED.
class Cancelled : public std::runtime_error {
 public:
  explicit Cancelled(std::int32_t reason = WK_CANCEL_REQUESTED)
      : std::runtime_error("task cancelled"), reason_(reason) {}
  std::int32_t reason() const noexcept { return reason_; }

 private:
  std::int32_t reason_;
};

namespace detail {

// Copies `src` into a fixed buffer, truncating, always NUL-terminated (rule O5).
inline void copy_text(char* dst, std::size_t capacity, std::string_view src) noexcept {
  if (dst == nullptr || capacity == 0) return;
  const std::size_t n = src.size() < capacity - 1 ? src.size() : capacity - 1;
  if (n != 0) std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

inline std::string_view c_text(const char* s, std::size_t capacity) noexcept {
  const void* nul = std::memchr(s, '\0', capacity);
  return std::string_view(
      s, nul != nullptr ? static_cast<std::size_t>(static_cast<const char*>(nul) - s) : capacity);
}

inline wk_error make_error() noexcept {
  wk_error e;
  std::memset(&e, 0, sizeof e);
  e.struct_size = static_cast<std::uint32_t>(sizeof e);
  return e;
}

// Turns a failed host call into a HostError carrying the host's code and message.
[[noreturn]] inline void throw_host(wk_status status, const wk_error& err, std::string_view call) {
  std::string_view code = c_text(err.code, sizeof err.code);
  std::string_view message = c_text(err.message, sizeof err.message);
  if (code.empty()) code = call;
  std::string text(call);
  text += " failed (status ";
  text += std::to_string(status);
  text += ")";
  if (!message.empty()) {
    text += ": ";
    text += message;
  }
  throw HostError(status, std::string(code), text);
}

inline void check(wk_status status, const wk_error& err, std::string_view call) {
  if (status != WK_OK) throw_host(status, err, call);
}

template <class Fn>
[[noreturn]] Fn missing_host_function(const char* name) {
  throw HostError(WK_E_UNSUPPORTED, "host.unsupported", std::string("the host does not provide ") + name);
}

}  // namespace detail

// Resolves a host function, throwing HostError(WK_E_UNSUPPORTED) when the running host is too old
// to have it (its table is shorter) or left it NULL.
#define WK_SDK_HOST_FN(api, fn)                  \
  (WK_HAS_FN(wk_host_api, (api), fn) ? (api)->fn \
                                     : ::wk::detail::missing_host_function<decltype((api)->fn)>(#fn))

// ------------------------------------------------------------------------------------------------
// PostgreSQL.

// Type OIDs the typed getters understand in binary results.
namespace pg_oid {
constexpr std::uint32_t kBool = 16;
constexpr std::uint32_t kBytea = 17;
constexpr std::uint32_t kInt8 = 20;
constexpr std::uint32_t kInt2 = 21;
constexpr std::uint32_t kInt4 = 23;
constexpr std::uint32_t kText = 25;
constexpr std::uint32_t kFloat4 = 700;
constexpr std::uint32_t kFloat8 = 701;
}  // namespace pg_oid

// One query parameter. The value either points at caller data (text, binary: keep it alive for
// the call) or lives inside the Param (numbers, booleans), so Params may be copied freely.
class Param {
 public:
  static Param text(std::string_view s, std::uint32_t type_oid = 0) noexcept {
    Param p;
    p.oid_ = type_oid;
    p.external_ = reinterpret_cast<const std::uint8_t*>(s.data());
    p.size_ = s.size();
    return p;
  }
  static Param binary(const void* data, std::size_t size, std::uint32_t type_oid) noexcept {
    Param p;
    p.oid_ = type_oid;
    p.format_ = 1;
    p.external_ = static_cast<const std::uint8_t*>(data);
    p.size_ = size;
    return p;
  }
  // bytea, sent in binary format: no escaping needed.
  static Param bytes(const void* data, std::size_t size) noexcept {
    return binary(data, size, pg_oid::kBytea);
  }
  static Param bytes(std::string_view data) noexcept { return bytes(data.data(), data.size()); }
  static Param null(std::uint32_t type_oid = 0) noexcept {
    Param p;
    p.oid_ = type_oid;
    p.null_ = true;
    return p;
  }
  static Param int64(std::int64_t v) noexcept {
    Param p;
    p.oid_ = pg_oid::kInt8;
    p.format_inline(std::to_chars(p.inline_.data(), p.inline_.data() + p.inline_.size(), v));
    return p;
  }
  static Param float64(double v) noexcept {
    Param p;
    p.oid_ = pg_oid::kFloat8;
    p.format_inline(std::to_chars(p.inline_.data(), p.inline_.data() + p.inline_.size(), v));
    return p;
  }
  static Param boolean(bool v) noexcept {
    Param p;
    p.oid_ = pg_oid::kBool;
    p.inline_[0] = v ? 't' : 'f';
    p.inline_size_ = 1;
    p.uses_inline_ = true;
    return p;
  }

  // The C view; it points into *this for inline values, so use it while *this is alive.
  wk_pg_param to_c() const noexcept {
    wk_pg_param c;
    std::memset(&c, 0, sizeof c);
    c.type_oid = oid_;
    c.format = format_;
    c.is_null = null_ ? 1 : 0;
    if (uses_inline_) {
      c.value = wk_bytes{reinterpret_cast<const std::uint8_t*>(inline_.data()), inline_size_};
    } else {
      c.value = wk_bytes{external_, size_};
    }
    return c;
  }

 private:
  void format_inline(std::to_chars_result r) noexcept {
    // 32 characters hold any int64 and the shortest round-trip form of any double.
    inline_size_ = r.ec == std::errc() ? static_cast<std::size_t>(r.ptr - inline_.data()) : 0;
    uses_inline_ = true;
  }

  std::uint32_t oid_ = 0;
  std::int32_t format_ = 0;
  bool null_ = false;
  bool uses_inline_ = false;
  const std::uint8_t* external_ = nullptr;
  std::size_t size_ = 0;
  std::array<char, 32> inline_{};
  std::size_t inline_size_ = 0;
};

// Query flags.
constexpr std::uint32_t kBinaryResults = WK_PG_BINARY_RESULTS;

// Move-only owner of a query result. Values are borrowed views that live as long as the Rows.
// Typed getters return std::nullopt for SQL NULL and throw HostError(WK_E_INVALID) for a value
// that does not parse as the asked type. They understand text results and, for the common
// types, binary results (kBinaryResults).
class Rows {
 public:
  Rows() noexcept = default;
  Rows(const wk_host_api* api, wk_pg_rows* handle, bool binary) noexcept
      : api_(api), handle_(handle), binary_(binary) {}
  Rows(Rows&& other) noexcept
      : api_(other.api_), handle_(std::exchange(other.handle_, nullptr)), binary_(other.binary_) {}
  Rows& operator=(Rows&& other) noexcept {
    if (this != &other) {
      reset();
      api_ = other.api_;
      handle_ = std::exchange(other.handle_, nullptr);
      binary_ = other.binary_;
    }
    return *this;
  }
  Rows(const Rows&) = delete;
  Rows& operator=(const Rows&) = delete;
  ~Rows() { reset(); }

  std::size_t size() const noexcept { return handle_ != nullptr ? api_->pg_row_count(handle_) : 0; }
  bool empty() const noexcept { return size() == 0; }
  std::size_t columns() const noexcept { return handle_ != nullptr ? api_->pg_column_count(handle_) : 0; }
  std::string_view column_name(std::size_t col) const noexcept {
    return handle_ != nullptr ? view(api_->pg_column_name(handle_, col)) : std::string_view{};
  }
  std::uint32_t column_type(std::size_t col) const noexcept {
    return handle_ != nullptr ? api_->pg_column_type(handle_, col) : 0;
  }
  std::optional<std::size_t> column_index(std::string_view name) const noexcept {
    const std::size_t n = columns();
    for (std::size_t c = 0; c < n; ++c) {
      if (column_name(c) == name) return c;
    }
    return std::nullopt;
  }
  // INSERT/UPDATE/DELETE: rows touched.
  std::uint64_t rows_affected() const noexcept {
    return handle_ != nullptr ? api_->pg_rows_affected(handle_) : 0;
  }

  bool is_null(std::size_t row, std::size_t col) const { return !raw(row, col).has_value(); }

  // The value as the server sent it (text format, or raw bytes with kBinaryResults).
  std::optional<std::string_view> text(std::size_t row, std::size_t col) const { return raw(row, col); }

  std::optional<std::int64_t> int64(std::size_t row, std::size_t col) const {
    auto v = raw(row, col);
    if (!v) return std::nullopt;
    if (binary_) {
      switch (v->size()) {
        case 2:
          return static_cast<std::int16_t>(big_endian(*v));
        case 4:
          return static_cast<std::int32_t>(big_endian(*v));
        case 8:
          return static_cast<std::int64_t>(big_endian(*v));
        default:
          bad_value(row, col, "int64");
      }
    }
    std::int64_t out = 0;
    auto r = std::from_chars(v->data(), v->data() + v->size(), out);
    if (r.ec != std::errc() || r.ptr != v->data() + v->size()) bad_value(row, col, "int64");
    return out;
  }

  std::optional<double> float64(std::size_t row, std::size_t col) const {
    auto v = raw(row, col);
    if (!v) return std::nullopt;
    if (binary_) {
      if (v->size() == 8) {
        const std::uint64_t bits = big_endian(*v);
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return d;
      }
      if (v->size() == 4) {
        const auto bits = static_cast<std::uint32_t>(big_endian(*v));
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return static_cast<double>(f);
      }
      bad_value(row, col, "float64");
    }
    // PostgreSQL spells the specials "NaN", "Infinity", "-Infinity"; from_chars accepts them.
    double out = 0;
    auto r = std::from_chars(v->data(), v->data() + v->size(), out);
    if (r.ec != std::errc() || r.ptr != v->data() + v->size()) bad_value(row, col, "float64");
    return out;
  }

  std::optional<bool> boolean(std::size_t row, std::size_t col) const {
    auto v = raw(row, col);
    if (!v) return std::nullopt;
    if (binary_) {
      if (v->size() != 1) bad_value(row, col, "bool");
      return (*v)[0] != 0;
    }
    if (*v == "t" || *v == "true") return true;
    if (*v == "f" || *v == "false") return false;
    bad_value(row, col, "bool");
  }

  // bytea. Text results arrive in PostgreSQL's hex output ("\x0a1b..."), or in the legacy
  // escape format when bytea_output = escape; both are decoded.
  std::optional<std::string> bytes(std::size_t row, std::size_t col) const {
    auto v = raw(row, col);
    if (!v) return std::nullopt;
    if (binary_) return std::string(*v);
    std::string out;
    if (v->size() >= 2 && (*v)[0] == '\\' && (*v)[1] == 'x') {
      const std::string_view hex = v->substr(2);
      if (hex.size() % 2 != 0) bad_value(row, col, "bytea");
      out.reserve(hex.size() / 2);
      for (std::size_t i = 0; i < hex.size(); i += 2) {
        const int hi = hex_digit(hex[i]);
        const int lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0) bad_value(row, col, "bytea");
        out.push_back(static_cast<char>(hi * 16 + lo));
      }
      return out;
    }
    out.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i) {
      const char c = (*v)[i];
      if (c != '\\') {
        out.push_back(c);
      } else if (i + 1 < v->size() && (*v)[i + 1] == '\\') {
        out.push_back('\\');
        ++i;
      } else if (i + 3 < v->size() && is_octal((*v)[i + 1]) && is_octal((*v)[i + 2]) &&
                 is_octal((*v)[i + 3])) {
        out.push_back(
            static_cast<char>(((*v)[i + 1] - '0') * 64 + ((*v)[i + 2] - '0') * 8 + ((*v)[i + 3] - '0')));
        i += 3;
      } else {
        bad_value(row, col, "bytea");
      }
    }
    return out;
  }

  // The underlying handle, for code that calls the C API directly.
  const wk_pg_rows* handle() const noexcept { return handle_; }

 private:
  std::optional<std::string_view> raw(std::size_t row, std::size_t col) const {
    if (handle_ == nullptr) throw HostError(WK_E_INVALID, "pg.no_result", "no result set");
    wk_bytes b{nullptr, 0};
    std::int32_t is_null = 0;
    const wk_status s = api_->pg_value(handle_, row, col, &b, &is_null);
    if (s != WK_OK) {
      throw HostError(s, "pg.value",
                      "no value at row " + std::to_string(row) + ", column " + std::to_string(col));
    }
    if (is_null != 0) return std::nullopt;
    return view(b);
  }
  [[noreturn]] void bad_value(std::size_t row, std::size_t col, const char* type) const {
    throw HostError(WK_E_INVALID, "pg.decode",
                    "value at row " + std::to_string(row) + ", column " + std::to_string(col) + " (" +
                        std::string(column_name(col)) + ") is not a valid " + type);
  }
  static std::uint64_t big_endian(std::string_view v) noexcept {
    std::uint64_t x = 0;
    for (char c : v) x = (x << 8) | static_cast<std::uint8_t>(c);
    return x;
  }
  static int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static bool is_octal(char c) noexcept { return c >= '0' && c <= '7'; }
  void reset() noexcept {
    if (handle_ != nullptr) api_->pg_rows_free(handle_);
    handle_ = nullptr;
  }

  const wk_host_api* api_ = nullptr;
  wk_pg_rows* handle_ = nullptr;
  bool binary_ = false;
};

namespace detail {

// Parameters converted to the C layout on the stack for the common case.
class CParams {
 public:
  CParams(const Param* params, std::size_t count) : count_(count) {
    wk_pg_param* out = small_.data();
    if (count > small_.size()) {
      large_.resize(count);
      out = large_.data();
    }
    for (std::size_t i = 0; i < count; ++i) out[i] = params[i].to_c();
    data_ = out;
  }
  CParams(const CParams&) = delete;
  CParams& operator=(const CParams&) = delete;
  const wk_pg_param* data() const noexcept { return count_ != 0 ? data_ : nullptr; }
  std::size_t size() const noexcept { return count_; }

 private:
  std::size_t count_;
  std::array<wk_pg_param, 16> small_{};
  std::vector<wk_pg_param> large_;
  const wk_pg_param* data_ = nullptr;
};

}  // namespace detail

// An open transaction: one pooled connection held until commit or rollback. Rolled back by the
// destructor unless committed, so an exception anywhere in the handler undoes its writes.
class Transaction {
 public:
  Transaction() noexcept = default;
  Transaction(const wk_host_api* api, wk_pg_tx* tx) noexcept : api_(api), tx_(tx) {}
  Transaction(Transaction&& other) noexcept : api_(other.api_), tx_(std::exchange(other.tx_, nullptr)) {}
  Transaction& operator=(Transaction&& other) noexcept {
    if (this != &other) {
      rollback();
      api_ = other.api_;
      tx_ = std::exchange(other.tx_, nullptr);
    }
    return *this;
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() { rollback(); }

  bool open() const noexcept { return tx_ != nullptr; }

  Rows query(std::string_view sql, std::initializer_list<Param> params = {}, std::uint32_t flags = 0) const {
    return query(sql, params.begin(), params.size(), flags);
  }
  Rows query(std::string_view sql, const std::vector<Param>& params, std::uint32_t flags = 0) const {
    return query(sql, params.data(), params.size(), flags);
  }

  // Effectively-once: true the first time `key` is recorded; false when a committed transaction
  // already recorded it (then roll back and report success).
  bool once(std::string_view key) const {
    require_open("pg_tx_once");
    wk_error err = detail::make_error();
    std::int32_t first = 0;
    detail::check(WK_SDK_HOST_FN(api_, pg_tx_once)(tx_, str(key), &first, &err), err, "pg_tx_once");
    return first != 0;
  }

  void commit() {
    require_open("pg_commit");
    wk_error err = detail::make_error();
    // The host releases the handle whatever the outcome.
    const wk_status s = WK_SDK_HOST_FN(api_, pg_commit)(std::exchange(tx_, nullptr), &err);
    detail::check(s, err, "pg_commit");
  }

  void rollback() noexcept {
    if (tx_ != nullptr && api_ != nullptr && api_->pg_rollback != nullptr) api_->pg_rollback(tx_);
    tx_ = nullptr;
  }

 private:
  Rows query(std::string_view sql, const Param* params, std::size_t count, std::uint32_t flags) const {
    require_open("pg_tx_query");
    detail::CParams c(params, count);
    wk_error err = detail::make_error();
    wk_pg_rows* rows = nullptr;
    const wk_status s = WK_SDK_HOST_FN(api_, pg_tx_query)(tx_, str(sql), c.data(), c.size(),
                                                          sizeof(wk_pg_param), flags, &rows, &err);
    Rows owner(api_, rows, (flags & WK_PG_BINARY_RESULTS) != 0);
    detail::check(s, err, "pg_tx_query");
    return owner;
  }
  void require_open(const char* call) const {
    if (tx_ == nullptr)
      throw HostError(WK_E_INVALID, "pg.tx_closed", std::string(call) + ": transaction is closed");
  }

  const wk_host_api* api_ = nullptr;
  wk_pg_tx* tx_ = nullptr;
};

// A versioned migration for Context::migrate; strings are borrowed for the call.
struct Migration {
  std::int64_t version = 0;
  std::string_view name;
  std::string_view sql;
};

// ------------------------------------------------------------------------------------------------
// Logging.

// One structured log field. Numbers and booleans are formatted into the field itself.
class Field {
 public:
  Field(std::string_view key, std::string_view value) noexcept : key_(key), value_(value) {}
  Field(std::string_view key, const char* value) noexcept
      : key_(key), value_(value != nullptr ? std::string_view(value) : std::string_view()) {}
  Field(std::string_view key, const std::string& value) noexcept : key_(key), value_(value) {}
  Field(std::string_view key, bool value) noexcept : key_(key), value_(value ? "true" : "false") {}
  template <class T,
            std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>,
                             int> = 0>
  Field(std::string_view key, T value) noexcept : key_(key), uses_inline_(true) {
    auto r = std::to_chars(inline_.data(), inline_.data() + inline_.size(), value);
    inline_size_ = r.ec == std::errc() ? static_cast<std::size_t>(r.ptr - inline_.data()) : 0;
  }

  wk_kv to_c() const noexcept {
    return wk_kv{str(key_), uses_inline_ ? wk_str{inline_.data(), inline_size_} : str(value_)};
  }

 private:
  std::string_view key_;
  std::string_view value_;
  bool uses_inline_ = false;
  std::array<char, 32> inline_{};
  std::size_t inline_size_ = 0;
};

enum class Level : std::int32_t {
  trace = WK_LOG_TRACE,
  debug = WK_LOG_DEBUG,
  info = WK_LOG_INFO,
  warn = WK_LOG_WARN,
  error = WK_LOG_ERROR,
};

// ------------------------------------------------------------------------------------------------
// Follow-up tasks.

// The queue of the machine whose workers have WORKER_HOST_ID `host_id` (docs/operations.md,
// "Several machines"): to send a step to the machine that holds its files.
inline std::string host_queue(std::string_view host_id) {
  return WK_HOST_QUEUE_PREFIX + std::string(host_id);
}
inline bool is_host_queue(std::string_view queue) {
  return queue.substr(0, sizeof(WK_HOST_QUEUE_PREFIX) - 1) == WK_HOST_QUEUE_PREFIX;
}

// Builder for Context::enqueue; each setter maps onto one asynq option. It owns its strings, so
// it may outlive the values it was built from.
class EnqueueOptions {
 public:
  EnqueueOptions& queue(std::string_view name) {
    queue_ = name;
    return *this;
  }
  // asynq ProcessIn: a delay from now.
  EnqueueOptions& process_in(std::chrono::milliseconds delay) {
    process_in_ms_ = delay.count();
    return *this;
  }
  // asynq ProcessAt: an absolute time.
  EnqueueOptions& process_at(std::chrono::system_clock::time_point at) {
    process_at_ms_ = unix_ms(at);
    return *this;
  }
  EnqueueOptions& max_retry(std::int32_t n) {
    max_retry_ = n;
    return *this;
  }
  EnqueueOptions& timeout(std::chrono::milliseconds t) {
    timeout_ms_ = t.count();
    return *this;
  }
  EnqueueOptions& deadline(std::chrono::system_clock::time_point at) {
    deadline_ms_ = unix_ms(at);
    return *this;
  }
  // asynq Unique(ttl): refused while an identical task (type, queue, payload) is pending. >= 1 s.
  EnqueueOptions& unique(std::chrono::milliseconds ttl) {
    unique_ttl_ms_ = ttl.count();
    return *this;
  }
  // asynq TaskID: a fixed id makes the follow-up idempotent (a second enqueue is a conflict).
  EnqueueOptions& task_id(std::string_view id) {
    task_id_ = id;
    return *this;
  }
  // asynq Retention: keep the completed task this long.
  EnqueueOptions& retention(std::chrono::milliseconds keep) {
    retention_ms_ = keep.count();
    return *this;
  }
  EnqueueOptions& header(std::string_view key, std::string_view value) {
    headers_.emplace_back(std::string(key), std::string(value));
    return *this;
  }
  // Publish now, instead of only when the current task succeeds.
  EnqueueOptions& immediate(bool on = true) {
    immediate_ = on;
    return *this;
  }
  // To this machine's queue (host:<WORKER_HOST_ID>) instead of queue(): for a step that needs
  // files only this machine has, such as a worktree. Needs a 1.1 host (HostError otherwise).
  EnqueueOptions& on_this_host(bool on = true) {
    on_this_host_ = on;
    return *this;
  }
  bool wants_this_host() const noexcept { return on_this_host_; }

  // The C request; it borrows from *this, `type`, `payload` and `kv_storage`.
  wk_enqueue_req to_c(std::string_view type, std::string_view payload, std::vector<wk_kv>& kv_storage) const {
    kv_storage.clear();
    kv_storage.reserve(headers_.size());
    for (const auto& h : headers_) kv_storage.push_back(wk_kv{str(h.first), str(h.second)});
    wk_enqueue_req r;
    std::memset(&r, 0, sizeof r);
    r.struct_size = static_cast<std::uint32_t>(sizeof r);
    r.flags = (immediate_ ? WK_ENQ_IMMEDIATE : 0u) | (max_retry_ ? WK_ENQ_HAS_MAX_RETRY : 0u) |
              (on_this_host_ ? WK_ENQ_ON_THIS_HOST : 0u);
    r.type = str(type);
    r.queue = str(queue_);
    r.payload = bytes(payload);
    r.task_id = str(task_id_);
    r.headers = kv_storage.empty() ? nullptr : kv_storage.data();
    r.header_count = kv_storage.size();
    r.process_at_ms = process_at_ms_;
    r.process_in_ms = process_in_ms_;
    r.max_retry = max_retry_.value_or(0);
    r.timeout_ms = timeout_ms_;
    r.deadline_ms = deadline_ms_;
    r.unique_ttl_ms = unique_ttl_ms_;
    r.retention_ms = retention_ms_;
    return r;
  }

 private:
  static std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  }

  std::string queue_;
  std::string task_id_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::int64_t process_at_ms_ = 0;
  std::int64_t process_in_ms_ = 0;
  std::optional<std::int32_t> max_retry_;
  std::int64_t timeout_ms_ = 0;
  std::int64_t deadline_ms_ = 0;
  std::int64_t unique_ttl_ms_ = 0;
  std::int64_t retention_ms_ = 0;
  bool immediate_ = false;
  bool on_this_host_ = false;
};

// ------------------------------------------------------------------------------------------------
// Contexts.

// Host services usable both in the plugin constructor (plugin ctx, valid until shutdown) and in
// a handler (task ctx, valid until the handler returns). Cheap to copy: two pointers.
class Context {
 public:
  Context(const wk_host_api* api, wk_ctx* ctx) noexcept : api_(api), ctx_(ctx) {}

  const wk_host_api* api() const noexcept { return api_; }
  wk_ctx* handle() const noexcept { return ctx_; }

  bool log_enabled(Level level) const noexcept {
    return api_->log_enabled == nullptr || api_->log_enabled(ctx_, static_cast<std::int32_t>(level)) != 0;
  }
  // Never throws: logging must not turn into a task failure. At most 32 fields are sent.
  void log(Level level, std::string_view message, std::initializer_list<Field> fields = {}) const noexcept {
    if (api_->log == nullptr || !log_enabled(level)) return;
    std::array<wk_kv, 32> kv;
    std::size_t n = 0;
    for (const Field& f : fields) {
      if (n == kv.size()) break;
      kv[n++] = f.to_c();
    }
    api_->log(ctx_, static_cast<std::int32_t>(level), str(message), n != 0 ? kv.data() : nullptr, n);
  }
  void trace(std::string_view m, std::initializer_list<Field> f = {}) const noexcept {
    log(Level::trace, m, f);
  }
  void debug(std::string_view m, std::initializer_list<Field> f = {}) const noexcept {
    log(Level::debug, m, f);
  }
  void info(std::string_view m, std::initializer_list<Field> f = {}) const noexcept {
    log(Level::info, m, f);
  }
  void warn(std::string_view m, std::initializer_list<Field> f = {}) const noexcept {
    log(Level::warn, m, f);
  }
  void error(std::string_view m, std::initializer_list<Field> f = {}) const noexcept {
    log(Level::error, m, f);
  }

  // A configuration variable (environment / .env snapshot), valid until the plugin shuts down.
  std::optional<std::string_view> config(std::string_view key) const {
    wk_str out{nullptr, 0};
    const wk_status s = WK_SDK_HOST_FN(api_, config_get)(ctx_, str(key), &out);
    if (s == WK_E_NOT_FOUND) return std::nullopt;
    if (s != WK_OK) {
      throw HostError(s, "config_get", "config_get(" + std::string(key) + ") failed");
    }
    return view(out);
  }
  std::string_view config_or(std::string_view key, std::string_view fallback) const {
    return config(key).value_or(fallback);
  }

  // One statement in autocommit on a pooled connection.
  Rows query(std::string_view sql, std::initializer_list<Param> params = {}, std::uint32_t flags = 0) const {
    return query(sql, params.begin(), params.size(), flags);
  }
  Rows query(std::string_view sql, const std::vector<Param>& params, std::uint32_t flags = 0) const {
    return query(sql, params.data(), params.size(), flags);
  }

  Transaction begin() const {
    wk_error err = detail::make_error();
    wk_pg_tx* tx = nullptr;
    const wk_status s = WK_SDK_HOST_FN(api_, pg_begin)(ctx_, &tx, &err);
    Transaction owner(api_, tx);
    detail::check(s, err, "pg_begin");
    return owner;
  }

  // Plugin ctx only (the plugin constructor): applies each version once per database.
  void migrate(std::initializer_list<Migration> migrations) const {
    std::vector<wk_migration> c;
    c.reserve(migrations.size());
    for (const Migration& m : migrations) {
      wk_migration w;
      std::memset(&w, 0, sizeof w);
      w.struct_size = static_cast<std::uint32_t>(sizeof w);
      w.version = m.version;
      w.name = str(m.name);
      w.sql = str(m.sql);
      c.push_back(w);
    }
    wk_error err = detail::make_error();
    const wk_status s = WK_SDK_HOST_FN(api_, pg_migrate)(ctx_, c.empty() ? nullptr : c.data(), c.size(),
                                                         sizeof(wk_migration), &err);
    detail::check(s, err, "pg_migrate");
  }

  // Enqueues a follow-up; returns its task id. Staged until this task succeeds unless
  // options.immediate().
  std::string enqueue(std::string_view type, std::string_view payload,
                      const EnqueueOptions& options = EnqueueOptions()) const {
    if (options.wants_this_host() && api_->abi_minor < 1) {
      // A 1.0 host would ignore the flag and enqueue to any machine.
      throw HostError(WK_E_UNSUPPORTED, "enqueue", "enqueue on this host needs a host of ABI 1.1 or later");
    }
    std::vector<wk_kv> kv;
    const wk_enqueue_req req = options.to_c(type, payload, kv);
    wk_task_id id;
    std::memset(&id, 0, sizeof id);
    wk_error err = detail::make_error();
    detail::check(WK_SDK_HOST_FN(api_, enqueue)(ctx_, &req, &id, &err), err, "enqueue");
    return std::string(detail::c_text(id.text, sizeof id.text));
  }

  // A host capability table by id ("wk.something/1"), or nullptr.
  template <class T>
  const T* extension(const char* id) const noexcept {
    if (api_->get_extension == nullptr) return nullptr;
    return static_cast<const T*>(api_->get_extension(ctx_, id));
  }

 private:
  Rows query(std::string_view sql, const Param* params, std::size_t count, std::uint32_t flags) const {
    detail::CParams c(params, count);
    wk_error err = detail::make_error();
    wk_pg_rows* rows = nullptr;
    const wk_status s = WK_SDK_HOST_FN(api_, pg_query)(ctx_, str(sql), c.data(), c.size(),
                                                       sizeof(wk_pg_param), flags, &rows, &err);
    Rows owner(api_, rows, (flags & WK_PG_BINARY_RESULTS) != 0);
    detail::check(s, err, "pg_query");
    return owner;
  }

 protected:
  const wk_host_api* api_;
  wk_ctx* ctx_;
};

// The services of one running task.
class TaskContext : public Context {
 public:
  using Context::Context;

  // WK_CANCEL_* (WK_CANCEL_NONE while the task may go on). Lock-free.
  std::int32_t reason() const noexcept {
    return api_->is_cancelled != nullptr ? api_->is_cancelled(ctx_) : WK_CANCEL_NONE;
  }
  bool cancelled() const noexcept { return reason() != WK_CANCEL_NONE; }
  void throw_if_cancelled() const {
    const std::int32_t r = reason();
    if (r != WK_CANCEL_NONE) throw Cancelled(r);
  }
  // Sleeps until cancelled or `timeout` passes; the WK_CANCEL_* reason, NONE on timeout. Use it
  // instead of sleeping, so that a backoff inside a handler wakes up on cancellation.
  std::int32_t wait_cancelled(std::chrono::milliseconds timeout) const {
    return WK_SDK_HOST_FN(api_, wait_cancelled)(ctx_, timeout.count());
  }
  // Time left until the task's deadline (a very large value when there is none).
  std::chrono::milliseconds remaining() const {
    return std::chrono::milliseconds(WK_SDK_HOST_FN(api_, remaining_ms)(ctx_));
  }
  // Reports liveness and progress; throws Cancelled when cancellation is pending.
  void heartbeat(std::uint64_t done = 0, std::uint64_t total = 0, std::string_view note = {}) const {
    wk_progress p;
    std::memset(&p, 0, sizeof p);
    p.struct_size = static_cast<std::uint32_t>(sizeof p);
    p.done = done;
    p.total = total;
    p.note = str(note);
    const wk_status s = WK_SDK_HOST_FN(api_, heartbeat)(ctx_, &p);
    if (s == WK_E_CANCELLED) throw Cancelled(reason());
    if (s != WK_OK) throw HostError(s, "heartbeat", "heartbeat failed");
  }
  // Sets asynq's `result` for this task (copied; replaces a previous result).
  void write_result(std::string_view data) const {
    const wk_status s = WK_SDK_HOST_FN(api_, result_write)(ctx_, bytes(data), 0);
    if (s != WK_OK) throw HostError(s, "result_write", "result_write failed");
  }
};

// ------------------------------------------------------------------------------------------------
// The task being handled. Every view is valid until the handler returns (rule O1).

class Headers {
 public:
  Headers() noexcept = default;
  Headers(const wk_kv* kv, std::size_t count) noexcept : kv_(kv), count_(kv != nullptr ? count : 0) {}
  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  std::pair<std::string_view, std::string_view> operator[](std::size_t i) const noexcept {
    return {view(kv_[i].key), view(kv_[i].value)};
  }
  std::optional<std::string_view> get(std::string_view key) const noexcept {
    for (std::size_t i = 0; i < count_; ++i) {
      if (view(kv_[i].key) == key) return view(kv_[i].value);
    }
    return std::nullopt;
  }

 private:
  const wk_kv* kv_ = nullptr;
  std::size_t count_ = 0;
};

struct Task {
  std::string_view id;
  std::string_view type;
  std::string_view queue;
  std::string_view payload;  // bytes, usually JSON
  Headers headers;
  std::uint32_t attempt = 0;  // 1-based: retried + 1
  std::int32_t retried = 0;
  std::int32_t max_retry = 0;
  std::int64_t deadline_ms = 0;  // absolute Unix ms; 0 = none
  std::int64_t started_at_ms = 0;

  std::optional<std::chrono::system_clock::time_point> deadline() const {
    if (deadline_ms == 0) return std::nullopt;
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(deadline_ms));
  }
  // True when this is the last attempt asynq will make.
  bool last_attempt() const noexcept { return retried >= max_retry; }

  // Reads each field only if the host's view has it.
  static Task from(const wk_task_view& v) noexcept {
    Task t;
    const wk_task_view* p = &v;
    if (WK_HAS(wk_task_view, p, attempt)) t.attempt = v.attempt;
    if (WK_HAS(wk_task_view, p, retried)) t.retried = v.retried;
    if (WK_HAS(wk_task_view, p, max_retry)) t.max_retry = v.max_retry;
    if (WK_HAS(wk_task_view, p, id)) t.id = view(v.id);
    if (WK_HAS(wk_task_view, p, type)) t.type = view(v.type);
    if (WK_HAS(wk_task_view, p, queue)) t.queue = view(v.queue);
    if (WK_HAS(wk_task_view, p, payload)) t.payload = view(v.payload);
    if (WK_HAS(wk_task_view, p, header_count)) t.headers = Headers(v.headers, v.header_count);
    if (WK_HAS(wk_task_view, p, deadline_ms)) t.deadline_ms = v.deadline_ms;
    if (WK_HAS(wk_task_view, p, started_at_ms)) t.started_at_ms = v.started_at_ms;
    return t;
  }
};

// ------------------------------------------------------------------------------------------------
// What a handler returns.

class Outcome {
 public:
  static Outcome ok() { return Outcome(WK_DISP_SUCCEEDED); }
  // Retry with asynq's default backoff.
  static Outcome retry(std::string message, std::string code = "retry") {
    return Outcome(WK_DISP_RETRY, std::move(code), std::move(message));
  }
  // Retry not before `after` (the host clamps).
  static Outcome retry_after(std::chrono::milliseconds after, std::string message,
                             std::string code = "retry_after") {
    Outcome o(WK_DISP_RETRY_AFTER, std::move(code), std::move(message));
    o.after_ = after;
    return o;
  }
  // Archive now, no retry (asynq SkipRetry).
  static Outcome fail(std::string code, std::string message) {
    return Outcome(WK_DISP_FAIL_NO_RETRY, std::move(code), std::move(message));
  }
  static Outcome cancelled(std::string message = "task cancelled") {
    return Outcome(WK_DISP_CANCELLED, "cancelled", std::move(message));
  }

  wk_disposition disposition() const noexcept { return disposition_; }
  const std::string& code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  std::chrono::milliseconds after() const noexcept { return after_; }

  // Fills the host's failure record (truncating) and returns the disposition.
  wk_disposition apply(wk_failure* failure) const noexcept;

 private:
  explicit Outcome(wk_disposition d, std::string code = {}, std::string message = {})
      : disposition_(d), code_(std::move(code)), message_(std::move(message)) {}

  wk_disposition disposition_;
  std::string code_;
  std::string message_;
  std::chrono::milliseconds after_{0};
};

// Per-handler options for WK_HANDLER_OPT, usable in constant expressions.
struct HandlerOptions {
  std::uint32_t flags = 0;
  std::uint32_t max_concurrency = 0;
  std::uint32_t timeout_ms = 0;
  const char* description = "";

  constexpr HandlerOptions concurrency(std::uint32_t n) const {
    HandlerOptions o = *this;
    o.max_concurrency = n;
    return o;
  }
  constexpr HandlerOptions timeout(std::uint32_t ms) const {
    HandlerOptions o = *this;
    o.timeout_ms = ms;
    return o;
  }
  constexpr HandlerOptions idempotent() const {
    HandlerOptions o = *this;
    o.flags |= WK_HANDLER_IDEMPOTENT;
    return o;
  }
  constexpr HandlerOptions long_running() const {
    HandlerOptions o = *this;
    o.flags |= WK_HANDLER_LONG_RUNNING;
    return o;
  }
  constexpr HandlerOptions describe(const char* text) const {
    HandlerOptions o = *this;
    o.description = text;
    return o;
  }
};

// Per-plugin options for WK_PLUGIN_BEGIN_OPT.
struct PluginOptions {
  std::uint32_t flags = 0;
  constexpr PluginOptions unload_safe() const {
    PluginOptions o = *this;
    o.flags |= WK_PLUGIN_UNLOAD_SAFE;
    return o;
  }
};

// ------------------------------------------------------------------------------------------------
// Trampolines. Everything below is what the registration macros wire into the C tables.

namespace detail {

inline wk_disposition fill(wk_failure* f, wk_disposition d, std::string_view code, std::string_view message,
                           std::int64_t retry_after_ms = 0) noexcept {
  if (f == nullptr) return d;
  if (WK_HAS(wk_failure, f, retry_after_ms)) f->retry_after_ms = retry_after_ms;
  if (WK_HAS(wk_failure, f, code)) copy_text(f->code, sizeof f->code, code);
  if (WK_HAS(wk_failure, f, message)) copy_text(f->message, sizeof f->message, message);
  return d;
}

inline wk_status report(wk_error* e, wk_status s, std::string_view code, std::string_view message) noexcept {
  if (e != nullptr) {
    if (WK_HAS(wk_error, e, status)) e->status = s;
    if (WK_HAS(wk_error, e, code)) copy_text(e->code, sizeof e->code, code);
    if (WK_HAS(wk_error, e, message)) copy_text(e->message, sizeof e->message, message);
  }
  return s;
}

// Maps a host error escaping a handler: cancellation is acknowledged, everything else is
// retried (a database that is away, a deadline, an SQL error: asynq's retry budget decides).
inline wk_disposition from_host_error(wk_failure* f, const HostError& e) noexcept {
  if (e.status() == WK_E_CANCELLED) return fill(f, WK_DISP_CANCELLED, "cancelled", e.what());
  if (e.status() == WK_E_DEADLINE) return fill(f, WK_DISP_RETRY, "deadline_exceeded", e.what());
  return fill(f, WK_DISP_RETRY, e.code(), e.what());
}

// The size of the 1.0 host table: anything shorter is not a 1.x host.
constexpr std::size_t kHostApiV10Size = offsetof(wk_host_api, result_write) + sizeof(void*);

// What the host holds as wk_plugin_state*: the plugin ctx and the author's object.
template <class C>
class Box {
 public:
  Box(const wk_host_api* api, wk_ctx* ctx) : ctx_(api, ctx), impl_(construct(ctx_)) {}
  const wk_host_api* api() const noexcept { return ctx_.api(); }
  C& impl() noexcept { return impl_; }

 private:
  static C construct(Context& ctx) {
    if constexpr (std::is_constructible_v<C, Context&>) {
      return C(ctx);
    } else {
      static_assert(std::is_default_constructible_v<C>,
                    "the plugin class needs a constructor taking wk::Context& or a default constructor");
      return C();
    }
  }
  Context ctx_;
  C impl_;
};

template <class C>
wk_status WK_CALL init(const wk_host_api* api, wk_ctx* ctx, wk_plugin_state** out, wk_error* err) noexcept {
  if (out == nullptr) return report(err, WK_E_INVALID, "plugin.init", "no state out-pointer");
  *out = nullptr;
  if (api == nullptr || api->abi_major != WK_ABI_MAJOR || api->struct_size < kHostApiV10Size) {
    return report(err, WK_E_UNSUPPORTED, "plugin.abi", "the host does not provide the wk ABI 1.x table");
  }
  try {
    *out = reinterpret_cast<wk_plugin_state*>(new Box<C>(api, ctx));
    return WK_OK;
  } catch (const HostError& e) {
    return report(err, e.status() != WK_OK ? e.status() : WK_E_INTERNAL, e.code(), e.what());
  } catch (const Permanent& e) {
    return report(err, WK_E_INVALID, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return report(err, WK_E_NO_MEMORY, "out_of_memory", "out of memory in the plugin constructor");
  } catch (const std::exception& e) {
    return report(err, WK_E_INTERNAL, "plugin.init", e.what());
  } catch (...) {
    return report(err, WK_E_INTERNAL, "plugin.init", "non-standard exception in the plugin constructor");
  }
}

template <class C>
void WK_CALL shutdown(wk_plugin_state* state) noexcept {
  // A destructor that throws would terminate: that is the author's bug, not a boundary crossing.
  delete reinterpret_cast<Box<C>*>(state);
}

template <class M>
struct method_traits;
template <class C, class R>
struct method_traits<R (C::*)(TaskContext&, const Task&)> {
  using cls = C;
  using result = R;
};
template <class C, class R>
struct method_traits<R (C::*)(TaskContext&, const Task&) const> {
  using cls = C;
  using result = R;
};

template <class C, auto M>
wk_disposition WK_CALL run(wk_plugin_state* state, wk_ctx* ctx, const wk_task_view* task_view,
                           wk_failure* failure) noexcept {
  using Result = typename method_traits<decltype(M)>::result;
  try {
    if (state == nullptr || task_view == nullptr) {
      return fill(failure, WK_DISP_RETRY, "plugin.bad_call", "run() called without state or task");
    }
    auto* box = reinterpret_cast<Box<C>*>(state);
    TaskContext tc(box->api(), ctx);
    const Task task = Task::from(*task_view);
    if constexpr (std::is_void_v<Result>) {
      (box->impl().*M)(tc, task);
      return WK_DISP_SUCCEEDED;
    } else {
      return Outcome((box->impl().*M)(tc, task)).apply(failure);
    }
  } catch (const RetryLater& e) {
    return fill(failure, WK_DISP_RETRY_AFTER, e.code(), e.what(), e.after().count());
  } catch (const Permanent& e) {
    return fill(failure, WK_DISP_FAIL_NO_RETRY, e.code(), e.what());
  } catch (const Cancelled& e) {
    return fill(failure, WK_DISP_CANCELLED, "cancelled", e.what());
  } catch (const HostError& e) {
    return from_host_error(failure, e);
  } catch (const std::bad_alloc&) {
    return fill(failure, WK_DISP_RETRY, "out_of_memory", "out of memory in the handler");
  } catch (const std::exception& e) {
    return fill(failure, WK_DISP_RETRY, "unhandled_exception", e.what());
  } catch (...) {
    return fill(failure, WK_DISP_RETRY, "unhandled_exception", "non-standard exception in the handler");
  }
}

template <class C, auto M>
constexpr wk_handler_desc handler(const char* task_type, HandlerOptions o = HandlerOptions()) {
  using Traits = method_traits<decltype(M)>;
  static_assert(std::is_base_of_v<typename Traits::cls, C>,
                "WK_HANDLER: the method must belong to the class named in WK_PLUGIN_BEGIN");
  static_assert(std::is_void_v<typename Traits::result> || std::is_same_v<typename Traits::result, Outcome>,
                "WK_HANDLER: a handler returns wk::Outcome or void");
  return wk_handler_desc{static_cast<std::uint32_t>(sizeof(wk_handler_desc)),
                         o.flags,
                         task_type,
                         o.description,
                         o.max_concurrency,
                         o.timeout_ms,
                         &run<C, M>,
                         nullptr};
}

template <class C>
constexpr wk_plugin_entry entry(const char* id, const char* version, PluginOptions o,
                                const wk_handler_desc* handlers, std::size_t count) {
  return wk_plugin_entry{WK_ENTRY_MAGIC,
                         static_cast<std::uint32_t>(sizeof(wk_plugin_entry)),
                         WK_ABI_MAJOR,
                         WK_ABI_MINOR,
                         /* min_host_minor: this layer needs nothing newer than 1.0 */ 0,
                         0,
                         o.flags,
                         0,
                         id,
                         version,
                         WK_SDK_BUILD_INFO,
                         handlers,
                         static_cast<std::uint32_t>(count),
                         static_cast<std::uint32_t>(sizeof(wk_handler_desc)),
                         &init<C>,
                         &shutdown<C>,
                         nullptr};
}

}  // namespace detail

inline wk_disposition Outcome::apply(wk_failure* failure) const noexcept {
  if (disposition_ == WK_DISP_SUCCEEDED) return disposition_;
  return detail::fill(failure, disposition_, code_, message_,
                      disposition_ == WK_DISP_RETRY_AFTER ? after_.count() : 0);
}

}  // namespace wk

// ------------------------------------------------------------------------------------------------
// Registration. Use once per plugin, in one .cpp file, at namespace scope:
//
//   WK_PLUGIN_BEGIN(Greeter, "dev.example.hello", "1.0.0")
//     WK_HANDLER("hello:greet", &Greeter::greet)
//     WK_HANDLER_OPT("hello:slow", &Greeter::slow, wk::HandlerOptions().concurrency(1))
//   WK_PLUGIN_END()
//
// The table and the entry are constexpr objects in an anonymous namespace (constant-initialised,
// internal linkage); the only external symbol is the getter.
#define WK_PLUGIN_BEGIN_OPT(Class, Id, Version, Options)      \
  namespace {                                                 \
  using wk_plugin_class_ = Class;                             \
  constexpr const char* wk_plugin_id_ = Id;                   \
  constexpr const char* wk_plugin_version_ = Version;         \
  constexpr ::wk::PluginOptions wk_plugin_options_ = Options; \
  constexpr wk_handler_desc wk_plugin_handlers_[] = {
#define WK_PLUGIN_BEGIN(Class, Id, Version) WK_PLUGIN_BEGIN_OPT(Class, Id, Version, ::wk::PluginOptions())
#define WK_HANDLER(Type, Method) ::wk::detail::handler<wk_plugin_class_, Method>(Type),
#define WK_HANDLER_OPT(Type, Method, Options) ::wk::detail::handler<wk_plugin_class_, Method>(Type, Options),
#define WK_PLUGIN_END()                                                               \
  }                                                                                   \
  ;                                                                                   \
  constexpr wk_plugin_entry wk_plugin_entry_ = ::wk::detail::entry<wk_plugin_class_>( \
      wk_plugin_id_, wk_plugin_version_, wk_plugin_options_, wk_plugin_handlers_,     \
      sizeof(wk_plugin_handlers_) / sizeof(wk_plugin_handlers_[0]));                  \
  }                                                                                   \
  extern "C" WK_EXPORT const wk_plugin_entry* WK_CALL wk_plugin_entry_v1(void);       \
  extern "C" WK_EXPORT const wk_plugin_entry* WK_CALL wk_plugin_entry_v1(void) { return &wk_plugin_entry_; }
