#!/usr/bin/env bash
# The SDK as a third party gets it: install the "sdk" component of this build into a fresh
# prefix, build sdk/examples/hello against it with find_package(WorkerSDK), check the plugin's
# exports, and, when a worker binary is given, run the plugin in it.
# Usage: out_of_tree.sh <build dir> <hello source dir> <c++ compiler> <c++ flags> <nm> [<worker>]
set -euo pipefail
build_dir=$1
hello_src=$2
cxx=$3
cxx_flags=$4
nm_tool=$5
worker=${6:-}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

echo "== install the sdk component into $prefix"
cmake --install "$build_dir" --component sdk --prefix "$prefix"
for f in include/wk/wk_abi.h include/wk/wk_sdk.hpp include/wk/wk_payload.hpp; do
  [[ -f "$prefix/$f" ]] || { echo "FAIL: $f was not installed" >&2; exit 1; }
done
package_dir=$(dirname "$(find "$prefix" -name WorkerSDKConfig.cmake | head -n1)")
for f in WorkerSDKConfig.cmake WorkerSDKConfigVersion.cmake WorkerSDKTargets.cmake WorkerSDKPayloadTargets.cmake \
  WorkerSDKPlugin.cmake wk_plugin.map; do
  [[ -f "$package_dir/$f" ]] || { echo "FAIL: $f missing from the installed package ($package_dir)" >&2; exit 1; }
done
# Nothing of the host may ship in the sdk component.
if find "$prefix" -type f \( -name '*.a' -o -name '*.so' -o -perm -u+x \) | grep -q .; then
  echo "FAIL: the sdk component installs binaries:" >&2
  find "$prefix" -type f \( -name '*.a' -o -name '*.so' -o -perm -u+x \) >&2
  exit 1
fi

echo "== configure and build the example out of tree"
# Same compiler and flags as this build, so that a sanitizer host can load the plugin.
cmake -S "$hello_src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$cxx_flags"
cmake --build "$work/build"
plugin=$work/build/plugins/hello.so
[[ -f "$plugin" ]] || { echo "FAIL: $plugin was not built" >&2; exit 1; }
"$here/check_exports.sh" "$nm_tool" "$plugin"

if [[ -z "$worker" ]]; then
  echo "== no worker binary in this build: built and checked only"
  exit 0
fi

echo "== run it in $worker"
output=$("$worker" exec --plugins "$work/build/plugins" --type hello:greet --payload '{"name":"ci"}' 2>&1) || {
  echo "FAIL: worker exec exited with $?:" >&2
  echo "$output" >&2
  exit 1
}
echo "$output"
grep -q 'hello, ci' <<<"$output" || { echo "FAIL: the output lacks the result 'hello, ci'" >&2; exit 1; }
grep -q 'succeeded' <<<"$output" || { echo "FAIL: the output does not say 'succeeded'" >&2; exit 1; }

echo "== its own setting from the environment (config_get sees variables without a host prefix)"
output=$(HELLO_GREETING=hi "$worker" exec --plugins "$work/build/plugins" --type hello:greet --payload '{"name":"ci"}' 2>&1) || {
  echo "FAIL: worker exec with HELLO_GREETING exited with $?:" >&2
  echo "$output" >&2
  exit 1
}
grep -q 'hi, ci' <<<"$output" || { echo "FAIL: HELLO_GREETING=hi did not reach the plugin:" >&2; echo "$output" >&2; exit 1; }

echo "== a malformed payload through the payload helper is a permanent failure (bad_payload)"
status=0
output=$("$worker" exec --plugins "$work/build/plugins" --type hello:greet --payload '{"name":5}' 2>&1) || status=$?
echo "$output"
[[ $status -eq 1 ]] || { echo "FAIL: worker exec exited with $status, expected 1 (task failed)" >&2; exit 1; }
grep -q 'disposition: fail_no_retry' <<<"$output" || { echo "FAIL: not a permanent failure" >&2; exit 1; }
grep -q 'bad_payload' <<<"$output" || { echo "FAIL: the error lacks the code bad_payload" >&2; exit 1; }
grep -q 'name: must be a string' <<<"$output" || { echo "FAIL: the error does not name the field" >&2; exit 1; }

if [[ -n "${WK_TEST_REDIS_PORT:-}" ]]; then
  echo "== the same task in a serving worker on Redis: archived after its first attempt"
  queue="sdk-out-of-tree-$$"
  export REDIS_HOST=${WK_TEST_REDIS_HOST:-127.0.0.1} REDIS_PORT=$WK_TEST_REDIS_PORT
  export REDIS_DB=${WK_TEST_REDIS_DB:-0} REDIS_PASSWORD=${WK_TEST_REDIS_PASSWORD:-}
  export DB_HOST=${WK_TEST_PG_HOST:-127.0.0.1} DB_PORT=${WK_TEST_PG_PORT:-5432}
  export DB_USERNAME=${WK_TEST_PG_USER:-postgres} DB_NAME=${WK_TEST_PG_DB:-autodevs}
  id=$("$worker" enqueue --type hello:greet --queue "$queue" --payload '{"name":5}')
  WORKER_QUEUES="$queue=1" WORKER_METRICS_ADDR= WORKER_CONCURRENCY=1 \
    "$worker" --plugins "$work/build/plugins" >"$work/serve.log" 2>&1 &
  serve_pid=$!
  archived=""
  for _ in $(seq 200); do
    shown=$("$worker" tasks show --queue "$queue" --json "$id" 2>/dev/null || true)
    if grep -q '"state": *"archived"' <<<"$shown"; then archived=$shown; break; fi
    sleep 0.05
  done
  kill -TERM "$serve_pid"; wait "$serve_pid" || true
  [[ -n "$archived" ]] || { echo "FAIL: task $id not archived; worker log:" >&2; cat "$work/serve.log" >&2; exit 1; }
  echo "$archived"
  grep -q '"retried": *0' <<<"$archived" || { echo "FAIL: the archived task counts a retry" >&2; exit 1; }
  grep -q 'bad_payload' <<<"$archived" || { echo "FAIL: the archived task's error lacks bad_payload" >&2; exit 1; }
  "$worker" tasks delete --queue "$queue" "$id" >/dev/null
fi
echo "OK: out-of-tree plugin ran in the worker"
