#include "runner/wire.hpp"

#include <cstring>

namespace wk::runner::wire {
namespace {

using task::Clock;

int64_t to_ms(Clock::time_point tp) {
  return tp == Clock::time_point{}
             ? 0
             : std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
}
Clock::time_point from_ms(int64_t ms) {
  return ms == 0
             ? Clock::time_point{}
             : Clock::time_point{std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(ms))};
}

void encode_headers(Writer& w, const task::Headers& headers) {
  w.u64(headers.size());
  for (const auto& [k, v] : headers) {
    w.str(k);
    w.str(v);
  }
}
task::Headers decode_headers(Reader& r) {
  task::Headers out(r.count(16));
  for (auto& [k, v] : out) {
    k = r.str();
    v = r.str();
  }
  return out;
}

// Optional values travel as a presence byte and the value.
template <class T, class Put>
void optional(Writer& w, const std::optional<T>& v, Put put) {
  w.u8(v ? 1 : 0);
  if (v) put(*v);
}

// The copied result: every value is its own std::string, so views stay NUL-terminated as the
// host API promises.
class CopiedResult final : public db::Result {
 public:
  struct Column {
    std::string name;
    uint32_t type = 0;
  };
  std::vector<Column> cols;
  std::vector<std::optional<std::string>> cells;  // row-major
  uint64_t affected = 0;

  size_t rows() const override { return cols.empty() ? 0 : cells.size() / cols.size(); }
  size_t columns() const override { return cols.size(); }
  std::string_view column_name(size_t col) const override {
    return col < cols.size() ? std::string_view(cols[col].name) : std::string_view{};
  }
  uint32_t column_type(size_t col) const override { return col < cols.size() ? cols[col].type : 0; }
  bool is_null(size_t row, size_t col) const override {
    return row >= rows() || col >= cols.size() || !cells[row * cols.size() + col].has_value();
  }
  std::string_view value(size_t row, size_t col) const override {
    if (is_null(row, col)) return {};
    return *cells[row * cols.size() + col];
  }
  uint64_t rows_affected() const override { return affected; }
};

enum class ErrorType : uint8_t { db = 1, invalid_argument = 2, runtime = 3 };

}  // namespace

void append_frame(std::string& out, Kind kind, uint64_t id, std::string_view body) {
  const size_t length = 1 + 8 + body.size();
  if (length > kMaxFrame) throw WireError("frame of " + std::to_string(length) + " bytes is too large");
  const auto len32 = static_cast<uint32_t>(length);
  out.append(reinterpret_cast<const char*>(&len32), 4);
  out.push_back(static_cast<char>(kind));
  out.append(reinterpret_cast<const char*>(&id), 8);
  out.append(body.data(), body.size());
}

std::string frame(Kind kind, uint64_t id, std::string_view body) {
  std::string out;
  out.reserve(4 + 1 + 8 + body.size());
  append_frame(out, kind, id, body);
  return out;
}

void encode(Writer& w, const Hello& v) {
  w.str(v.plugin_file);
  w.str(v.staging_dir);
  w.i32(v.log_level);
  w.i64(v.shutdown_grace_ms);
  w.i64(v.inline_max_us);
  w.u8(static_cast<uint8_t>((v.has_pool ? 1 : 0) | (v.has_enqueuer ? 2 : 0)));
  w.u64(v.config.size());
  for (const auto& [k, value] : v.config) {
    w.str(k);
    w.str(value);
  }
}
Hello decode_hello(Reader& r) {
  Hello v;
  v.plugin_file = r.str();
  v.staging_dir = r.str();
  v.log_level = r.i32();
  v.shutdown_grace_ms = r.i64();
  v.inline_max_us = r.i64();
  const uint8_t services = r.u8();
  v.has_pool = (services & 1) != 0;
  v.has_enqueuer = (services & 2) != 0;
  const size_t n = r.count(16);
  for (size_t i = 0; i < n; ++i) {
    std::string k = r.str();
    v.config[std::move(k)] = r.str();
  }
  return v;
}

void encode(Writer& w, const plugins::PluginInfo& v) {
  w.str(v.file.string());
  w.str(v.sha256);
  w.str(v.plugin_id);
  w.str(v.plugin_version);
  w.str(v.build_info);
  w.u32(v.abi_major);
  w.u32(v.abi_minor);
  w.u32(v.min_host_minor);
  w.u32(v.flags);
  w.u64(v.handlers.size());
  for (const auto& h : v.handlers) {
    w.str(h.task_type);
    w.str(h.description);
    w.u32(h.flags);
    w.u32(h.max_concurrency);
    w.u32(h.default_timeout_ms);
  }
}
plugins::PluginInfo decode_plugin_info(Reader& r) {
  plugins::PluginInfo v;
  v.file = r.str();
  v.sha256 = r.str();
  v.plugin_id = r.str();
  v.plugin_version = r.str();
  v.build_info = r.str();
  v.abi_major = static_cast<uint16_t>(r.u32());
  v.abi_minor = static_cast<uint16_t>(r.u32());
  v.min_host_minor = static_cast<uint16_t>(r.u32());
  v.flags = r.u32();
  v.handlers.resize(r.count(28));
  for (auto& h : v.handlers) {
    h.task_type = r.str();
    h.description = r.str();
    h.flags = r.u32();
    h.max_concurrency = r.u32();
    h.default_timeout_ms = r.u32();
  }
  return v;
}

void encode(Writer& w, const task::Task& v) {
  w.str(v.id);
  w.str(v.type);
  w.str(v.queue);
  w.str(v.payload);
  encode_headers(w, v.headers);
  w.i32(v.retried);
  w.i32(v.max_retry);
  w.i64(to_ms(v.deadline));
  w.i64(to_ms(v.started_at));
}
task::Task decode_task(Reader& r) {
  task::Task v;
  v.id = r.str();
  v.type = r.str();
  v.queue = r.str();
  v.payload = r.str();
  v.headers = decode_headers(r);
  v.retried = r.i32();
  v.max_retry = r.i32();
  v.deadline = from_ms(r.i64());
  v.started_at = from_ms(r.i64());
  return v;
}

void encode(Writer& w, const task::EnqueueRequest& v) {
  w.str(v.type);
  w.str(v.queue);
  w.str(v.payload);
  w.str(v.task_id);
  encode_headers(w, v.headers);
  optional(w, v.process_at, [&](auto tp) {
    w.i64(std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count());
  });
  optional(w, v.max_retry, [&](auto n) { w.i32(n); });
  optional(w, v.timeout, [&](auto d) { w.i64(d.count()); });
  optional(w, v.deadline, [&](auto tp) {
    w.i64(std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count());
  });
  optional(w, v.unique_ttl, [&](auto d) { w.i64(d.count()); });
  optional(w, v.retention, [&](auto d) { w.i64(d.count()); });
}
task::EnqueueRequest decode_enqueue_request(Reader& r) {
  task::EnqueueRequest v;
  v.type = r.str();
  v.queue = r.str();
  v.payload = r.str();
  v.task_id = r.str();
  v.headers = decode_headers(r);
  auto time = [&] {
    return Clock::time_point{std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(r.i64()))};
  };
  if (r.u8() != 0) v.process_at = time();
  if (r.u8() != 0) v.max_retry = r.i32();
  if (r.u8() != 0) v.timeout = std::chrono::seconds(r.i64());
  if (r.u8() != 0) v.deadline = time();
  if (r.u8() != 0) v.unique_ttl = std::chrono::milliseconds(r.i64());
  if (r.u8() != 0) v.retention = std::chrono::seconds(r.i64());
  return v;
}

void encode(Writer& w, const task::Outcome& v) {
  w.u8(static_cast<uint8_t>(v.disposition));
  w.str(v.error);
  w.i64(v.retry_after.count());
  w.str(v.code);
}
task::Outcome decode_outcome(Reader& r) {
  task::Outcome v;
  const uint8_t d = r.u8();
  if (d > static_cast<uint8_t>(task::Disposition::requeue)) throw WireError("unknown disposition");
  v.disposition = static_cast<task::Disposition>(d);
  v.error = r.str();
  v.retry_after = std::chrono::milliseconds(r.i64());
  v.code = r.str();
  return v;
}

void encode(Writer& w, const std::vector<db::Param>& v) {
  w.u64(v.size());
  for (const auto& p : v) {
    w.u8(static_cast<uint8_t>((p.is_null ? 1 : 0) | (p.binary ? 2 : 0)));
    w.u32(p.type_oid);
    w.str(p.value);
  }
}
std::vector<db::Param> decode_params(Reader& r) {
  std::vector<db::Param> out(r.count(13));
  for (auto& p : out) {
    const uint8_t bits = r.u8();
    p.is_null = (bits & 1) != 0;
    p.binary = (bits & 2) != 0;
    p.type_oid = r.u32();
    p.value = r.str();
  }
  return out;
}

void encode(Writer& w, const std::vector<db::Migration>& v) {
  w.u64(v.size());
  for (const auto& m : v) {
    w.i64(m.version);
    w.str(m.name);
    w.str(m.sql);
  }
}
std::vector<db::Migration> decode_migrations(Reader& r) {
  std::vector<db::Migration> out(r.count(24));
  for (auto& m : out) {
    m.version = r.i64();
    m.name = r.str();
    m.sql = r.str();
  }
  return out;
}

void encode_log(Writer& w, log::Level level, std::string_view message, const log::Fields& fields) {
  w.u8(static_cast<uint8_t>(level));
  w.str(message);
  w.u64(fields.size());
  for (const auto& f : fields) {
    w.str(f.key);
    w.str(f.value);
  }
}

void encode(Writer& w, const db::Result& v) {
  const size_t rows = v.rows(), cols = v.columns();
  w.u64(cols);
  for (size_t c = 0; c < cols; ++c) {
    w.str(v.column_name(c));
    w.u32(v.column_type(c));
  }
  w.u64(rows);
  for (size_t row = 0; row < rows; ++row) {
    for (size_t c = 0; c < cols; ++c) {
      const bool null = v.is_null(row, c);
      w.u8(null ? 1 : 0);
      if (!null) w.str(v.value(row, c));
    }
  }
  w.u64(v.rows_affected());
}
std::unique_ptr<db::Result> decode_result(Reader& r) {
  auto out = std::make_unique<CopiedResult>();
  out->cols.resize(r.count(12));
  for (auto& c : out->cols) {
    c.name = r.str();
    c.type = r.u32();
  }
  const size_t rows = r.count(out->cols.size());
  out->cells.reserve(rows * out->cols.size());
  for (size_t i = 0; i < rows * out->cols.size(); ++i) {
    if (r.u8() != 0) {
      out->cells.emplace_back(std::nullopt);
    } else {
      out->cells.emplace_back(r.str());
    }
  }
  out->affected = r.u64();
  return out;
}

void encode_current_exception(Writer& w) {
  try {
    throw;
  } catch (const db::Error& e) {
    w.u8(static_cast<uint8_t>(ErrorType::db));
    w.u8(static_cast<uint8_t>(e.kind()));
    w.str(e.sqlstate());
    w.str(e.what());
  } catch (const std::invalid_argument& e) {  // task::InvalidRequest among them
    w.u8(static_cast<uint8_t>(ErrorType::invalid_argument));
    w.str(e.what());
  } catch (const std::exception& e) {
    w.u8(static_cast<uint8_t>(ErrorType::runtime));
    w.str(e.what());
  } catch (...) {
    w.u8(static_cast<uint8_t>(ErrorType::runtime));
    w.str("unknown error");
  }
}

void rethrow(Reader& r) {
  switch (static_cast<ErrorType>(r.u8())) {
    case ErrorType::db: {
      const uint8_t kind = r.u8();
      if (kind > static_cast<uint8_t>(db::ErrorKind::invalid)) throw WireError("unknown db error kind");
      std::string sqlstate = r.str();
      throw db::Error(static_cast<db::ErrorKind>(kind), std::move(sqlstate), r.str());
    }
    case ErrorType::invalid_argument:
      throw task::InvalidRequest(r.str());
    case ErrorType::runtime:
      throw std::runtime_error(r.str());
  }
  throw WireError("unknown error type in reply");
}

}  // namespace wk::runner::wire
