/* Runs one handler of a plugin through the C ABI with a minimal host table, for what `worker exec`
   cannot produce: a payload that is not UTF-8 (its --payload must be JSON), a task that is
   already cancelled, and a host table with a NULL 1.0 function (a broken host, which a real
   worker never is, used to make a plugin panic on purpose). out_of_tree_examples.sh compiles it
   against the installed wk_abi.h and reads its output: "key: value" lines like worker exec's.
   Usage: plugin_driver <plugin.so> <task type> <payload file> [--cancelled] [--no-result-write] */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wk_abi.h"

static int32_t cancel_reason = WK_CANCEL_NONE;
static char result[4096];
static size_t result_len;
static int have_result;

/* Distinct addresses for the two kinds of ctx; the plugin never looks inside. */
static char plugin_ctx_storage, task_ctx_storage;

static void WK_CALL host_log(wk_ctx* ctx, int32_t level, wk_str message, const wk_kv* fields, size_t count) {
  size_t i;
  printf("log: level=%d msg=\"%.*s\"", (int)level, (int)message.len, message.ptr);
  for (i = 0; fields != NULL && i < count; ++i) {
    printf(" %.*s=%.*s", (int)fields[i].key.len, fields[i].key.ptr, (int)fields[i].value.len,
           fields[i].value.ptr);
  }
  printf("%s\n", ctx == (wk_ctx*)&task_ctx_storage ? " (task ctx)" : "");
}

static int32_t WK_CALL host_log_enabled(wk_ctx* ctx, int32_t level) {
  (void)ctx;
  (void)level;
  return 1;
}

/* The environment, as the worker's settings snapshot would give it. getenv's text lives until
   the process ends, which covers O3. */
static wk_status WK_CALL host_config_get(wk_ctx* ctx, wk_str key, wk_str* out) {
  char name[256];
  const char* value;
  (void)ctx;
  if (out == NULL || key.ptr == NULL || key.len >= sizeof name) return WK_E_INVALID;
  memcpy(name, key.ptr, key.len);
  name[key.len] = '\0';
  value = getenv(name);
  if (value == NULL) return WK_E_NOT_FOUND;
  out->ptr = value;
  out->len = strlen(value);
  return WK_OK;
}

static int32_t WK_CALL host_is_cancelled(wk_ctx* task) {
  (void)task;
  return cancel_reason;
}

static wk_status WK_CALL host_result_write(wk_ctx* task, wk_bytes data, uint32_t flags) {
  (void)task;
  (void)flags;
  if (data.len > sizeof result) return WK_E_TOO_LARGE;
  if (data.len != 0) memcpy(result, data.ptr, data.len);
  result_len = data.len;
  have_result = 1;
  return WK_OK;
}

static const char* disposition_name(wk_disposition d) {
  switch (d) {
    case WK_DISP_SUCCEEDED:
      return "succeeded";
    case WK_DISP_RETRY:
      return "retry";
    case WK_DISP_RETRY_AFTER:
      return "retry_after";
    case WK_DISP_FAIL_NO_RETRY:
      return "fail_no_retry";
    case WK_DISP_CANCELLED:
      return "cancelled";
    default:
      return "invalid";
  }
}

static int usage_error(const char* what) {
  fprintf(stderr, "plugin_driver: %s\n", what);
  return 2;
}

/* The whole file: a payload is bytes, NULs and invalid UTF-8 included. */
static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  size_t used = 0, capacity = 0, n;
  if (f == NULL) return NULL;
  do {
    if (used == capacity) {
      unsigned char* bigger = realloc(data, capacity = capacity * 2 + 4096);
      if (bigger == NULL) break;
      data = bigger;
    }
    n = fread(data + used, 1, capacity - used, f);
    used += n;
  } while (n != 0);
  fclose(f);
  *size = used;
  return data;
}

int main(int argc, char** argv) {
  wk_host_api host;
  const wk_plugin_entry* entry;
  wk_plugin_entry_fn get_entry;
  const wk_handler_desc* handler = NULL;
  wk_plugin_state* state = NULL;
  wk_error err;
  wk_failure failure;
  wk_task_view view;
  wk_disposition disposition;
  void *library, *symbol;
  unsigned char* payload;
  size_t payload_size = 0;
  uint32_t i;
  int arg;

  if (argc < 4) return usage_error("usage: plugin_driver <plugin.so> <task type> <payload file> [options]");
  memset(&host, 0, sizeof host);
  host.struct_size = (uint32_t)sizeof host;
  host.abi_major = WK_ABI_MAJOR;
  host.abi_minor = WK_ABI_MINOR;
  host.host_name = "plugin_driver";
  host.host_version = "test";
  host.log_enabled = host_log_enabled;
  host.log = host_log;
  host.config_get = host_config_get;
  host.is_cancelled = host_is_cancelled;
  host.result_write = host_result_write;
  for (arg = 4; arg < argc; ++arg) {
    if (strcmp(argv[arg], "--cancelled") == 0) {
      cancel_reason = WK_CANCEL_REQUESTED;
    } else if (strcmp(argv[arg], "--no-result-write") == 0) {
      host.result_write = NULL;
    } else {
      return usage_error("unknown option");
    }
  }
  payload = read_file(argv[3], &payload_size);
  if (payload == NULL) return usage_error("cannot read the payload file");

  library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) return usage_error(dlerror());
  symbol = dlsym(library, WK_PLUGIN_ENTRY_SYMBOL_V1);
  if (symbol == NULL) return usage_error("no wk_plugin_entry_v1");
  /* ISO C has no conversion from an object pointer to a function pointer; POSIX guarantees the
     representation is the same. */
  memcpy(&get_entry, &symbol, sizeof get_entry);
  entry = get_entry();
  if (entry == NULL || entry->magic != WK_ENTRY_MAGIC || entry->abi_major != WK_ABI_MAJOR ||
      entry->struct_size < sizeof *entry || entry->handler_stride < sizeof *handler || entry->init == NULL)
    return usage_error("the entry is not a valid ABI 1.0 entry");
  for (i = 0; i < entry->handler_count; ++i) {
    const wk_handler_desc* h = (const wk_handler_desc*)(const void*)((const char*)entry->handlers +
                                                                     (size_t)i * entry->handler_stride);
    if (h->task_type != NULL && strcmp(h->task_type, argv[2]) == 0) handler = h;
  }
  if (handler == NULL || handler->run == NULL)
    return usage_error("the plugin has no handler for this task type");

  memset(&err, 0, sizeof err);
  err.struct_size = (uint32_t)sizeof err;
  if (entry->init(&host, (wk_ctx*)&plugin_ctx_storage, &state, &err) != WK_OK) {
    printf("init: failed status=%d code=%s message=%s\n", (int)err.status, err.code, err.message);
    return 1;
  }

  memset(&view, 0, sizeof view);
  view.struct_size = (uint32_t)sizeof view;
  view.attempt = 1;
  view.max_retry = 25;
  view.id.ptr = "plugin-driver-task";
  view.id.len = strlen(view.id.ptr);
  view.type.ptr = argv[2];
  view.type.len = strlen(argv[2]);
  view.queue.ptr = "default";
  view.queue.len = strlen(view.queue.ptr);
  view.payload.ptr = payload;
  view.payload.len = payload_size;
  memset(&failure, 0, sizeof failure);
  failure.struct_size = (uint32_t)sizeof failure;

  disposition = handler->run(state, (wk_ctx*)&task_ctx_storage, &view, &failure);
  failure.code[sizeof failure.code - 1] = '\0';
  failure.message[sizeof failure.message - 1] = '\0';
  printf("disposition: %s\n", disposition_name(disposition));
  if (disposition != WK_DISP_SUCCEEDED) printf("code: %s\nmessage: %s\n", failure.code, failure.message);
  if (have_result) printf("result: %.*s\n", (int)result_len, result);
  if (entry->shutdown != NULL) entry->shutdown(state);
  /* No dlclose: a plugin that is not unload-safe (WK_PLUGIN_UNLOAD_SAFE) may not be unloaded. */
  free(payload);
  return 0;
}
