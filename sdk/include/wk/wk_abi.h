/*
 * wk_abi.h: the C ABI between the autodevs `worker` host and its handler plugins.
 *
 * Version 1.0. C99-clean; includes nothing beyond <stddef.h> and <stdint.h>.
 *
 * The rules, in one place:
 *   - A plugin exports exactly one symbol, wk_plugin_entry_v1: a pure getter of static data.
 *   - Every struct that crosses the boundary starts with uint32_t struct_size, set by whoever
 *     allocates it. Fields are only ever appended; a reader checks WK_HAS before touching a
 *     field newer than 1.0. Arrays of structs travel with an explicit stride.
 *   - Ownership (see "OWNERSHIP" below): borrowed in, copied out, handles released with their
 *     paired function. No allocator and no exception crosses the boundary.
 *   - Threads: each function carries a [thread] tag. [any-thread] functions are thread-safe.
 *
 * OWNERSHIP
 *   O1 Borrowed in: what the host passes to the plugin (task view, strings) is valid until the
 *      call returns. Copy what you keep.
 *   O2 Handles out: host objects that outlive a call (wk_pg_rows, wk_pg_tx) are released only
 *      with their paired function (pg_rows_free, pg_commit/pg_rollback). The host releases what
 *      a handler leaked when its run() returns, and logs a warning.
 *   O3 Long-lived host strings (config_get) are valid until the plugin's shutdown() returns.
 *   O4 Plugin data in (log, enqueue, result_write, query parameters) is copied by the host
 *      before the call returns.
 *   O5 Text out goes into fixed buffers (wk_failure, wk_error, wk_task_id), truncated, never
 *      overflowed, always NUL-terminated.
 *   O6 The entry, the handler table and their strings have static storage duration. The host
 *      copies them at load and never reads them again.
 */
#ifndef WK_ABI_H
#define WK_ABI_H

#include <stddef.h>
#include <stdint.h>

#define WK_ABI_MAJOR 1
#define WK_ABI_MINOR 1
#define WK_ENTRY_MAGIC 0x31504B57u /* "WKP1" little-endian */

#if defined(_WIN32)
#define WK_CALL __cdecl
#define WK_EXPORT __declspec(dllexport)
#else
#define WK_CALL
#define WK_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Status codes. 0 = OK, negative = error. Both sides map unknown negative values to
 * WK_E_INTERNAL.
 */
typedef int32_t wk_status;
#define WK_OK 0
#define WK_E_INVALID (-1) /* bad argument */
#define WK_E_NOT_FOUND (-2)
#define WK_E_TRUNCATED (-3)
#define WK_E_CANCELLED (-4)   /* task cancellation observed inside a host call */
#define WK_E_DEADLINE (-5)    /* the task's deadline passed inside a host call */
#define WK_E_UNAVAILABLE (-6) /* transient: database down, pool exhausted, Redis away */
#define WK_E_DB (-7)          /* server-side SQL error; wk_error.code holds the SQLSTATE */
#define WK_E_WRONG_CTX (-8)   /* ctx expired (run returned, plugin shut down) or wrong kind */
#define WK_E_UNSUPPORTED (-9) /* not provided by this host */
#define WK_E_TOO_LARGE (-10)  /* a row, byte or size limit was hit */
#define WK_E_NO_MEMORY (-11)
#define WK_E_INTERNAL (-12)

/* ---------------------------------------------------------------------------------------------
 * Views. Host-provided views are also NUL-terminated (ptr[len] == 0); plugin-provided views need
 * not be. Text is UTF-8. These three layouts are FROZEN.
 */
typedef struct wk_str {
  const char* ptr;
  size_t len;
} wk_str;
typedef struct wk_bytes {
  const uint8_t* ptr;
  size_t len;
} wk_bytes;
typedef struct wk_kv {
  wk_str key;
  wk_str value;
} wk_kv;

/* Caller-owned error details: the callee writes, nothing to free. */
typedef struct wk_error {
  uint32_t struct_size; /* set by the caller */
  wk_status status;
  char code[32];     /* e.g. SQLSTATE "40001", or "pg.pool_timeout"; NUL-terminated */
  char message[472]; /* NUL-terminated, truncated if needed */
} wk_error;

/* Feature test for any struct that starts with struct_size. The C++ spelling avoids a C-style
   cast so that plugins built with -Wold-style-cast stay warning-free.
   TYPE (a type in a cast) and field (a member name after ->) cannot take parentheses. */
#ifdef __cplusplus
/* NOLINTNEXTLINE(bugprone-macro-parentheses): a type name and a member name, not expressions */
#define WK_MEMBER_SIZE_(TYPE, field) sizeof(static_cast<TYPE*>(nullptr)->field)
#else
/* NOLINTNEXTLINE(bugprone-macro-parentheses): a type name and a member name, not expressions */
#define WK_MEMBER_SIZE_(TYPE, field) sizeof(((TYPE*)0)->field)
#endif
#define WK_HAS(TYPE, p, field) \
  ((p) != NULL && offsetof(TYPE, field) + WK_MEMBER_SIZE_(TYPE, field) <= (p)->struct_size)
#define WK_HAS_FN(TYPE, p, fn) (WK_HAS(TYPE, p, fn) && (p)->fn != NULL)

typedef struct wk_ctx wk_ctx;                   /* host-owned: a plugin ctx or a task ctx */
typedef struct wk_pg_rows wk_pg_rows;           /* host-owned query result */
typedef struct wk_pg_tx wk_pg_tx;               /* host-owned open transaction */
typedef struct wk_plugin_state wk_plugin_state; /* plugin-owned, opaque to the host */

/* ---------------------------------------------------------------------------------------------
 * Logging levels.
 */
#define WK_LOG_TRACE 0
#define WK_LOG_DEBUG 1
#define WK_LOG_INFO 2
#define WK_LOG_WARN 3
#define WK_LOG_ERROR 4

/* ---------------------------------------------------------------------------------------------
 * PostgreSQL.
 */
typedef struct wk_pg_param {
  uint32_t type_oid; /* 0 = let the server infer */
  int32_t format;    /* 0 = text, 1 = binary */
  int32_t is_null;   /* non-zero = SQL NULL; value ignored */
  uint32_t reserved; /* 0 */
  wk_bytes value;
} wk_pg_param; /* arrays of it are passed with a stride, so it may grow */

/* pg_query / pg_tx_query flags */
#define WK_PG_BINARY_RESULTS (1u << 0) /* values come back in binary format */

/* A plugin migration: applied once per (plugin id, version), in version order. */
typedef struct wk_migration {
  uint32_t struct_size;
  uint32_t reserved;
  int64_t version; /* > 0, strictly increasing in the array */
  wk_str name;     /* informational */
  wk_str sql;      /* one or more statements, run in one transaction */
} wk_migration;

/* ---------------------------------------------------------------------------------------------
 * Follow-up tasks, mapped onto asynq's enqueue options.
 */
#define WK_ENQ_IMMEDIATE (1u << 0)     /* publish now; default: only if this task SUCCEEDS */
#define WK_ENQ_HAS_MAX_RETRY (1u << 1) /* max_retry is set; otherwise asynq's default (25) */
/* v1.1: to this machine's queue, WK_HOST_QUEUE_PREFIX + the worker's WORKER_HOST_ID, instead of
   `queue`: for a step that needs files only this machine has. Every worker serves its machine's
   queue first. A 1.0 host ignores the flag: check the host's abi_minor (the C++ layer does). */
#define WK_ENQ_ON_THIS_HOST (1u << 2)
#define WK_HOST_QUEUE_PREFIX "host:"

typedef struct wk_enqueue_req {
  uint32_t struct_size;
  uint32_t flags; /* WK_ENQ_* */
  wk_str type;    /* task type, required */
  wk_str queue;   /* empty = "default" */
  wk_bytes payload;
  wk_str task_id;       /* empty = a random UUID; set it for idempotent follow-ups */
  const wk_kv* headers; /* may be NULL */
  size_t header_count;
  int64_t process_at_ms; /* absolute Unix ms; 0 = not set */
  int64_t process_in_ms; /* relative delay; used when process_at_ms is 0 */
  int32_t max_retry;     /* with WK_ENQ_HAS_MAX_RETRY */
  uint32_t reserved;     /* 0 */
  int64_t timeout_ms;    /* 0 = asynq default (30 min unless a deadline is set) */
  int64_t deadline_ms;   /* absolute Unix ms; 0 = none */
  int64_t unique_ttl_ms; /* 0 = not unique; otherwise >= 1000 */
  int64_t retention_ms;  /* keep the task this long after success; 0 = delete at once */
} wk_enqueue_req;

typedef struct wk_task_id {
  char text[128]; /* NUL-terminated */
} wk_task_id;

/* ---------------------------------------------------------------------------------------------
 * Cancellation reasons returned by is_cancelled() / wait_cancelled().
 */
#define WK_CANCEL_NONE 0
#define WK_CANCEL_SHUTDOWN 1   /* host draining: the task is requeued, no attempt counted */
#define WK_CANCEL_DEADLINE 2   /* the task's deadline or timeout passed */
#define WK_CANCEL_REQUESTED 3  /* operator cancel (asynq:cancel) */
#define WK_CANCEL_LEASE_LOST 4 /* another worker may own it now: stop side effects */

typedef struct wk_progress {
  uint32_t struct_size;
  uint32_t reserved;
  uint64_t done;
  uint64_t total; /* 0 = unknown */
  wk_str note;    /* short status line, may be empty */
} wk_progress;

/* ---------------------------------------------------------------------------------------------
 * The host-services table. Passed to init(); valid until shutdown() returns.
 * All functions are [any-thread]. A ctx is valid inside its window: a plugin ctx from init()
 * until shutdown() returns, a task ctx from the start of run() until run() returns. Outside it,
 * or with the wrong kind of ctx, a call returns WK_E_WRONG_CTX (or a neutral value) and the host
 * logs the misbehaviour. The host never calls back into the plugin from inside these functions.
 */
typedef struct wk_host_api {
  uint32_t struct_size; /* the HOST's sizeof: use WK_HAS_FN for anything newer than 1.0 */
  uint16_t abi_major;
  uint16_t abi_minor;
  const char* host_name;    /* informational */
  const char* host_version; /* informational */

  /* --- v1.0 --- */

  /* Optional host capabilities by id ("wk.something/1"); NULL if absent. */
  const void*(WK_CALL* get_extension)(wk_ctx* ctx, const char* ext_id);

  /* Structured logging. The host adds plugin, and for a task ctx task_id, task_type, queue,
     attempt. Strings are copied. */
  int32_t(WK_CALL* log_enabled)(wk_ctx* ctx, int32_t level);
  void(WK_CALL* log)(wk_ctx* ctx, int32_t level, wk_str message, const wk_kv* fields, size_t field_count);

  /* Configuration lookup (environment / .env snapshot taken at start-up). Keys are the
     variable names (e.g. "AI_PROVIDER"). *out is valid until shutdown() returns.
     WK_E_NOT_FOUND when unset. Secrets are readable here but never logged by the host. */
  wk_status(WK_CALL* config_get)(wk_ctx* ctx, wk_str key, wk_str* out);

  /* PostgreSQL, one statement in autocommit, on a pooled connection. Waits for a connection no
     longer than the task's remaining time; statement_timeout follows it; a cancelled task
     cancels the running query. WK_E_UNAVAILABLE when the database cannot be reached. */
  wk_status(WK_CALL* pg_query)(wk_ctx* ctx, wk_str sql, const wk_pg_param* params, size_t param_count,
                               size_t param_stride, uint32_t flags, wk_pg_rows** out_rows, wk_error* err);
  size_t(WK_CALL* pg_row_count)(const wk_pg_rows* rows);
  size_t(WK_CALL* pg_column_count)(const wk_pg_rows* rows);
  wk_str(WK_CALL* pg_column_name)(const wk_pg_rows* rows, size_t col);
  uint32_t(WK_CALL* pg_column_type)(const wk_pg_rows* rows, size_t col); /* type OID */
  /* Borrowed view, valid until pg_rows_free. */
  wk_status(WK_CALL* pg_value)(const wk_pg_rows* rows, size_t row, size_t col, wk_bytes* out,
                               int32_t* is_null);
  uint64_t(WK_CALL* pg_rows_affected)(const wk_pg_rows* rows);
  void(WK_CALL* pg_rows_free)(wk_pg_rows* rows); /* NULL-safe */

  /* Transactions: one connection held from begin until commit or rollback. Both release the
     handle. A transaction still open when run() returns is rolled back. */
  wk_status(WK_CALL* pg_begin)(wk_ctx* ctx, wk_pg_tx** out_tx, wk_error* err);
  wk_status(WK_CALL* pg_tx_query)(wk_pg_tx* tx, wk_str sql, const wk_pg_param* params, size_t param_count,
                                  size_t param_stride, uint32_t flags, wk_pg_rows** out_rows, wk_error* err);
  wk_status(WK_CALL* pg_commit)(wk_pg_tx* tx, wk_error* err);
  void(WK_CALL* pg_rollback)(wk_pg_tx* tx); /* NULL-safe */
  /* Effectively-once: records `key` (usually the task id plus a step name) inside tx.
     *out_first = 1 the first time; 0 when a committed transaction already recorded it, in which
     case the handler should roll back and report success. */
  wk_status(WK_CALL* pg_tx_once)(wk_pg_tx* tx, wk_str key, int32_t* out_first, wk_error* err);
  /* Versioned migrations for this plugin (plugin ctx, during init). Each version runs once per
     database, in a transaction, under an advisory lock, recorded under the plugin id. When the
     database cannot be reached, the host defers them and returns WK_OK: it applies them before
     this plugin's first task runs, and retries the plugin's tasks until it has. */
  wk_status(WK_CALL* pg_migrate)(wk_ctx* plugin_ctx, const wk_migration* migrations, size_t count,
                                 size_t stride, wk_error* err);

  /* Follow-up work. Default: staged, and published atomically with this task's success;
     discarded on failure or retry. WK_ENQ_IMMEDIATE publishes at once (any ctx). */
  wk_status(WK_CALL* enqueue)(wk_ctx* ctx, const wk_enqueue_req* req, wk_task_id* out_id, wk_error* err);

  /* Task ctx only. */
  /* Reports progress (may be NULL: liveness only); WK_E_CANCELLED when cancellation is pending.
     The host keeps the last report and publishes it with the task's asynq WorkerInfo at its next
     heartbeat; the note is cut to 256 bytes. Leases are extended whether a handler reports. */
  wk_status(WK_CALL* heartbeat)(wk_ctx* task, const wk_progress* progress);
  int32_t(WK_CALL* is_cancelled)(wk_ctx* task); /* WK_CANCEL_*; lock-free */
  /* Sleeps until cancelled or timeout_ms passes; returns the WK_CANCEL_* reason (NONE on
     timeout). */
  int32_t(WK_CALL* wait_cancelled)(wk_ctx* task, int64_t timeout_ms);
  int64_t(WK_CALL* remaining_ms)(wk_ctx* task); /* until the deadline; INT64_MAX if none */
  /* Writes the task's result (asynq's `result` field). Copies; replaces a previous result. */
  wk_status(WK_CALL* result_write)(wk_ctx* task, wk_bytes data, uint32_t flags);

  /* --- v1.1+ fields are appended below this line, never above --- */
} wk_host_api;

/* ---------------------------------------------------------------------------------------------
 * Handlers.
 */
#define WK_HANDLER_IDEMPOTENT (1u << 0)   /* safe to re-run after a crash mid-way */
#define WK_HANDLER_LONG_RUNNING (1u << 1) /* expects to heartbeat */

typedef int32_t wk_disposition;
#define WK_DISP_UNSET 0         /* never return this: treated as RETRY + "plugin misbehaving" */
#define WK_DISP_SUCCEEDED 1     /* done, or completed when the task has a retention */
#define WK_DISP_RETRY 2         /* asynq retry with the default backoff */
#define WK_DISP_RETRY_AFTER 3   /* retry not before failure->retry_after_ms (host clamps) */
#define WK_DISP_FAIL_NO_RETRY 4 /* archive now (asynq SkipRetry) */
#define WK_DISP_CANCELLED                                          \
  5 /* acknowledged cancellation: on shutdown the task is requeued \
       without counting an attempt; otherwise it fails as          \
       "context canceled" */

/* Host-allocated and zeroed. The plugin fills it only for non-success dispositions. */
typedef struct wk_failure {
  uint32_t struct_size; /* set by the host */
  uint32_t reserved;
  int64_t retry_after_ms; /* WK_DISP_RETRY_AFTER only; relative delay */
  char code[64];          /* machine-readable, NUL-terminated, e.g. "upstream_timeout" */
  char message[1024];     /* human-readable, NUL-terminated, truncated */
} wk_failure;

/* Read-only view of an asynq TaskMessage, valid only until run() returns. */
typedef struct wk_task_view {
  uint32_t struct_size; /* host's sizeof; check before reading fields added after 1.0 */
  uint32_t attempt;     /* 1-based: retried + 1 */
  int32_t retried;      /* retries done so far */
  int32_t max_retry;    /* asynq's `retry` */
  wk_str id;
  wk_str type;
  wk_str queue;
  wk_bytes payload;
  const wk_kv* headers; /* asynq v0.26 headers; may be NULL when header_count is 0 */
  size_t header_count;
  int64_t deadline_ms;   /* effective deadline, absolute Unix ms; 0 = none */
  int64_t started_at_ms; /* when this attempt started, Unix ms */
} wk_task_view;

struct wk_handler_desc;
typedef struct wk_handler_desc wk_handler_desc;

struct wk_handler_desc {
  uint32_t struct_size;  /* = handler_stride; the host reads only what it knows */
  uint32_t flags;        /* WK_HANDLER_* */
  const char* task_type; /* unique across loaded plugins; [A-Za-z0-9:._-]{1,128} */
  const char* description;
  uint32_t max_concurrency; /* 0 = host default; 1 = the host serialises this handler */
  /* The handler's bound on one attempt (0 = none of its own): the host cancels an attempt with
     WK_CANCEL_DEADLINE at the earlier of the task's deadline and its start plus this. */
  uint32_t default_timeout_ms;

  /* [worker-thread] May run concurrently for different tasks. */
  wk_disposition(WK_CALL* run)(wk_plugin_state* state, wk_ctx* task, const wk_task_view* t,
                               wk_failure* failure);
  /* Optional. [any-thread] Called when cancellation is requested while run() is active, before
     wait_cancelled() returns to the handler. Must not block and must not call the host except log. */
  void(WK_CALL* on_cancel)(wk_plugin_state* state, wk_ctx* task);
};

/* ---------------------------------------------------------------------------------------------
 * Entry.
 */
#define WK_PLUGIN_UNLOAD_SAFE (1u << 0) /* joins its threads in shutdown, no TLS dtors */

typedef struct wk_plugin_entry {
  uint32_t magic;             /* WK_ENTRY_MAGIC */
  uint32_t struct_size;       /* sizeof(wk_plugin_entry) in the plugin's header */
  uint16_t abi_major;         /* must equal the major in the symbol name */
  uint16_t abi_minor;         /* minor the plugin was compiled against */
  uint16_t min_host_minor;    /* lowest host minor that has everything the plugin requires */
  uint16_t reserved0;         /* 0 */
  uint32_t flags;             /* WK_PLUGIN_* */
  uint32_t reserved1;         /* 0 */
  const char* plugin_id;      /* stable reverse-DNS id, e.g. "dev.autodevs.planning" */
  const char* plugin_version; /* the plugin's own version, informational */
  const char* build_info;     /* compiler / SDK, informational */

  const wk_handler_desc* handlers; /* static table; walk with handler_stride */
  uint32_t handler_count;
  uint32_t handler_stride;

  /* [control-thread] Once per load, before any run(). On failure the host never calls
     shutdown(). */
  wk_status(WK_CALL* init)(const wk_host_api* host, wk_ctx* plugin_ctx, wk_plugin_state** out_state,
                           wk_error* err);
  /* [control-thread] After every run() and on_cancel() has returned. May be NULL. */
  void(WK_CALL* shutdown)(wk_plugin_state* state);

  /* Optional plugin-side capabilities by id; may be NULL. */
  const void*(WK_CALL* get_extension)(wk_plugin_state* state, const char* ext_id);
} wk_plugin_entry;

/* THE exported symbol: a pure getter, no side effects, any thread, any number of calls. */
typedef const wk_plugin_entry*(WK_CALL* wk_plugin_entry_fn)(void);
#define WK_PLUGIN_ENTRY_SYMBOL_V1 "wk_plugin_entry_v1"

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WK_ABI_H */
