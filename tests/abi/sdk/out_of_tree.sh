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
for f in include/wk/wk_abi.h include/wk/wk_sdk.hpp; do
  [[ -f "$prefix/$f" ]] || { echo "FAIL: $f was not installed" >&2; exit 1; }
done
package_dir=$(dirname "$(find "$prefix" -name WorkerSDKConfig.cmake | head -n1)")
for f in WorkerSDKConfig.cmake WorkerSDKConfigVersion.cmake WorkerSDKTargets.cmake WorkerSDKPlugin.cmake \
  wk_plugin.map; do
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
echo "OK: out-of-tree plugin ran in the worker"
