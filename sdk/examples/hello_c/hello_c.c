/* hello_c: a worker plugin written in C with wk_plugin.h. Task type "example.c:count": counts
   the bytes and lines of the payload and writes {"label":"<label>","bytes":N,"lines":M} as the
   task's result. The label is the setting COUNT_LABEL (default "count"), read once at load. */
#include <stdlib.h>
#include <wk_plugin.h>

/* The label goes into every result; a bound keeps the result in a fixed buffer, and a typo
   that pastes something huge fails the load instead of every task. */
#define COUNT_LABEL_MAX 64
/* Bytes counted between two looks at is_cancelled: a few hundred microseconds of work, so a
   cancelled task stops at once while the check itself costs nothing. */
#define COUNT_CHUNK ((size_t)64 * 1024)

typedef struct counter {
  const wk_host_api* host;
  /* Escaped once at load; \u00XX is the longest escape, six bytes per input byte. */
  char label_json[COUNT_LABEL_MAX * 6 + 1];
} counter;

/* The label comes from the environment: quotes, backslashes and control characters must not
   break the JSON result. */
static void json_escape(char* out, wk_str text) {
  static const char hex[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < text.len; ++i) {
    const unsigned char ch = (unsigned char)text.ptr[i];
    if (ch == '"' || ch == '\\') {
      *out++ = '\\';
      *out++ = (char)ch;
    } else if (ch < 0x20u) {
      memcpy(out, "\\u00", 4);
      out[4] = hex[ch >> 4];
      out[5] = hex[ch & 0xFu];
      out += 6;
    } else {
      *out++ = (char)ch;
    }
  }
  *out = '\0';
}

static wk_status WK_CALL count_init(const wk_host_api* host, wk_ctx* ctx, wk_plugin_state** out,
                                    wk_error* err) {
  counter* c;
  wk_str label;
  const wk_status status = wkp_check_host(host, err);
  if (status != WK_OK) return status;
  if (out == NULL) return wkp_error(err, WK_E_INVALID, "plugin.init", "no state out-pointer");
  label = wkp_config(host, ctx, "COUNT_LABEL", "count");
  if (label.len == 0 || label.len > COUNT_LABEL_MAX)
    return wkp_error(err, WK_E_INVALID, "config.invalid", "COUNT_LABEL must be 1 to 64 bytes long");
  /* Per load, not a global: a hot swap loads the new version while the old one still serves. */
  c = calloc(1, sizeof *c);
  if (c == NULL) return wkp_error(err, WK_E_NO_MEMORY, "out_of_memory", "no memory for the plugin state");
  c->host = host;
  json_escape(c->label_json, label);
  *out = (wk_plugin_state*)c;
  return WK_OK;
}

static void WK_CALL count_shutdown(wk_plugin_state* state) { free(state); }

static wk_disposition WK_CALL count_run(wk_plugin_state* state, wk_ctx* task, const wk_task_view* t,
                                        wk_failure* failure) {
  const counter* c = (const counter*)state;
  const unsigned char* payload;
  size_t len, done, lines = 0;
  char result[sizeof c->label_json + 96];
  char bytes_text[24], lines_text[24];
  wk_kv fields[2];
  wk_status status;
  int32_t reason;

  if (c == NULL || t == NULL)
    return wkp_fail(failure, WK_DISP_RETRY, "plugin.bad_call", "run() without state");
  payload = t->payload.ptr;
  len = t->payload.ptr != NULL ? t->payload.len : 0;
  for (done = 0; done < len;) {
    const size_t n = len - done < COUNT_CHUNK ? len - done : COUNT_CHUNK;
    const unsigned char* at = payload + done;
    const unsigned char* const end = at + n;
    reason = wkp_is_cancelled(c->host, task);
    if (reason != WK_CANCEL_NONE) return wkp_cancelled(failure, reason);
    while ((at = memchr(at, '\n', (size_t)(end - at))) != NULL) {
      ++lines;
      ++at;
    }
    done += n;
  }
  /* A last line without its newline is a line too (unlike `wc -l`). */
  if (len > 0 && payload[len - 1] != '\n') ++lines;

  snprintf(result, sizeof result, "{\"label\":\"%s\",\"bytes\":%zu,\"lines\":%zu}", c->label_json, len,
           lines);
  status = wkp_result_text(c->host, task, result);
  if (status == WK_E_CANCELLED) return wkp_cancelled(failure, wkp_is_cancelled(c->host, task));
  if (status != WK_OK)
    return wkp_failf(failure, WK_DISP_RETRY, "result_write", "the host refused the result (status %d)",
                     (int)status);

  snprintf(bytes_text, sizeof bytes_text, "%zu", len);
  snprintf(lines_text, sizeof lines_text, "%zu", lines);
  fields[0] = wkp_kv("bytes", bytes_text);
  fields[1] = wkp_kv("lines", lines_text);
  wkp_log_kv(c->host, task, WK_LOG_INFO, "counted", fields, 2);
  return WK_DISP_SUCCEEDED;
}

static const wk_handler_desc handlers[] = {
    WKP_HANDLER_EX("example.c:count", count_run, "counts the bytes and lines of the payload",
                   WK_HANDLER_IDEMPOTENT, 0u, 0u, NULL),
};

WKP_PLUGIN("dev.autodevs.example.hello-c", "1.0.0", handlers, count_init, count_shutdown)
