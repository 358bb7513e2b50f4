// The wk_host_api table: what plugins call. Every function resolves its handle through the
// HandleTable first and enters the context's window, so a stale or wrong-kind handle is refused
// (WK_E_WRONG_CTX or a neutral value) and nothing the context points to can vanish mid-call.
// Nothing here throws across the boundary.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "db/db.hpp"
#include "plugins/context.hpp"

namespace wk::plugins::detail {
namespace {

using std::chrono::milliseconds;

constexpr size_t kPgParamSizeV1_0 = offsetof(wk_pg_param, value) + sizeof(wk_bytes);
constexpr size_t kMigrationSizeV1_0 = offsetof(wk_migration, sql) + sizeof(wk_str);
constexpr size_t kProgressSizeV1_0 = offsetof(wk_progress, note) + sizeof(wk_str);
constexpr size_t kMaxProgressNote = 256;

std::string_view view(wk_str s) {
  return (s.ptr == nullptr || s.len == 0) ? std::string_view{} : std::string_view(s.ptr, s.len);
}
std::string_view view(wk_bytes b) {
  return (b.ptr == nullptr || b.len == 0) ? std::string_view{}
                                          : std::string_view(reinterpret_cast<const char*>(b.ptr), b.len);
}

template <size_t N>
void copy_text(char (&out)[N], std::string_view text) {
  const size_t n = std::min(text.size(), N - 1);
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}

wk_status set_error(wk_error* err, wk_status status, std::string_view code, std::string_view message) {
  if (err != nullptr && err->struct_size >= sizeof(wk_error)) {
    err->status = status;
    copy_text(err->code, code);
    copy_text(err->message, message);
  }
  return status;
}

// Resolves a ctx of either kind (task_only = false) or a task ctx only.
std::shared_ptr<CtxState> resolve(wk_ctx* ctx, const char* function, bool task_only);

wk_status map_db_error(const db::Error& e, wk_error* err) {
  switch (e.kind()) {
    case db::ErrorKind::unavailable:
      return set_error(err, WK_E_UNAVAILABLE, e.sqlstate(), e.what());
    case db::ErrorKind::sql:
      return set_error(err, WK_E_DB, e.sqlstate(), e.what());
    case db::ErrorKind::deadline:
      return set_error(err, WK_E_DEADLINE, "deadline", e.what());
    case db::ErrorKind::cancelled:
      return set_error(err, WK_E_CANCELLED, "cancelled", e.what());
    case db::ErrorKind::too_large:
      return set_error(err, WK_E_TOO_LARGE, "too_large", e.what());
    case db::ErrorKind::invalid:
      return set_error(err, WK_E_INVALID, "invalid", e.what());
  }
  return set_error(err, WK_E_INTERNAL, "internal", e.what());
}

// Runs `body` and maps every exception to a status (nothing unwinds into the plugin).
template <class Body>
wk_status guarded(wk_error* err, Body&& body) {
  try {
    return body();
  } catch (const db::Error& e) {
    return map_db_error(e, err);
  } catch (const std::bad_alloc&) {
    return set_error(err, WK_E_NO_MEMORY, "no_memory", "out of memory");
  } catch (const std::invalid_argument& e) {
    return set_error(err, WK_E_INVALID, "invalid", e.what());
  } catch (const std::exception& e) {
    return set_error(err, WK_E_INTERNAL, "internal", e.what());
  } catch (...) {
    return set_error(err, WK_E_INTERNAL, "internal", "unknown error");
  }
}

// A database call that found the database away marks its task: the plugin host then hands the
// task back without counting an attempt when the handler gives up (docs/database.md).
wk_status noted(CtxState* ctx, wk_status status) {
  if (status == WK_E_UNAVAILABLE && ctx != nullptr) ctx->note_unavailable();
  return status;
}

db::CallOptions call_options(const CtxState& ctx, uint32_t flags) {
  db::CallOptions options;
  options.binary_results = (flags & WK_PG_BINARY_RESULTS) != 0;
  if (const task::Execution* ex = ctx.execution()) {
    if (ex->task.deadline != task::Clock::time_point{}) options.deadline = ex->task.deadline;
    options.cancellation = &ex->cancellation;
  }
  return options;
}

std::vector<db::Param> to_params(const wk_pg_param* params, size_t count, size_t stride) {
  std::vector<db::Param> out;
  if (count == 0) return out;
  if (params == nullptr) throw std::invalid_argument("params is NULL but param_count > 0");
  if (stride < kPgParamSizeV1_0) throw std::invalid_argument("param_stride is smaller than wk_pg_param v1.0");
  out.reserve(count);
  const auto* base = reinterpret_cast<const unsigned char*>(params);
  for (size_t i = 0; i < count; ++i) {
    wk_pg_param p{};
    std::memcpy(&p, base + i * stride, kPgParamSizeV1_0);
    db::Param param;
    param.is_null = p.is_null != 0;
    param.binary = p.format == 1;
    param.type_oid = p.type_oid;
    if (!param.is_null) param.value = std::string(view(p.value));
    out.push_back(std::move(param));
  }
  return out;
}

wk_pg_rows* register_rows(const std::shared_ptr<CtxState>& ctx, std::unique_ptr<db::Result> result) {
  auto rows = std::make_shared<RowsObject>();
  rows->result = std::move(result);
  rows->owner = ctx;
  const uint64_t handle = HandleTable::process().add(HandleKind::rows, rows, ctx->services().owner);
  ctx->own(handle, HandleKind::rows);
  return static_cast<wk_pg_rows*>(to_pointer(handle));
}

std::shared_ptr<RowsObject> lookup_rows(const wk_pg_rows* rows, const char* function) {
  return std::static_pointer_cast<RowsObject>(
      HandleTable::process().get(to_handle(rows), HandleKind::rows, function));
}

log::Level to_level(int32_t level) {
  return static_cast<log::Level>(std::clamp(level, WK_LOG_TRACE, WK_LOG_ERROR));
}

// ---- the table's functions ---------------------------------------------------------------

const void* WK_CALL api_get_extension(wk_ctx* ctx, const char* /*ext_id*/) {
  CtxCall call(resolve(ctx, "get_extension", false));
  return nullptr;  // no extensions in host ABI 1.0
}

int32_t WK_CALL api_log_enabled(wk_ctx* ctx, int32_t level) {
  CtxCall call(resolve(ctx, "log_enabled", false));
  return call && call->logger().enabled(to_level(level)) ? 1 : 0;
}

void WK_CALL api_log(wk_ctx* ctx, int32_t level, wk_str message, const wk_kv* fields, size_t field_count) {
  try {
    CtxCall call(resolve(ctx, "log", false));
    if (!call || !call->logger().enabled(to_level(level))) return;
    log::Fields copied;
    if (fields != nullptr) {
      copied.reserve(field_count);
      for (size_t i = 0; i < field_count; ++i)
        copied.emplace_back(view(fields[i].key), view(fields[i].value));
    }
    call->logger().log(to_level(level), view(message), copied);
  } catch (...) {
    // Logging must never fail the plugin.
  }
}

wk_status WK_CALL api_config_get(wk_ctx* ctx, wk_str key, wk_str* out) {
  CtxCall call(resolve(ctx, "config_get", false));
  if (!call) return WK_E_WRONG_CTX;
  if (out == nullptr) return WK_E_INVALID;
  try {
    const auto& config = *call->services().config;
    const auto it = config.find(std::string(view(key)));
    if (it == config.end()) return WK_E_NOT_FOUND;
    // The snapshot lives as long as the plugin's services: until after shutdown() returns.
    out->ptr = it->second.c_str();
    out->len = it->second.size();
    return WK_OK;
  } catch (...) {
    return WK_E_NO_MEMORY;
  }
}

wk_status WK_CALL api_pg_query(wk_ctx* ctx, wk_str sql, const wk_pg_param* params, size_t param_count,
                               size_t param_stride, uint32_t flags, wk_pg_rows** out_rows, wk_error* err) {
  if (out_rows != nullptr) *out_rows = nullptr;
  auto context = resolve(ctx, "pg_query", false);
  CtxCall call(context);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "ctx expired or of the wrong kind");
  db::Pool* pool = call->services().pool;
  if (pool == nullptr) return set_error(err, WK_E_UNSUPPORTED, "pg.none", "no database configured");
  return noted(context.get(), guarded(err, [&] {
                 auto result = pool->query(view(sql), to_params(params, param_count, param_stride),
                                           call_options(*call, flags));
                 if (out_rows != nullptr) *out_rows = register_rows(context, std::move(result));
                 return set_error(err, WK_OK, "", "");
               }));
}

size_t WK_CALL api_pg_row_count(const wk_pg_rows* rows) {
  auto r = lookup_rows(rows, "pg_row_count");
  return r ? r->result->rows() : 0;
}
size_t WK_CALL api_pg_column_count(const wk_pg_rows* rows) {
  auto r = lookup_rows(rows, "pg_column_count");
  return r ? r->result->columns() : 0;
}
wk_str WK_CALL api_pg_column_name(const wk_pg_rows* rows, size_t col) {
  auto r = lookup_rows(rows, "pg_column_name");
  if (!r || col >= r->result->columns()) return wk_str{"", 0};
  const std::string_view name = r->result->column_name(col);  // PGresult-owned, NUL-terminated
  return wk_str{name.data(), name.size()};
}
uint32_t WK_CALL api_pg_column_type(const wk_pg_rows* rows, size_t col) {
  auto r = lookup_rows(rows, "pg_column_type");
  return (r && col < r->result->columns()) ? r->result->column_type(col) : 0;
}
wk_status WK_CALL api_pg_value(const wk_pg_rows* rows, size_t row, size_t col, wk_bytes* out,
                               int32_t* is_null) {
  auto r = lookup_rows(rows, "pg_value");
  if (!r) return WK_E_WRONG_CTX;
  if (row >= r->result->rows() || col >= r->result->columns()) return WK_E_INVALID;
  const bool null = r->result->is_null(row, col);
  if (is_null != nullptr) *is_null = null ? 1 : 0;
  if (out != nullptr) {
    const std::string_view value = r->result->value(row, col);
    out->ptr = reinterpret_cast<const uint8_t*>(value.data());
    out->len = value.size();
  }
  return WK_OK;
}
uint64_t WK_CALL api_pg_rows_affected(const wk_pg_rows* rows) {
  auto r = lookup_rows(rows, "pg_rows_affected");
  return r ? r->result->rows_affected() : 0;
}
void WK_CALL api_pg_rows_free(wk_pg_rows* rows) {
  if (rows == nullptr) return;
  auto r = std::static_pointer_cast<RowsObject>(
      HandleTable::process().take(to_handle(rows), HandleKind::rows, "pg_rows_free"));
  if (r) {
    if (auto owner = r->owner.lock()) owner->disown(to_handle(rows));
  }
}

wk_status WK_CALL api_pg_begin(wk_ctx* ctx, wk_pg_tx** out_tx, wk_error* err) {
  if (out_tx != nullptr) *out_tx = nullptr;
  auto context = resolve(ctx, "pg_begin", false);
  CtxCall call(context);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "ctx expired or of the wrong kind");
  if (out_tx == nullptr) return set_error(err, WK_E_INVALID, "invalid", "out_tx is NULL");
  db::Pool* pool = call->services().pool;
  if (pool == nullptr) return set_error(err, WK_E_UNSUPPORTED, "pg.none", "no database configured");
  return noted(context.get(), guarded(err, [&] {
                 auto tx = std::make_shared<TxObject>();
                 tx->tx = pool->begin(call_options(*call, 0));
                 tx->owner = context;
                 const uint64_t handle =
                     HandleTable::process().add(HandleKind::tx, tx, context->services().owner);
                 context->own(handle, HandleKind::tx);
                 *out_tx = static_cast<wk_pg_tx*>(to_pointer(handle));
                 return set_error(err, WK_OK, "", "");
               }));
}

// Resolves a transaction and enters its owner's window for the duration of a call.
struct TxCall {
  TxCall(wk_pg_tx* handle, const char* function, bool take)
      : tx(std::static_pointer_cast<TxObject>(
            take ? HandleTable::process().take(to_handle(handle), HandleKind::tx, function)
                 : HandleTable::process().get(to_handle(handle), HandleKind::tx, function))),
        owner(tx ? tx->owner.lock() : nullptr),
        call(owner) {
    if (take && owner) owner->disown(to_handle(handle));
  }
  explicit operator bool() const { return tx && call; }
  std::shared_ptr<TxObject> tx;
  std::shared_ptr<CtxState> owner;
  CtxCall call;
};

wk_status WK_CALL api_pg_tx_query(wk_pg_tx* handle, wk_str sql, const wk_pg_param* params, size_t param_count,
                                  size_t param_stride, uint32_t flags, wk_pg_rows** out_rows, wk_error* err) {
  if (out_rows != nullptr) *out_rows = nullptr;
  TxCall call(handle, "pg_tx_query", false);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "transaction expired");
  return noted(call.owner.get(), guarded(err, [&] {
                 std::lock_guard lock(call.tx->mu);
                 auto result = call.tx->tx->query(view(sql), to_params(params, param_count, param_stride),
                                                  call_options(*call.owner, flags));
                 if (out_rows != nullptr) *out_rows = register_rows(call.owner, std::move(result));
                 return set_error(err, WK_OK, "", "");
               }));
}

wk_status WK_CALL api_pg_commit(wk_pg_tx* handle, wk_error* err) {
  TxCall call(handle, "pg_commit", true);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "transaction expired");
  return noted(call.owner.get(), guarded(err, [&] {
                 std::lock_guard lock(call.tx->mu);
                 auto tx = std::move(call.tx->tx);
                 tx->commit();
                 return set_error(err, WK_OK, "", "");
               }));
}

void WK_CALL api_pg_rollback(wk_pg_tx* handle) {
  if (handle == nullptr) return;
  TxCall call(handle, "pg_rollback", true);
  // Dropping the last reference rolls back (TxObject's destructor), inside the owner's window.
  if (call.tx) {
    std::lock_guard lock(call.tx->mu);
    try {
      if (call.tx->tx) call.tx->tx->rollback();
    } catch (...) {
    }
    call.tx->tx.reset();
  }
}

wk_status WK_CALL api_pg_tx_once(wk_pg_tx* handle, wk_str key, int32_t* out_first, wk_error* err) {
  TxCall call(handle, "pg_tx_once", false);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "transaction expired");
  if (out_first == nullptr) return set_error(err, WK_E_INVALID, "invalid", "out_first is NULL");
  return noted(call.owner.get(), guarded(err, [&] {
                 std::lock_guard lock(call.tx->mu);
                 *out_first = call.tx->tx->once(view(key)) ? 1 : 0;
                 return set_error(err, WK_OK, "", "");
               }));
}

wk_status WK_CALL api_pg_migrate(wk_ctx* plugin_ctx, const wk_migration* migrations, size_t count,
                                 size_t stride, wk_error* err) {
  auto context = std::static_pointer_cast<CtxState>(
      HandleTable::process().get(to_handle(plugin_ctx), HandleKind::plugin_ctx, "pg_migrate"));
  CtxCall call(context);
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "pg_migrate needs the plugin ctx");
  db::Pool* pool = call->services().pool;
  if (pool == nullptr) return set_error(err, WK_E_UNSUPPORTED, "pg.none", "no database configured");
  if (count > 0 && (migrations == nullptr || stride < kMigrationSizeV1_0)) {
    return set_error(err, WK_E_INVALID, "invalid",
                     "migrations NULL or stride smaller than wk_migration v1.0");
  }
  return guarded(err, [&] {
    std::vector<db::Migration> list;
    const auto* base = reinterpret_cast<const unsigned char*>(migrations);
    for (size_t i = 0; i < count; ++i) {
      wk_migration m{};
      std::memcpy(&m, base + i * stride, kMigrationSizeV1_0);
      if (m.version <= 0 || (!list.empty() && m.version <= list.back().version)) {
        return set_error(err, WK_E_INVALID, "invalid",
                         "migration versions must be > 0 and strictly increasing");
      }
      list.push_back({m.version, std::string(view(m.name)), std::string(view(m.sql))});
    }
    try {
      pool->migrate(call->services().plugin_id, list);
    } catch (const db::Error& e) {
      if (e.kind() != db::ErrorKind::unavailable) throw;
      call->services().deferred_migrations->defer(list);
      call->services().logger.warn("database unavailable; migrations deferred until the plugin's first task",
                                   {{"error", e.what()}});
    }
    return set_error(err, WK_OK, "", "");
  });
}

static_assert(std::string_view(WK_HOST_QUEUE_PREFIX) == task::kHostQueuePrefix);

task::EnqueueRequest to_request(const wk_enqueue_req& req, const ConfigSnapshot& config) {
  task::EnqueueRequest out;
  out.type = std::string(view(req.type));
  if (out.type.empty()) throw std::invalid_argument("enqueue: type is required");
  out.queue = std::string(view(req.queue));
  if ((req.flags & WK_ENQ_ON_THIS_HOST) != 0) {
    const auto host = config.find("WORKER_HOST_ID");
    if (host == config.end() || host->second.empty())
      throw std::invalid_argument("enqueue: on this host, but this worker has no WORKER_HOST_ID");
    out.queue = task::host_queue(host->second);
  }
  out.payload = std::string(view(req.payload));
  out.task_id = std::string(view(req.task_id));
  if (req.headers != nullptr) {
    for (size_t i = 0; i < req.header_count; ++i) {
      out.headers.emplace_back(view(req.headers[i].key), view(req.headers[i].value));
    }
  }
  // A time or duration this far out would overflow the clock's int64 nanoseconds (signed overflow,
  // UB) once converted or added to now: refused like any other bad value.
  constexpr int64_t kMaxDurationMs = int64_t{100} * 366 * 24 * 3600 * 1000;  // 100 years
  constexpr int64_t kMaxUnixMs = int64_t{7258118400} * 1000;                 // 2200-01-01
  const bool too_far = req.process_at_ms > kMaxUnixMs || req.deadline_ms > kMaxUnixMs ||
                       req.process_in_ms > kMaxDurationMs || req.timeout_ms > kMaxDurationMs ||
                       req.unique_ttl_ms > kMaxDurationMs || req.retention_ms > kMaxDurationMs;
  if (too_far)
    throw std::invalid_argument("enqueue: times must be before 2200 and durations under 100 years");
  const auto now = task::Clock::now();
  if (req.process_at_ms > 0) {
    out.process_at = task::Clock::time_point(milliseconds(req.process_at_ms));
  } else if (req.process_in_ms > 0) {
    out.process_at = now + milliseconds(req.process_in_ms);
  }
  if ((req.flags & WK_ENQ_HAS_MAX_RETRY) != 0) {
    if (req.max_retry < 0) throw std::invalid_argument("enqueue: max_retry must be >= 0");
    out.max_retry = req.max_retry;
  }
  auto whole_seconds = [](int64_t ms) { return std::chrono::seconds((ms + 999) / 1000); };
  if (req.timeout_ms < 0 || req.retention_ms < 0 || req.unique_ttl_ms < 0 || req.deadline_ms < 0) {
    throw std::invalid_argument("enqueue: durations and times must not be negative");
  }
  if (req.timeout_ms > 0) out.timeout = whole_seconds(req.timeout_ms);
  if (req.deadline_ms > 0) out.deadline = task::Clock::time_point(milliseconds(req.deadline_ms));
  if (req.unique_ttl_ms > 0) {
    if (req.unique_ttl_ms < 1000) throw std::invalid_argument("enqueue: unique_ttl_ms must be >= 1000");
    out.unique_ttl = milliseconds(req.unique_ttl_ms);
  }
  if (req.retention_ms > 0) out.retention = whole_seconds(req.retention_ms);
  return out;
}

wk_status WK_CALL api_enqueue(wk_ctx* ctx, const wk_enqueue_req* req, wk_task_id* out_id, wk_error* err) {
  if (out_id != nullptr) out_id->text[0] = '\0';
  CtxCall call(resolve(ctx, "enqueue", false));
  if (!call) return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "ctx expired or of the wrong kind");
  if (req == nullptr || req->struct_size < offsetof(wk_enqueue_req, retention_ms) + sizeof(int64_t)) {
    return set_error(err, WK_E_INVALID, "invalid",
                     "enqueue: req is NULL or smaller than wk_enqueue_req v1.0");
  }
  return guarded(err, [&] {
    task::EnqueueRequest request = to_request(*req, *call->services().config);
    std::string id;
    if ((req->flags & WK_ENQ_IMMEDIATE) != 0) {
      task::Enqueuer* enqueuer = call->services().enqueuer;
      if (enqueuer == nullptr) {
        return set_error(err, WK_E_UNSUPPORTED, "enqueue.none", "immediate enqueue is not available here");
      }
      id = enqueuer->enqueue(request);
    } else {
      task::Execution* execution = call->execution();
      if (execution == nullptr) {
        return set_error(err, WK_E_WRONG_CTX, "wrong_ctx", "staged enqueue needs a task ctx");
      }
      if (const task::Enqueuer* enqueuer = call->services().enqueuer) enqueuer->validate(request);
      if (request.task_id.empty()) request.task_id = task::new_uuid();
      id = request.task_id;
      std::lock_guard lock(call->staged_mutex());
      execution->staged.push_back(std::move(request));
    }
    if (out_id != nullptr) copy_text(out_id->text, id);
    return set_error(err, WK_OK, "", "");
  });
}

wk_status WK_CALL api_heartbeat(wk_ctx* ctx, const wk_progress* progress) {
  CtxCall call(resolve(ctx, "heartbeat", true));
  if (!call) return WK_E_WRONG_CTX;
  try {
    task::Progress reported;
    if (progress != nullptr && progress->struct_size >= kProgressSizeV1_0) {
      reported.done = progress->done;
      reported.total = progress->total;
      // A status line, not a log: the rest of a long note would only bloat every heartbeat.
      reported.note = std::string(view(progress->note).substr(0, kMaxProgressNote));
    }
    call->execution()->services.heartbeat(reported);
  } catch (...) {
    return WK_E_INTERNAL;
  }
  return call->execution()->cancellation.cancelled() ? WK_E_CANCELLED : WK_OK;
}

int32_t WK_CALL api_is_cancelled(wk_ctx* ctx) {
  CtxCall call(resolve(ctx, "is_cancelled", true));
  // A stale ctx answers WK_E_WRONG_CTX: non-zero, so a careless `if (is_cancelled(c))` stops.
  if (!call) return WK_E_WRONG_CTX;
  return static_cast<int32_t>(call->execution()->cancellation.reason());
}

int32_t WK_CALL api_wait_cancelled(wk_ctx* ctx, int64_t timeout_ms) {
  CtxCall call(resolve(ctx, "wait_cancelled", true));
  if (!call) return WK_E_WRONG_CTX;
  const int64_t bounded = std::clamp<int64_t>(timeout_ms, 0, int64_t{24} * 3600 * 1000);
  return static_cast<int32_t>(call->wait_cancelled(milliseconds(bounded)));
}

int64_t WK_CALL api_remaining_ms(wk_ctx* ctx) {
  CtxCall call(resolve(ctx, "remaining_ms", true));
  if (!call) return 0;
  const auto deadline = call->execution()->task.deadline;
  if (deadline == task::Clock::time_point{}) return std::numeric_limits<int64_t>::max();
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - task::Clock::now()).count();
  return std::max<int64_t>(left, 0);
}

wk_status WK_CALL api_result_write(wk_ctx* ctx, wk_bytes data, uint32_t /*flags*/) {
  CtxCall call(resolve(ctx, "result_write", true));
  if (!call) return WK_E_WRONG_CTX;
  try {
    if (call->execution()->services.write_result(view(data))) return WK_OK;
    return call->execution()->cancellation.cancelled() ? WK_E_CANCELLED : WK_E_UNAVAILABLE;
  } catch (...) {
    return WK_E_INTERNAL;
  }
}

std::shared_ptr<CtxState> resolve(wk_ctx* ctx, const char* function, bool task_only) {
  auto& table = HandleTable::process();
  const uint64_t handle = to_handle(ctx);
  if (task_only) return std::static_pointer_cast<CtxState>(table.get(handle, HandleKind::task_ctx, function));
  return std::static_pointer_cast<CtxState>(table.get_any_ctx(handle, function));
}

constexpr wk_host_api make_table() {
  wk_host_api api{};
  api.struct_size = sizeof(wk_host_api);
  api.abi_major = WK_ABI_MAJOR;
  api.abi_minor = WK_ABI_MINOR;
  api.host_name = "autodevs-worker";
  api.host_version = "0.1.0";
  api.get_extension = api_get_extension;
  api.log_enabled = api_log_enabled;
  api.log = api_log;
  api.config_get = api_config_get;
  api.pg_query = api_pg_query;
  api.pg_row_count = api_pg_row_count;
  api.pg_column_count = api_pg_column_count;
  api.pg_column_name = api_pg_column_name;
  api.pg_column_type = api_pg_column_type;
  api.pg_value = api_pg_value;
  api.pg_rows_affected = api_pg_rows_affected;
  api.pg_rows_free = api_pg_rows_free;
  api.pg_begin = api_pg_begin;
  api.pg_tx_query = api_pg_tx_query;
  api.pg_commit = api_pg_commit;
  api.pg_rollback = api_pg_rollback;
  api.pg_tx_once = api_pg_tx_once;
  api.pg_migrate = api_pg_migrate;
  api.enqueue = api_enqueue;
  api.heartbeat = api_heartbeat;
  api.is_cancelled = api_is_cancelled;
  api.wait_cancelled = api_wait_cancelled;
  api.remaining_ms = api_remaining_ms;
  api.result_write = api_result_write;
  return api;
}

constexpr wk_host_api kHostApi = make_table();

}  // namespace

const wk_host_api* host_api() { return &kHostApi; }

}  // namespace wk::plugins::detail
