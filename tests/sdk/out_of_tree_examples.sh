#!/usr/bin/env bash
# The C and Rust examples as their authors build them: install the "sdk" component of this build
# into a fresh prefix, build sdk/examples/hello_c against it with CMake (a LANGUAGES C project)
# and sdk/examples/hello_rust with cargo (skipped when there is no cargo), check each plugin's
# exports, and run each in the worker: `worker plugins check [--init]` and `worker exec`.
# What `worker exec` cannot give a handler (a payload that is not UTF-8, a task cancelled before
# it starts, a host table with a NULL function) goes through plugin_driver.c instead.
# Usage: out_of_tree_examples.sh <build dir> <sdk/examples dir> <c compiler> <c flags> <nm> [<worker>]
set -euo pipefail
build_dir=$1
examples=$2
cc=$3
c_flags=$4
nm_tool=$5
worker=${6:-}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Runs a command, keeping its exit status in $status and its stdout+stderr in $output.
run() {
  status=0
  output=$("$@" 2>&1) || status=$?
}

expect_status() {
  local want=$1 what=$2
  if [[ $status -ne $want ]]; then
    echo "$output" >&2
    fail "$what exited with $status, expected $want"
  fi
}

expect_line() {
  local pattern=$1 what=$2
  if ! grep -qE -- "$pattern" <<<"$output"; then
    echo "$output" >&2
    fail "$what: no line matches /$pattern/"
  fi
}

# A plugin directory the loader accepts: fresh, mode 0700, holding a regular file (never a
# symlink) that neither group nor others can write.
plugin_dir_with() {
  local dir=$1 file=$2 name=$3
  mkdir -p "$dir"
  chmod 0700 "$dir"
  cp "$file" "$dir/$name"
  chmod 0700 "$dir/$name"
}

# worker plugins check, and with --init (runs init() in a runner) when this worker has it.
check_in_worker() {
  local file=$1 task_type=$2
  run "$worker" plugins check "$file"
  echo "$output"
  expect_status 0 "worker plugins check $file"
  expect_line ": OK$" "worker plugins check $file"
  expect_line "handler $task_type" "worker plugins check $file"
  if [[ $has_init_check -eq 1 ]]; then
    run "$worker" plugins check --init "$file"
    echo "$output"
    expect_status 0 "worker plugins check --init $file"
    expect_line ": init OK$" "worker plugins check --init $file"
  fi
}

echo "== install the sdk component into $prefix"
cmake --install "$build_dir" --component sdk --prefix "$prefix" >/dev/null
for f in include/wk/wk_abi.h include/wk/wk_plugin.h; do
  [[ -f "$prefix/$f" ]] || fail "$f was not installed"
done

echo "== build plugin_driver against the installed wk_abi.h"
read -r -a c_flag_words <<<"$c_flags"
"$cc" -std=c11 -Wall -Wextra -Werror "${c_flag_words[@]}" -I"$prefix/include/wk" "$here/plugin_driver.c" \
  -o "$work/plugin_driver" -ldl
driver=$work/plugin_driver

has_init_check=0
if [[ -n "$worker" ]]; then
  # Captured first: grep -q closing the pipe early would fail the pipeline under pipefail.
  check_help=$("$worker" plugins check --help 2>&1 || true)
  if grep -q -- '--init' <<<"$check_help"; then has_init_check=1; fi
fi

# --- C --------------------------------------------------------------------------------------
echo "== hello_c: configure and build out of tree (project LANGUAGES C, wk_add_plugin)"
# Same compiler and flags as this build, so that a sanitizer host can load the plugin; -Werror
# because the example must stay warning-free with its -Wall -Wextra -Wpedantic.
cmake -S "$examples/hello_c" -B "$work/build_c" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$c_flags -Werror"
cmake --build "$work/build_c"
c_plugin=$work/build_c/plugins/hello_c.so
[[ -f "$c_plugin" ]] || fail "$c_plugin was not built"
"$here/check_exports.sh" "$nm_tool" "$c_plugin"

echo "== hello_c: a task already cancelled is acknowledged (plugin_driver)"
printf 'one\ntwo\n' >"$work/two_lines"
run "$driver" "$c_plugin" example.c:count "$work/two_lines" --cancelled
echo "$output"
expect_status 0 "plugin_driver (hello_c, cancelled)"
expect_line "^disposition: cancelled$" "hello_c, cancelled"
expect_line "^message: cancelled: requested$" "hello_c, cancelled"
if grep -q '^result:' <<<"$output"; then fail "hello_c wrote a result for a cancelled task"; fi

if [[ -n "$worker" ]]; then
  c_dir=$work/plugins_c
  plugin_dir_with "$c_dir" "$c_plugin" hello_c.so
  check_in_worker "$c_dir/hello_c.so" example.c:count

  echo "== hello_c: worker exec counts bytes and lines"
  # Raw newlines are JSON whitespace: 9 bytes, two newlines, a last line without one.
  run "$worker" exec --plugins "$c_dir" --type example.c:count --payload $'[1,\n2,\n3]'
  echo "$output"
  expect_status 0 "worker exec example.c:count"
  expect_line "^disposition: succeeded$" "example.c:count"
  expect_line '^result: \{"label":"count","bytes":9,"lines":3\}$' "example.c:count"
  expect_line 'counted.*bytes=9' "example.c:count (its log line)"

  echo "== hello_c: COUNT_LABEL from the environment, escaped into the JSON result"
  run env COUNT_LABEL='say "hi"' "$worker" exec --plugins "$c_dir" --type example.c:count --payload '{}'
  echo "$output"
  expect_status 0 "worker exec with COUNT_LABEL"
  expect_line '^result: \{"label":"say \\"hi\\"","bytes":2,"lines":1\}$' "COUNT_LABEL did not reach the result"

  echo "== hello_c: a COUNT_LABEL it refuses fails init, with the reason"
  if [[ $has_init_check -eq 1 ]]; then
    run env COUNT_LABEL="$(printf 'x%.0s' {1..65})" "$worker" plugins check --init "$c_dir/hello_c.so"
    echo "$output"
    expect_status 1 "worker plugins check --init with a 65-byte COUNT_LABEL"
    expect_line "init FAILED: .*COUNT_LABEL must be 1 to 64 bytes long" "a 65-byte COUNT_LABEL"
  fi
else
  echo "== no worker binary in this build: hello_c built and checked only"
fi

# --- Rust -----------------------------------------------------------------------------------
cargo=""
for candidate in "$(command -v cargo || true)" "${CARGO_HOME:+$CARGO_HOME/bin/cargo}" \
  "${HOME:+$HOME/.cargo/bin/cargo}" /root/.cargo/bin/cargo; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then
    cargo=$candidate
    break
  fi
done
if [[ -z "$cargo" ]]; then
  echo "== hello_rust: skipped: no cargo (looked in PATH, \$CARGO_HOME/bin, ~/.cargo/bin, /root/.cargo/bin)"
  echo "OK: out-of-tree C example ran in the worker (Rust skipped)"
  exit 0
fi

echo "== hello_rust: cargo build --release --offline ($cargo)"
# rustup's cargo finds rustc next to itself; the target directory stays out of the source tree.
PATH="$(dirname "$cargo"):$PATH" CARGO_TARGET_DIR="$work/cargo-target" \
  "$cargo" build --release --offline --manifest-path "$examples/hello_rust/Cargo.toml"
rust_built=$work/cargo-target/release/libhello_rust.so
[[ -f "$rust_built" ]] || fail "$rust_built was not built"
rust_plugin=$work/hello_rust.so
cp "$rust_built" "$rust_plugin"
"$here/check_exports.sh" "$nm_tool" "$rust_plugin"

echo "== hello_rust: a payload that is not UTF-8 fails permanently (plugin_driver)"
printf 'ab\377cd' >"$work/not_utf8"
run "$driver" "$rust_plugin" example.rust:reverse "$work/not_utf8"
echo "$output"
expect_status 0 "plugin_driver (hello_rust, not UTF-8)"
expect_line "^disposition: fail_no_retry$" "hello_rust, not UTF-8"
expect_line "^code: bad_payload$" "hello_rust, not UTF-8"
expect_line "^message: payload is not UTF-8: .*index 2" "hello_rust, not UTF-8"

echo "== hello_rust: a panic is caught at the boundary and becomes a retry (plugin_driver)"
printf 'abc' >"$work/abc"
run "$driver" "$rust_plugin" example.rust:reverse "$work/abc" --no-result-write
echo "$output"
expect_status 0 "plugin_driver (hello_rust, panicking) - a panic crossed the boundary and aborted"
expect_line "^disposition: retry$" "hello_rust, panicking"
expect_line "^code: panic$" "hello_rust, panicking"
expect_line "^message: panicked: the host table has no result_write$" "hello_rust, panicking"

if [[ -n "$worker" ]]; then
  rust_dir=$work/plugins_rust
  plugin_dir_with "$rust_dir" "$rust_plugin" hello_rust.so
  check_in_worker "$rust_dir/hello_rust.so" example.rust:reverse

  echo "== hello_rust: worker exec reverses the payload by characters"
  run "$worker" exec --plugins "$rust_dir" --type example.rust:reverse --payload '"héllo, wörld ✓"'
  echo "$output"
  expect_status 0 "worker exec example.rust:reverse"
  expect_line "^disposition: succeeded$" "example.rust:reverse"
  expect_line '^result: "✓ dlröw ,olléh"$' "example.rust:reverse"
  expect_line 'reversed.*chars=16' "example.rust:reverse (its log line)"
else
  echo "== no worker binary in this build: hello_rust built and checked only"
fi
echo "OK: out-of-tree C and Rust examples ran in the worker"
