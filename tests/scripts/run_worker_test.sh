#!/usr/bin/env bash
# `scripts/run-worker.sh -n w1 -v` with no Redis answering on the configured (local) port starts a
# private one, says so in one line, then runs the worker, which logs in logfmt; SIGTERM stops it
# with exit 0. The state directory is a throw-away one. Then: a PostgreSQL that refuses the user
# gets a private one beside it; and, as root, a clone under a mode-0700 parent starts both
# private services and `--stop-services` stops them.
# Usage: run_worker_test.sh <repo root> <worker binary>
set -euo pipefail
root=$1 worker_bin=$2
: "${WK_TEST_PG_PORT:?run through scripts/test.sh}"

work=$(mktemp -d "${TMPDIR:-/tmp}/wk-run-worker.XXXXXX")
chmod 755 "$work"  # as root, a private PostgreSQL runs as the postgres user under it
worker_pid=""
cleanup() {
  [[ -n "$worker_pid" ]] && kill -KILL "$worker_pid" 2>/dev/null || true
  WK_STATE_DIR="$work/state" WK_WORKER_BIN="$worker_bin" "$root/scripts/run-worker.sh" --stop-services >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- output:" >&2; cat "$work/out" >&2 || true; exit 1; }
# Waits up to $1 tenths of a second for the background run-worker ($worker_pid) to log that its
# job server started; fails naming $2 if it exits first.
await_start() {
  for _ in $(seq 1 "$1"); do
    grep -q 'msg="Starting job server"' "$work/out" && return 0
    kill -0 "$worker_pid" 2>/dev/null || fail "run-worker exited early$2"
    sleep 0.1
  done
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-cli -p "$port" ping >/dev/null 2>&1 && fail "port $port already answers"
mkdir -p "$work/plugins" "$work/cwd"

# Usage first.
"$root/scripts/run-worker.sh" -h | grep -q '^Usage: scripts/run-worker.sh' || fail "-h prints no usage"

(
  cd "$work/cwd"  # no .env here
  exec env WK_STATE_DIR="$work/state" WK_WORKER_BIN="$worker_bin" WK_PLUGINS_DIR="$work/plugins" \
    REDIS_HOST=localhost REDIS_PORT="$port" DB_HOST=127.0.0.1 DB_PORT="$WK_TEST_PG_PORT" \
    WORKER_METRICS_ADDR= "$root/scripts/run-worker.sh" -n w1 -v
) >"$work/out" 2>&1 &
worker_pid=$!

await_start 300 ""
grep -q 'msg="Starting job server"' "$work/out" || fail "no 'Starting job server' line"

[[ $(grep -c "^run-worker: no Redis on localhost:$port, starting a private one" "$work/out") -eq 1 ]] \
  || fail "no single line saying a private Redis was started"
[[ "$(redis-cli -p "$port" ping)" == "PONG" ]] || fail "the private Redis does not answer"
grep -Eq '^time=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z level=INFO msg="Starting job worker" worker_name=w1$' "$work/out" \
  || fail "the start line is not in the seed's format"
grep -Eq '^time=\S+ level=DEBUG ' "$work/out" || fail "-v did not turn on debug logging"
grep -q "msg=\"Starting job server\" redis_addr=localhost:$port" "$work/out" || fail "no redis_addr on the server line"

kill -TERM "$worker_pid"
status=0
wait "$worker_pid" || status=$?
worker_pid=""
[[ $status -eq 0 ]] || fail "worker exited $status after SIGTERM"
head -3 "$work/out"
echo "run-worker.sh -n w1 -v: private Redis started, worker logged in logfmt, clean stop"

# A local PostgreSQL answers but will not let the configured user in (as Debian's own cluster on
# 5432 refuses postgres over TCP): a private one starts beside it, with that user and database,
# and the worker is pointed at it.
role="wk_run_worker_$$"
(
  cd "$work/cwd"
  exec env WK_STATE_DIR="$work/state" WK_WORKER_BIN="$worker_bin" WK_PLUGINS_DIR="$work/plugins" \
    REDIS_HOST=localhost REDIS_PORT="$port" DB_HOST=127.0.0.1 DB_PORT="$WK_TEST_PG_PORT" DB_USERNAME="$role" \
    WORKER_METRICS_ADDR= "$root/scripts/run-worker.sh" -n w2 -v
) >"$work/out" 2>&1 &
worker_pid=$!
await_start 600 " (foreign PostgreSQL)"
line=$(grep "^run-worker: PostgreSQL on 127.0.0.1:$WK_TEST_PG_PORT does not let $role into autodevs; using a private one on port " "$work/out") \
  || fail "no line saying the private PostgreSQL is used instead"
[[ $(grep -c '^run-worker: ' "$work/out") -eq 1 ]] || fail "more than one run-worker line"
private_port=$(sed -E 's/.* on port ([0-9]+) .*/\1/' <<<"$line")
[[ "$private_port" != "$WK_TEST_PG_PORT" ]] || fail "the private PostgreSQL took the foreign one's port"
grep -Eq "key=DB_PORT value=$private_port( |$)" "$work/out" || fail "the worker was not pointed at port $private_port"
psql -h 127.0.0.1 -p "$private_port" -U "$role" -w -tAc "SELECT 1" autodevs | grep -q 1 \
  || fail "$role cannot use database autodevs on the private PostgreSQL"
kill -TERM "$worker_pid"
status=0
wait "$worker_pid" || status=$?
worker_pid=""
[[ $status -eq 0 ]] || fail "worker exited $status after SIGTERM (foreign PostgreSQL)"
echo "run-worker.sh with a PostgreSQL that refuses the user: a private one beside it, worker pointed at it"

# A clone in a directory whose parent is mode 0700, as root's clones under /root are: PostgreSQL
# runs as `postgres`, which cannot enter it, yet the private one starts; --stop-services stops it
# and the private Redis.
if [[ $(id -u) -eq 0 ]]; then
  # shellcheck source=../../scripts/lib/services.sh
  source "$root/scripts/lib/services.sh"
  locked=$(mktemp -d "${TMPDIR:-/tmp}/wk-locked.XXXXXX")  # mode 0700
  if [[ -d "$root/.git" ]]; then
    git clone -q "$root" "$locked/clone"
  else
    mkdir -p "$locked/clone" && cp -r "$root/scripts" "$locked/clone/"
  fi
  redis_port=$(wk_free_port)
  pg_port=$(wk_free_port)
  (
    cd "$work/cwd"
    exec env WK_WORKER_BIN="$worker_bin" WK_PLUGINS_DIR="$work/plugins" REDIS_HOST=localhost \
      REDIS_PORT="$redis_port" DB_HOST=127.0.0.1 DB_PORT="$pg_port" WORKER_METRICS_ADDR= \
      "$locked/clone/scripts/run-worker.sh" -n w3
  ) >"$work/out" 2>&1 &
  worker_pid=$!
  await_start 600 " (clone under a 0700 parent)"
  grep -q "^run-worker: no PostgreSQL on 127.0.0.1:$pg_port, starting a private one" "$work/out" \
    || fail "no private PostgreSQL for the clone under a 0700 parent"
  wk_pg_answers 127.0.0.1 "$pg_port" || fail "the private PostgreSQL does not answer"
  kill -TERM "$worker_pid"
  status=0
  wait "$worker_pid" || status=$?
  worker_pid=""
  [[ $status -eq 0 ]] || fail "worker exited $status after SIGTERM (clone under a 0700 parent)"
  data=$(readlink -f "$locked/clone/.state/pg/data")
  "$locked/clone/scripts/run-worker.sh" --stop-services >"$work/out" 2>&1 || fail "--stop-services failed"
  ! redis-cli -p "$redis_port" ping >/dev/null 2>&1 || fail "--stop-services left the private Redis running"
  ! wk_pg_answers 127.0.0.1 "$pg_port" || fail "--stop-services left the private PostgreSQL running"
  rm -rf "$data" "$locked"
  echo "run-worker.sh in a clone under a 0700 parent, as root: private services started, then stopped"
fi

