#!/usr/bin/env bash
# Compiles wk_abi.h as C99/C11/C17 and C++11/14/17/20, and wk_sdk.hpp as C++17/20, with
# -Wall -Wextra -pedantic -Werror (plus -Wpadded for the C ABI header), with every compiler given.
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
