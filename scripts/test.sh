#!/usr/bin/env bash
# The one test command (README.md, docs/testing.md): installs what is missing, starts a private redis-server
# and PostgreSQL on free loopback ports with throw-away data directories, builds the asan preset,
# runs ctest (extra arguments are passed through, e.g. `-R config`), then scripts/lint.sh
# (clang-tidy with the asan build's compile database, clang-format check; WK_LINT=0 skips it),
# then the release build exactly as scripts/run-worker.sh makes it (the README's other command;
# optimised builds warn differently; WK_RELEASE_BUILD=0 skips it), and stops what it started.
# Exit status: non-zero when ctest, lint or the release build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/deps.sh
# shellcheck source=lib/services.sh
source scripts/lib/services.sh

state=$(mktemp -d "${TMPDIR:-/tmp}/wk-test.XXXXXX")
chmod 0755 "$state"
cleanup() {
  wk_pg_stop "$state/pg" || true
  wk_redis_stop "$state/redis" || true
  if [[ -L "$state/pg/data" ]]; then rm -rf "$(readlink -f "$state/pg/data")"; fi
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

redis_port=$(wk_free_port)
wk_redis_start "$state/redis" "$redis_port"
pg_port=$(wk_free_port)
wk_pg_start "$state/pg" "$pg_port"
wk_pg_createdb "$pg_port" autodevs
echo "test: redis-server on 127.0.0.1:$redis_port, PostgreSQL on 127.0.0.1:$pg_port (state in $state)"

export WK_TEST_REDIS_HOST=127.0.0.1 WK_TEST_REDIS_PORT=$redis_port
export WK_TEST_PG_HOST=127.0.0.1 WK_TEST_PG_PORT=$pg_port WK_TEST_PG_USER=postgres WK_TEST_PG_DB=autodevs
export WK_TEST_PG_BIN WK_TEST_PG_DATA
WK_TEST_PG_DATA=$(wk_pg_data_dir "$state/pg")
WK_TEST_PG_BIN=$(wk_pg_bin)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

cmake --preset asan >/dev/null
cmake --build --preset asan -j"$(nproc)"
status=0
ctest --preset asan -j2 --timeout 600 "$@" || status=$?
cd "$root"
if [[ "${WK_LINT:-1}" != 0 ]]; then
  lint_start=$SECONDS
  WK_LINT_BUILD_DIR=build/asan scripts/lint.sh || { echo "test: lint failed" >&2; [[ $status -ne 0 ]] || status=1; }
  echo "test: lint took $((SECONDS - lint_start))s"
fi
if [[ "${WK_RELEASE_BUILD:-1}" != 0 ]]; then
  release_start=$SECONDS
  { cmake --preset release -DWK_BUILD_TESTS=OFF -DWK_BUILD_BENCH=OFF >/dev/null &&
    cmake --build --preset release; } || { echo "test: the release build failed" >&2; [[ $status -ne 0 ]] || status=1; }
  echo "test: release build took $((SECONDS - release_start))s"
fi
exit "$status"
