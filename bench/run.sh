#!/usr/bin/env bash
# Starts a private redis-server on a free loopback port, builds wk_bench with the release preset,
# runs it and prints its table. Usage: bench/run.sh [--tasks N] [--latency-samples N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$data" --daemonize no \
  >"$data/redis.log" 2>&1 &
redis_pid=$!
cleanup() { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
cmake --preset release -S "$root" >/dev/null
# Only wk_bench and the libraries it links; two jobs (a shared machine).
cmake --build --preset release --target wk_bench -j "${WK_BENCH_JOBS:-2}"
"$root/build/release/bench/wk_bench" --host 127.0.0.1 --port "$port" "$@"
