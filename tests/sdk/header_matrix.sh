#!/usr/bin/env bash
# Compiles wk_abi.h as C99/C11/C17 and C++11/14/17/20, wk_sdk.hpp as C++17/20 and wk_plugin.h
# (a whole plugin using every helper) as C99/C11/C17, with -Wall -Wextra -pedantic -Werror (plus
# -Wpadded for the C ABI header, and the warnings C plugin authors commonly turn on for
# wk_plugin.h), with every compiler given.
# The build already does this for the project's compiler; this covers the other one (clang).
# Usage: header_matrix.sh <sdk include dir> <c compiler>:<c++ compiler>...
set -euo pipefail
include_dir=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '#include "wk_abi.h"\nint wk_matrix_probe(const wk_host_api *api);\nint wk_matrix_probe(const wk_host_api *api) { return WK_HAS_FN(wk_host_api, api, result_write); }\n' >"$work/abi.c"
cp "$work/abi.c" "$work/abi.cpp"
printf '#include "wk_sdk.hpp"\nclass P { public: wk::Outcome run(wk::TaskContext&, const wk::Task&) { return wk::Outcome::ok(); } };\nWK_PLUGIN_BEGIN(P, "t.matrix", "1")\nWK_HANDLER("t:run", &P::run)\nWK_PLUGIN_END()\n' >"$work/sdk.cpp"

# wk_plugin.h: every helper and both entry macros, the way a plugin uses them.
cat >"$work/plugin.c" <<'EOF_PLUGIN'
#include "wk_plugin.h"

static const wk_host_api* matrix_host;

static wk_status WK_CALL matrix_init(const wk_host_api* host, wk_ctx* ctx, wk_plugin_state** state, wk_error* err) {
  const wk_status status = wkp_check_host(host, err);
  if (status != WK_OK) return status;
  matrix_host = host;
  *state = NULL;
  if (wkp_config(host, ctx, "MATRIX", "x").len == 0) return wkp_error(err, WK_E_INVALID, "config", "empty");
  wkp_log(host, ctx, WK_LOG_INFO, "loaded");
  return WK_OK;
}

static wk_disposition WK_CALL matrix_run(wk_plugin_state* state, wk_ctx* task, const wk_task_view* t,
                                         wk_failure* failure) {
  const wk_kv fields[1] = {{{"k", 1}, {"v", 1}}};
  wk_kv kv = wkp_kv("key", "value");
  wk_bytes b = wkp_bytes("x");
  wk_str s = wkp_str_n("abc", 2);
  char buffer[4];
  (void)state;
  wkp_copy_text(buffer, sizeof buffer, s.ptr, s.len);
  wkp_log_kv(matrix_host, task, WK_LOG_DEBUG, "fields", fields, 1);
  wkp_log_kv(matrix_host, task, WK_LOG_DEBUG, "kv", &kv, 1);
  wkp_logf(matrix_host, task, WK_LOG_INFO, "%zu bytes, attempt %u", t->payload.len, (unsigned)t->attempt);
  if (wkp_is_cancelled(matrix_host, task) != WK_CANCEL_NONE) return wkp_cancelled(failure, WK_CANCEL_DEADLINE);
  if (wkp_result(matrix_host, task, b.ptr, b.len) != WK_OK) return wkp_fail(failure, WK_DISP_RETRY, "r", "m");
  if (wkp_result_text(matrix_host, task, wkp_str("t").ptr) != WK_OK)
    return wkp_failf(failure, WK_DISP_FAIL_NO_RETRY, "bad_payload", "%s at %d", "x", 1);
  return t->attempt > 3 ? wkp_retry_after(failure, 1000, "later", "try later") : WK_DISP_SUCCEEDED;
}

static void WK_CALL matrix_cancel(wk_plugin_state* state, wk_ctx* task) {
  (void)state;
  wkp_log(matrix_host, task, WK_LOG_INFO, "cancel");
}

static const wk_handler_desc matrix_handlers[] = {
    WKP_HANDLER("t:one", matrix_run, "one"),
    WKP_HANDLER_EX("t:two", matrix_run, "two", WK_HANDLER_IDEMPOTENT, 1u, 5000u, matrix_cancel),
};
WKP_PLUGIN_EX("t.matrix.c", "1", matrix_handlers, matrix_init, NULL, WK_PLUGIN_UNLOAD_SAFE, 0u)
EOF_PLUGIN
plugin_warnings=(-Wconversion -Wsign-conversion -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wcast-qual
  -Wformat=2 -Wundef -Wredundant-decls -fvisibility=hidden)

strict=(-Wall -Wextra -pedantic -Werror)
failures=0
checked=0
compile() {
  local what=$1
  shift
  checked=$((checked + 1))
  if ! "$@" -I"$include_dir" -c -o "$work/out.o" 2>"$work/err.txt"; then
    echo "FAIL: $what" >&2
    cat "$work/err.txt" >&2
    failures=$((failures + 1))
  else
    echo "ok:   $what"
  fi
}

for pair in "$@"; do
  cc=${pair%%:*}
  cxx=${pair##*:}
  if ! command -v "$cc" >/dev/null || ! command -v "$cxx" >/dev/null; then
    echo "FAIL: compiler $cc / $cxx not found" >&2
    exit 1
  fi
  for std in c99 c11 c17; do
    compile "$cc -std=$std wk_abi.h" "$cc" -std=$std "${strict[@]}" -Wpadded -x c "$work/abi.c"
  done
  for std in c99 c11 c17; do
    compile "$cc -std=$std wk_plugin.h" "$cc" -std=$std "${strict[@]}" "${plugin_warnings[@]}" -x c "$work/plugin.c"
  done
  for std in c++11 c++14 c++17 c++20; do
    compile "$cxx -std=$std wk_abi.h" "$cxx" -std=$std "${strict[@]}" -Wpadded -Wold-style-cast -x c++ "$work/abi.cpp"
  done
  for std in c++17 c++20; do
    compile "$cxx -std=$std wk_sdk.hpp" "$cxx" -std=$std "${strict[@]}" -Wshadow -Wold-style-cast \
      -Wnon-virtual-dtor -Woverloaded-virtual -fvisibility=hidden -x c++ "$work/sdk.cpp"
  done
done
echo "$checked compilations, $failures failed"
[[ $failures -eq 0 ]]
