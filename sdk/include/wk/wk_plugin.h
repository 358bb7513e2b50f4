/*
 * wk_plugin.h: helpers for worker plugins written in C (C99), on top of wk_abi.h.
 *
 * wk_abi.h is the contract; this header only saves the boilerplate around it: the entry and
 * its export, views from C strings, filling the fixed failure and error buffers (rule O5), and
 * short wrappers for the host calls most handlers make. Everything here is static inline or a
 * macro, so nothing is linked and nothing but wk_plugin_entry_v1 is exported. Helpers are named
 * wkp_ / WKP_ so that they never collide with names a later wk_abi.h adds.
 *
 * Usage (sdk/examples/hello_c is a complete plugin):
 *
 *   #include <wk/wk_plugin.h>
 *
 *   static const wk_host_api* host;  // or keep it in your own state, see hello_c
 *
 *   static wk_status WK_CALL my_init(const wk_host_api* h, wk_ctx* ctx, wk_plugin_state** state,
 *                                    wk_error* err) {
 *     wk_status s = wkp_check_host(h, err);
 *     if (s != WK_OK) return s;
 *     host = h;
 *     *state = NULL;
 *     (void)ctx;
 *     return WK_OK;
 *   }
 *
 *   static wk_disposition WK_CALL echo(wk_plugin_state* state, wk_ctx* task, const wk_task_view* t,
 *                                      wk_failure* failure) {
 *     (void)state;
 *     if (t->payload.len == 0) return wkp_fail(failure, WK_DISP_FAIL_NO_RETRY, "bad_payload", "empty");
 *     if (wkp_result(host, task, t->payload.ptr, t->payload.len) != WK_OK)
 *       return wkp_fail(failure, WK_DISP_RETRY, "result_write", "the host refused the result");
 *     wkp_logf(host, task, WK_LOG_INFO, "echoed %zu bytes", t->payload.len);
 *     return WK_DISP_SUCCEEDED;
 *   }
 *
 *   static const wk_handler_desc handlers[] = {
 *       WKP_HANDLER("example:echo", echo, "writes the payload back as the result"),
 *   };
 *   WKP_PLUGIN("dev.example.echo", "1.0.0", handlers, my_init, NULL)
 *
 * Build it with wk_add_plugin() in a `project(... LANGUAGES C)` (docs/sdk.md, "C and other
 * languages").
 */
#ifndef WK_PLUGIN_H
#define WK_PLUGIN_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wk_abi.h"

#define WKP_STR_(x) #x
#define WKP_XSTR_(x) WKP_STR_(x)

/* Shown by `worker plugins check` as "built ..."; define it before including to say more. */
#ifndef WKP_BUILD_INFO
#if defined(__clang__)
#define WKP_BUILD_INFO \
  "wk_plugin.h " WKP_XSTR_(WK_ABI_MAJOR) "." WKP_XSTR_(WK_ABI_MINOR) " (C) / clang " __clang_version__
#elif defined(__GNUC__)
#define WKP_BUILD_INFO \
  "wk_plugin.h " WKP_XSTR_(WK_ABI_MAJOR) "." WKP_XSTR_(WK_ABI_MINOR) " (C) / gcc " __VERSION__
#else
#define WKP_BUILD_INFO "wk_plugin.h " WKP_XSTR_(WK_ABI_MAJOR) "." WKP_XSTR_(WK_ABI_MINOR) " (C)"
#endif
#endif

#if defined(__GNUC__)
#define WKP_PRINTF_(fmt, first) __attribute__((format(printf, fmt, first)))
/* sizeof(handlers) / sizeof(handlers[0]) of a pointer is 1, silently: refuse to compile instead. */
#define WKP_IS_POINTER_(a) __builtin_types_compatible_p(__typeof__(a), __typeof__(&(a)[0]))
#define WKP_NOT_A_POINTER_(a) \
  (0 * sizeof(struct { int wkp_handlers_must_be_an_array : WKP_IS_POINTER_(a) ? -1 : 1; }))
#else
#define WKP_PRINTF_(fmt, first)
#define WKP_NOT_A_POINTER_(a) 0
#endif

/* The size of the 1.0 host table: a host that passes less is not a 1.x host. */
#define WKP_HOST_API_V1_0_SIZE (offsetof(wk_host_api, result_write) + sizeof(void*))

/* ---------------------------------------------------------------------------------------------
 * Views. A plugin's views need not be NUL-terminated; these make them from C strings.
 */
static inline wk_str wkp_str_n(const char* ptr, size_t len) {
  wk_str s;
  s.ptr = ptr;
  s.len = ptr != NULL ? len : 0;
  return s;
}

static inline wk_str wkp_str(const char* text) { return wkp_str_n(text, text != NULL ? strlen(text) : 0); }

static inline wk_bytes wkp_bytes_n(const void* ptr, size_t len) {
  wk_bytes b;
  b.ptr = (const uint8_t*)ptr;
  b.len = ptr != NULL ? len : 0;
  return b;
}

static inline wk_bytes wkp_bytes(const char* text) {
  return wkp_bytes_n(text, text != NULL ? strlen(text) : 0);
}

static inline wk_kv wkp_kv(const char* key, const char* value) {
  wk_kv kv;
  kv.key = wkp_str(key);
  kv.value = wkp_str(value);
  return kv;
}

/* ---------------------------------------------------------------------------------------------
 * Fixed text buffers (rule O5): truncated, always NUL-terminated, never cut inside a UTF-8
 * sequence (the host puts this text into logs and asynq's JSON).
 */
static inline void wkp_copy_text(char* dst, size_t capacity, const char* src, size_t len) {
  size_t n;
  if (dst == NULL || capacity == 0) return;
  if (src == NULL) len = 0;
  n = len < capacity - 1 ? len : capacity - 1;
  if (n < len) {
    while (n > 0 && ((unsigned char)src[n] & 0xC0u) == 0x80u) --n;
  }
  if (n != 0) memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Fills the host's failure record and returns `disposition`, so a handler can
   `return wkp_fail(failure, WK_DISP_FAIL_NO_RETRY, "bad_payload", "...");`. The host allocates
   the record and sets its struct_size; WK_HAS keeps this right for any host. */
static inline wk_disposition wkp_fail(wk_failure* failure, wk_disposition disposition, const char* code,
                                      const char* message) {
  if (failure == NULL) return disposition;
  if (WK_HAS(wk_failure, failure, code))
    wkp_copy_text(failure->code, sizeof failure->code, code, code != NULL ? strlen(code) : 0);
  if (WK_HAS(wk_failure, failure, message))
    wkp_copy_text(failure->message, sizeof failure->message, message, message != NULL ? strlen(message) : 0);
  return disposition;
}

static inline wk_disposition wkp_failf(wk_failure* failure, wk_disposition disposition, const char* code,
                                       const char* format, ...) WKP_PRINTF_(4, 5);
static inline wk_disposition wkp_failf(wk_failure* failure, wk_disposition disposition, const char* code,
                                       const char* format, ...) {
  /* Larger than the record's field, so that wkp_copy_text, not vsnprintf, does the cutting. */
  char message[2 * sizeof(((wk_failure*)0)->message)];
  va_list args;
  va_start(args, format);
  if (vsnprintf(message, sizeof message, format, args) < 0) message[0] = '\0';
  va_end(args);
  return wkp_fail(failure, disposition, code, message);
}

/* WK_DISP_RETRY_AFTER: try again not before `delay_ms` from now (the host clamps it). */
static inline wk_disposition wkp_retry_after(wk_failure* failure, int64_t delay_ms, const char* code,
                                             const char* message) {
  if (failure != NULL && WK_HAS(wk_failure, failure, retry_after_ms)) failure->retry_after_ms = delay_ms;
  return wkp_fail(failure, WK_DISP_RETRY_AFTER, code, message);
}

/* Acknowledges a cancellation the handler observed (is_cancelled, wait_cancelled or a host call
   returning WK_E_CANCELLED); the host decides between requeue and failure from its reason. */
static inline wk_disposition wkp_cancelled(wk_failure* failure, int32_t reason) {
  const char* why = reason == WK_CANCEL_SHUTDOWN     ? "cancelled: worker shutting down"
                    : reason == WK_CANCEL_DEADLINE   ? "cancelled: deadline exceeded"
                    : reason == WK_CANCEL_REQUESTED  ? "cancelled: requested"
                    : reason == WK_CANCEL_LEASE_LOST ? "cancelled: lease lost"
                                                     : "cancelled";
  return wkp_fail(failure, WK_DISP_CANCELLED, "cancelled", why);
}

/* Fills the caller's wk_error (init's `err`) and returns `status`. */
static inline wk_status wkp_error(wk_error* err, wk_status status, const char* code, const char* message) {
  if (err == NULL) return status;
  if (WK_HAS(wk_error, err, status)) err->status = status;
  if (WK_HAS(wk_error, err, code))
    wkp_copy_text(err->code, sizeof err->code, code, code != NULL ? strlen(code) : 0);
  if (WK_HAS(wk_error, err, message))
    wkp_copy_text(err->message, sizeof err->message, message, message != NULL ? strlen(message) : 0);
  return status;
}

/* Call first in init(): after it returns WK_OK every 1.0 function of the table may be used
   without WK_HAS_FN. */
static inline wk_status wkp_check_host(const wk_host_api* host, wk_error* err) {
  if (host == NULL || host->abi_major != WK_ABI_MAJOR || host->struct_size < WKP_HOST_API_V1_0_SIZE)
    return wkp_error(err, WK_E_UNSUPPORTED, "plugin.abi", "the host does not provide the wk ABI 1.x table");
  return WK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Host calls. `ctx` is the plugin ctx (init, threads until shutdown) or the task ctx (run).
 */

/* Logging never fails a task: these return nothing. The host copies the text (O4). */
static inline void wkp_log_kv(const wk_host_api* host, wk_ctx* ctx, int32_t level, const char* message,
                              const wk_kv* fields, size_t field_count) {
  if (host == NULL || host->log == NULL) return;
  host->log(ctx, level, wkp_str(message), fields, fields != NULL ? field_count : 0);
}

static inline void wkp_log(const wk_host_api* host, wk_ctx* ctx, int32_t level, const char* message) {
  wkp_log_kv(host, ctx, level, message, NULL, 0);
}

static inline void wkp_logf(const wk_host_api* host, wk_ctx* ctx, int32_t level, const char* format, ...)
    WKP_PRINTF_(4, 5);
static inline void wkp_logf(const wk_host_api* host, wk_ctx* ctx, int32_t level, const char* format, ...) {
  char message[1024];
  va_list args;
  /* Formatting a line the host would drop is wasted work on a hot path. */
  if (host == NULL || host->log == NULL || (host->log_enabled != NULL && !host->log_enabled(ctx, level)))
    return;
  va_start(args, format);
  if (vsnprintf(message, sizeof message, format, args) < 0) message[0] = '\0';
  va_end(args);
  wkp_log_kv(host, ctx, level, message, NULL, 0);
}

/* The setting `key`, or `fallback` when it is unset. The host's value is NUL-terminated and
   lives until shutdown() returns (O3), so .ptr may be kept and used as a C string. */
static inline wk_str wkp_config(const wk_host_api* host, wk_ctx* ctx, const char* key, const char* fallback) {
  wk_str value;
  if (host != NULL && host->config_get != NULL && host->config_get(ctx, wkp_str(key), &value) == WK_OK)
    return value;
  return wkp_str(fallback);
}

/* Writes the task's result (asynq's `result` field), replacing an earlier one. Task ctx only. */
static inline wk_status wkp_result(const wk_host_api* host, wk_ctx* task, const void* data, size_t len) {
  if (host == NULL || host->result_write == NULL) return WK_E_UNSUPPORTED;
  return host->result_write(task, wkp_bytes_n(data, len), 0);
}

static inline wk_status wkp_result_text(const wk_host_api* host, wk_ctx* task, const char* text) {
  return wkp_result(host, task, text, text != NULL ? strlen(text) : 0);
}

/* WK_CANCEL_NONE (0) while the task may go on, else the reason. Lock-free: call it often. */
static inline int32_t wkp_is_cancelled(const wk_host_api* host, wk_ctx* task) {
  if (host == NULL || host->is_cancelled == NULL) return WK_CANCEL_NONE;
  return host->is_cancelled(task);
}

/* ---------------------------------------------------------------------------------------------
 * The entry. A handler table is a static array of WKP_HANDLER / WKP_HANDLER_EX; WKP_PLUGIN
 * (once per plugin, at file scope) makes the static entry and defines the exported getter with
 * default visibility, so it survives -fvisibility=hidden. The host copies both at load (O6).
 */
#define WKP_HANDLER_EX(TYPE, RUN, DESCRIPTION, FLAGS, MAX_CONCURRENCY, TIMEOUT_MS, ON_CANCEL)               \
  {                                                                                                         \
    .struct_size = (uint32_t)sizeof(wk_handler_desc), .flags = (FLAGS), .task_type = (TYPE),                \
    .description = (DESCRIPTION), .max_concurrency = (MAX_CONCURRENCY), .default_timeout_ms = (TIMEOUT_MS), \
    .run = (RUN), .on_cancel = (ON_CANCEL)                                                                  \
  }

#define WKP_HANDLER(TYPE, RUN, DESCRIPTION) WKP_HANDLER_EX(TYPE, RUN, DESCRIPTION, 0u, 0u, 0u, NULL)

/* FLAGS: WK_PLUGIN_*; MIN_HOST_MINOR: the lowest host minor with everything the plugin cannot do
   without (0 for a 1.0 plugin). SHUTDOWN may be NULL. */
#define WKP_PLUGIN_EX(ID, VERSION, HANDLERS, INIT, SHUTDOWN, FLAGS, MIN_HOST_MINOR)                         \
  static const wk_plugin_entry wkp_plugin_entry_ = {                                                        \
      .magic = WK_ENTRY_MAGIC,                                                                              \
      .struct_size = (uint32_t)sizeof(wk_plugin_entry),                                                     \
      .abi_major = WK_ABI_MAJOR,                                                                            \
      .abi_minor = WK_ABI_MINOR,                                                                            \
      .min_host_minor = (MIN_HOST_MINOR),                                                                   \
      .reserved0 = 0,                                                                                       \
      .flags = (FLAGS),                                                                                     \
      .reserved1 = 0,                                                                                       \
      .plugin_id = (ID),                                                                                    \
      .plugin_version = (VERSION),                                                                          \
      .build_info = WKP_BUILD_INFO,                                                                         \
      .handlers = (HANDLERS),                                                                               \
      .handler_count = (uint32_t)(sizeof(HANDLERS) / sizeof((HANDLERS)[0]) + WKP_NOT_A_POINTER_(HANDLERS)), \
      .handler_stride = (uint32_t)sizeof(wk_handler_desc),                                                  \
      .init = (INIT),                                                                                       \
      .shutdown = (SHUTDOWN),                                                                               \
      .get_extension = NULL};                                                                               \
  WK_EXPORT const wk_plugin_entry* WK_CALL wk_plugin_entry_v1(void);                                        \
  WK_EXPORT const wk_plugin_entry* WK_CALL wk_plugin_entry_v1(void) { return &wkp_plugin_entry_; }

#define WKP_PLUGIN(ID, VERSION, HANDLERS, INIT, SHUTDOWN) \
  WKP_PLUGIN_EX(ID, VERSION, HANDLERS, INIT, SHUTDOWN, 0u, 0u)

#endif /* WK_PLUGIN_H */
