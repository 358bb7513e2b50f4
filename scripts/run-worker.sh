#!/usr/bin/env bash
# Builds (release preset) and runs the worker from this checkout. Configuration comes from the
# environment and ./.env of the repository, exactly as for the installed worker (see README.md).
# When the configured Redis or PostgreSQL is on this machine and nothing answers, a private one
# is started under .state/ (kept running and reused next time; `--stop-services` stops them).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/run-worker.sh [-n NAME] [-v] [--demo] [--stop-services] [-h] [-- WORKER-ARGS...]

Builds the worker (release preset) and runs it with the plugins built in this checkout.

  -n NAME          worker name (WORKER_NAME)
  -v               verbose: debug logging (LOG_LEVEL=debug)
  --demo           run the pipeline once on a demo repository (.state/demo/) with the example
                   agent, until the demo task is completed, then show the branch and its commits
  --stop-services  stop the private Redis/PostgreSQL started under .state/ and exit
  -h, --help       this help

Environment (see README.md for all): REDIS_URL or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_DB,
DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD, DB_NAME, WORKER_CONCURRENCY, WORKER_QUEUES,
LOG_LEVEL, LOG_FORMAT, ... e.g.  REDIS_HOST=redis.example.com scripts/run-worker.sh
USAGE
}

cd "$(dirname "$0")/.."
root=$(pwd)

worker_args=()
demo=0
stop_services=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -n) [[ $# -ge 2 ]] || { echo "run-worker: -n needs a name" >&2; exit 2; }
        worker_args+=(--worker "$2"); shift 2 ;;
    -v) worker_args+=(--verbose); shift ;;
    --demo) demo=1; shift ;;
    --stop-services) stop_services=1; shift ;;
    --) shift; worker_args+=("$@"); break ;;
    *) worker_args+=("$1"); shift ;;
  esac
done

# shellcheck source=lib/services.sh
source scripts/lib/services.sh
# WK_STATE_DIR moves the private services' state (tests use it); default .state/ in the checkout.
state="${WK_STATE_DIR:-$root/.state}"

if [[ $stop_services -eq 1 ]]; then
  wk_redis_stop "$state/redis"
  wk_pg_stop "$state/pg"
  echo "run-worker: stopped the private services under .state/"
  exit 0
fi

# A setting as the worker will see it: environment, else ./.env, else the default.
setting() {
  local key=$1 default=$2 value
  if [[ -n "${!key+x}" ]]; then
    echo "${!key}"
    return
  fi
  if [[ -f .env ]]; then
    value=$(sed -nE "s/^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=[[:space:]]*//p" .env | tail -n1)
    value=${value%%[[:space:]]#*}
    value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
    if [[ -n "$value" ]]; then
      echo "$value"
      return
    fi
  fi
  echo "$default"
}

is_local() { [[ "$1" == "localhost" || "$1" == "127.0.0.1" || "$1" == "::1" ]]; }

# WK_WORKER_BIN (and WK_PLUGINS_DIR): run an existing build instead of building (tests use it).
if [[ -z "${WK_WORKER_BIN:-}" ]]; then
  scripts/deps.sh
fi

redis_host=$(setting REDIS_HOST localhost)
redis_port=$(setting REDIS_PORT 6379)
# A Redis named by URL or spoken to over TLS is the operator's own: never a private stand-in.
redis_url=$(setting REDIS_URL "")
redis_tls=$(setting REDIS_TLS false)
if [[ -z "$redis_url" && ! "${redis_tls,,}" =~ ^(1|t|true|y|yes|on)$ ]] && is_local "$redis_host" && ! wk_redis_answers 127.0.0.1 "$redis_port"; then
  echo "run-worker: no Redis on $redis_host:$redis_port, starting a private one (state in ${state#"$root"/}/redis;" \
    "it keeps running after the worker stops: --stop-services stops it)"
  wk_redis_start "$state/redis" "$redis_port"
  # If what follows fails, do not leave the Redis just started behind.
  trap 'status=$?; if [[ $status -ne 0 ]]; then wk_redis_stop "$state/redis"; fi' EXIT
fi

db_host=$(setting DB_HOST localhost)
db_port=$(setting DB_PORT 5432)
db_user=$(setting DB_USERNAME postgres)
db_name=$(setting DB_NAME autodevs)
if is_local "$db_host"; then
  if ! wk_pg_answers 127.0.0.1 "$db_port"; then
    echo "run-worker: no PostgreSQL on $db_host:$db_port, starting a private one (state in ${state#"$root"/}/pg;" \
      "it keeps running after the worker stops: --stop-services stops it)"
    wk_pg_start "$state/pg" "$db_port"
    echo "$db_port" >"$state/pg/port"
    wk_pg_createdb "$db_port" "$db_name" "$db_user"
  elif ! PGPASSWORD=$(setting DB_PASSWORD "") wk_pg_login 127.0.0.1 "$db_port" "$db_user" "$db_name"; then
    # Someone else's server: Debian's own cluster on 5432, say, which refuses postgres over TCP
    # without a password and has no autodevs database. Use (or reuse) a private one beside it.
    private_port=$(cat "$state/pg/port" 2>/dev/null || true)
    if [[ -z "$private_port" || "$private_port" == "$db_port" ]]; then private_port=$(wk_free_port); fi
    echo "run-worker: PostgreSQL on $db_host:$db_port does not let $db_user into $db_name;" \
      "using a private one on port $private_port (state in ${state#"$root"/}/pg; it keeps running" \
      "after the worker stops: --stop-services stops it)"
    if ! wk_pg_answers 127.0.0.1 "$private_port"; then wk_pg_start "$state/pg" "$private_port"; fi
    echo "$private_port" >"$state/pg/port"
    wk_pg_createdb "$private_port" "$db_name" "$db_user"
    export DB_HOST=127.0.0.1 DB_PORT=$private_port
  fi
fi

if [[ -n "${WK_WORKER_BIN:-}" ]]; then
  worker_bin=$WK_WORKER_BIN
  plugins_dir=${WK_PLUGINS_DIR:-$(dirname "$worker_bin")/../plugins}
else
  build="$root/build/release"
  if [[ ! -f "$build/build.ninja" ]]; then
    echo "run-worker: configuring the release build in build/release" >&2
    cmake --preset release -DWK_BUILD_TESTS=OFF -DWK_BUILD_BENCH=OFF >/dev/null
    echo "run-worker: building the worker and its plugins (the first build takes several minutes" \
      "on a small machine; later ones rebuild only what changed)" >&2
  fi
  cmake --build --preset release
  worker_bin="$build/bin/worker"
  plugins_dir="$build/plugins"
fi

if [[ $demo -eq 1 ]]; then
  # The demo always runs the plugins of this checkout (see scripts/demo/demo.sh).
  # shellcheck source=demo/demo.sh
  source scripts/demo/demo.sh
  wk_demo "$worker_bin" "$plugins_dir" "${worker_args[@]}"
  exit $?
fi

if [[ -z "${WORKER_PLUGINS_DIR:-}" ]] && ! grep -qE '^[[:space:]]*(export[[:space:]]+)?WORKER_PLUGINS_DIR=' .env 2>/dev/null; then
  worker_args=(--plugins "$plugins_dir" "${worker_args[@]}")
  mkdir -p "$plugins_dir"
fi
exec "$worker_bin" "${worker_args[@]}"
