#!/usr/bin/env bash
# Starts a private redis-server on a free loopback port, builds wk_bench with the release preset,
# runs it and prints its table: the plugin in process, then in a runner process
# (docs/plugin-isolation.md).
#
#   bench/run.sh [--tasks N] [--latency-samples N] [--idle-seconds N] [--peers]
#
# Then the shipped `worker` binary drains the same number of tasks at its default settings (runner
# processes) and in process, at concurrency 4 (the default) and 16 (wk_bench --worker-drain).
#
# wk_bench ends with what idle workers cost Redis (1 and 4 workers, 3 queues, concurrency 8:
# commands/s over --idle-seconds, 60 by default, 0 to skip; and the pickup in that setup).
#
# --peers: also runs the BullMQ peer (bench/peers/bullmq/bench.mjs) against its own fresh private
# redis-server, after wk_bench (never at the same time), and prints both side by side with ratios
# (> 1 means ours is better: ours/peer for tasks/s, peer/ours for CPU per task, latency and RSS).
# The peer needs node and npm (installed from Debian when missing and we are root) and, on its
# first run, the npm registry for `npm ci`; without them it is skipped with a message.
# Off by default: the plain bench stays offline and takes half the time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peer_dir="$root/bench/peers/bullmq"
peers=0
args=()
while (($#)); do
  case "$1" in
    --peers) peers=1 ;;
    --tasks | --latency-samples | --idle-seconds)
      (($# >= 2)) || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    *) echo "usage: bench/run.sh [--tasks N] [--latency-samples N] [--idle-seconds N] [--peers]" >&2; exit 2 ;;
  esac
  shift
done

work="$(mktemp -d)"
redis_pid=""
stop_redis() {
  if [[ -n "$redis_pid" ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  fi
}
cleanup() { stop_redis; rm -rf "$work"; }
trap cleanup EXIT

# Starts a fresh redis-server (its own data dir) and sets redis_pid and port.
start_redis() {
  local data
  data="$(mktemp -d "$work/redis.XXXX")"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$data" --daemonize no \
    >"$data/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "run.sh: redis-server on port $port did not answer" >&2
  return 1
}

# Makes node/npm and the peer's node_modules available; returns 1 (with a message) if it cannot.
prepare_peer() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      echo "run.sh: node/npm missing, installing them from Debian" >&2
      apt-get install -y nodejs npm >&2 || { echo "run.sh: apt-get install nodejs npm failed" >&2; return 1; }
    else
      echo "run.sh: node/npm missing (and not root to apt-get install nodejs npm)" >&2
      return 1
    fi
  fi
  if [[ ! -f "$peer_dir/node_modules/bullmq/package.json" ||
        "$peer_dir/package-lock.json" -nt "$peer_dir/node_modules/.package-lock.json" ]]; then
    echo "run.sh: npm ci in bench/peers/bullmq" >&2
    (cd "$peer_dir" && timeout 600 npm ci --no-audit --no-fund >&2) ||
      { echo "run.sh: npm ci failed (is the npm registry reachable?)" >&2; return 1; }
  fi
}

# The worker binary's peak RSS with the three shipped plugins and the no-op plugin, in process,
# concurrency 16, after draining the bench's tasks. The shipped plugins need a database: a
# private PostgreSQL (scripts/lib/services.sh); without one this is skipped with a message.
# Extra arguments go to wk_bench (--json).
pg_dir=""
worker_rss() {
  # shellcheck source=../scripts/lib/services.sh
  source "$root/scripts/lib/services.sh"
  local pg_port plugins
  pg_dir="$(mktemp -d)"
  chmod 755 "$pg_dir"  # PostgreSQL runs as `postgres` when we are root
  pg_port="$(wk_free_port)"
  if ! wk_pg_start "$pg_dir/pg" "$pg_port" >&2 || ! wk_pg_createdb "$pg_port" autodevs >&2; then
    echo "run.sh: no private PostgreSQL; skipping the worker's RSS with the shipped plugins" >&2
    stop_pg
    return 0
  fi
  plugins="$work/plugins"
  mkdir -m 700 "$plugins"
  cp "$root"/build/release/plugins/autodevs_*.so "$root/build/release/bench/plugins/noop.so" "$plugins/"
  DB_HOST=127.0.0.1 DB_PORT="$pg_port" DB_USERNAME=postgres DB_NAME=autodevs WORKTREE_BASE_DIR="$work/worktrees" \
    "$wk_bench" --host 127.0.0.1 --port "$port" "${args[@]}" "$@" --worker-plugins "$plugins"
  stop_pg
}
stop_pg() {
  if [[ -n "$pg_dir" ]]; then
    wk_pg_stop "$pg_dir/pg"
    rm -rf "$pg_dir"
    pg_dir=""
  fi
}
trap 'stop_pg; cleanup' EXIT

# run-worker.sh may have configured this build dir with the bench off: turn it on.
cmake --preset release -S "$root" -DWK_BUILD_BENCH=ON >/dev/null
# Only wk_bench, the worker, the shipped plugins and what they link; two jobs (a shared machine).
cmake --build --preset release --target wk_bench worker autodevs_planning autodevs_worktree autodevs_ai \
  -j "${WK_BENCH_JOBS:-2}"
wk_bench="$root/build/release/bench/wk_bench"

# What users run: the shipped worker binary at its default settings (runner processes), at
# concurrency 4 (the default) and 16, and the same in process. Only --tasks applies to it.
drain_args=()
for ((i = 0; i < ${#args[@]}; i += 2)); do
  [[ "${args[i]}" == --tasks ]] && drain_args+=("${args[i]}" "${args[i + 1]}")
done
# The peer has no idle part: --idle-seconds is ours only.
peer_args=()
for ((i = 0; i < ${#args[@]}; i += 2)); do
  [[ "${args[i]}" != --idle-seconds ]] && peer_args+=("${args[i]}" "${args[i + 1]}")
done

start_redis
if ((!peers)); then
  "$wk_bench" --host 127.0.0.1 --port "$port" "${args[@]}"
  "$wk_bench" --host 127.0.0.1 --port "$port" --worker-drain --isolation both "${drain_args[@]}"
  worker_rss
  exit 0
fi

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load before:$(uptime | sed 's/.*load average://')"
"$wk_bench" --host 127.0.0.1 --port "$port" --json "${args[@]}" | tee "$work/wk.jsonl"
"$wk_bench" --host 127.0.0.1 --port "$port" --json --worker-drain --isolation both "${drain_args[@]}" |
  tee -a "$work/wk.jsonl"
worker_rss --json | tee -a "$work/wk.jsonl"
stop_redis
peer_ok=0
if prepare_peer; then
  start_redis
  if (cd "$peer_dir" && node bench.mjs --host 127.0.0.1 --port "$port" --json "${peer_args[@]}") |
     tee "$work/peer.jsonl"; then
    peer_ok=1
  else
    echo "run.sh: the BullMQ bench failed; table without the peer" >&2
  fi
  stop_redis
else
  echo "run.sh: skipping the BullMQ peer" >&2
fi
((peer_ok)) || : >"$work/peer.jsonl"
echo "load after:$(uptime | sed 's/.*load average://')"
echo

python3 - "$work/wk.jsonl" "$work/peer.jsonl" <<'EOF'
import json, sys

def load(path, isolation=None):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    if isolation is not None:
        rows = [r for r in rows if r.get("isolation", "none") == isolation]
    drain = {r["concurrency"]: r for r in rows if r["kind"] == "drain"}
    idle = next((r for r in rows if r["kind"] == "idle"), None)
    return rows, drain, idle

_, wk, wk_idle = load(sys.argv[1], "none")
_, proc, proc_idle = load(sys.argv[1], "process")
peer_rows, peer, peer_idle = load(sys.argv[2])
tasks = next(iter(wk.values()))["tasks"]
peer_name = f"BullMQ {peer_rows[0]['version']}" if peer_rows else "BullMQ (skipped)"
lines = []  # metric, in-process, process, BullMQ, process vs in-process, in-process vs BullMQ

def fmt(v, digits):
    return "n/a" if v is None or v < 0 else f"{v:.{digits}f}"

def ratio(ours, theirs, higher_is_better):
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "n/a"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"

def add(metric, inproc, process, theirs, higher_is_better, digits):
    lines.append((metric, fmt(inproc, digits), fmt(process, digits), fmt(theirs, digits),
                  ratio(process, inproc, higher_is_better), ratio(inproc, theirs, higher_is_better)))

get = lambda d, c, k: d[c][k] if c in d else None
for key, label, better, digits in (("tasks_per_s", "tasks/s", True, 0),
                                   ("host_cpu_s_per_100k", "host CPU s/100k", False, 2),
                                   ("redis_cpu_s_per_100k", "redis CPU s/100k", False, 2)):
    for c in sorted(wk):
        add(f"{label}, c={c}", get(wk, c, key), get(proc, c, key), get(peer, c, key), better, digits)
idle = lambda d, k: d[k] if d else None
add("idle pickup p50 ms", idle(wk_idle, "p50_ms"), idle(proc_idle, "p50_ms"), idle(peer_idle, "p50_ms"), False, 3)
add("idle pickup p99 ms", idle(wk_idle, "p99_ms"), idle(proc_idle, "p99_ms"), idle(peer_idle, "p99_ms"), False, 3)
add("peak RSS MiB", idle(wk_idle, "peak_rss_mib"), idle(proc_idle, "runner_peak_rss_mib"),
    idle(peer_idle, "peak_rss_mib"), False, 1)
worker_rss = {r["isolation"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if '"worker_rss"' in l)}
shipped = lambda iso, k: worker_rss[iso][k] if iso in worker_rss else None
add("worker peak RSS MiB, 3 shipped plugins", shipped("none", "peak_rss_mib"), shipped("process", "peak_rss_mib"),
    None, False, 1)
add("PSS MiB, worker + its runners", shipped("none", "pss_total_mib"), shipped("process", "pss_total_mib"),
    None, False, 1)

print(f"{tasks} no-op tasks per run, each side on its own private redis-server. Ours with the plugin in "
      f"process and in a runner process (host CPU = worker + runner; RSS = the runner's). Ratios > 1 "
      f"mean the first is better: process vs in-process, in-process vs the peer.")
head = ("metric", "in-process", "process", peer_name, "proc/in", "in/peer")
w = max(len(l[0]) for l in lines)
print(f"{head[0]:<{w}}  {head[1]:>10}  {head[2]:>10}  {head[3]:>14}  {head[4]:>7}  {head[5]:>7}")
for m, a, b, c, r1, r2 in lines:
    print(f"{m:<{w}}  {a:>10}  {b:>10}  {c:>14}  {r1:>7}  {r2:>7}")

# The shipped binary at default settings (runner processes) and in process, beside BullMQ at the
# same concurrency. Host CPU is the worker's and its runners' together.
drains = {(r["isolation"], r["concurrency"]): r
          for r in (json.loads(l) for l in open(sys.argv[1]) if '"worker_drain"' in l)}
if drains:
    print()
    print("The shipped worker binary, default settings (WORKER_ISOLATION=process) and in process, "
          "tasks in the default queue; ratios > 1 mean the first is better.")
    rows = []
    for c in sorted({c for _, c in drains}):
        runner, inproc, theirs = drains.get(("process", c)), drains.get(("none", c)), peer.get(c)
        val = lambda r, k: r[k] if r and k in r else None
        for key, label, better, digits in (("tasks_per_s", "tasks/s", True, 0),
                                           ("host_cpu_s_per_100k", "host CPU s/100k (worker + runners)", False, 2),
                                           ("redis_cpu_s_per_100k", "redis CPU s/100k", False, 2),
                                           ("redis_scripts_per_task", "redis scripts per task", False, 3)):
            a, b, t = val(runner, key), val(inproc, key), val(theirs, key)
            rows.append((f"{label}, c={c}", fmt(a, digits), fmt(b, digits), fmt(t, digits),
                         ratio(a, b, better), ratio(a, t, better)))
        rows.append((f"peak RSS MiB worker / runners, c={c}",
                     f"{fmt(val(runner, 'worker_peak_rss_mib'), 1)}/{fmt(val(runner, 'runners_peak_rss_mib'), 1)}",
                     fmt(val(inproc, "worker_peak_rss_mib"), 1), "", "", ""))
        rows.append((f"PSS MiB worker + runners, c={c}", fmt(val(runner, "pss_total_mib"), 1),
                     fmt(val(inproc, "pss_total_mib"), 1), "", "", ""))
    head = ("metric", "runner", "in-process", peer_name, "run/in", "run/peer")
    w = max(len(r[0]) for r in rows)
    print(f"{head[0]:<{w}}  {head[1]:>10}  {head[2]:>10}  {head[3]:>14}  {head[4]:>7}  {head[5]:>8}")
    for m, a, b, c, r1, r2 in rows:
        print(f"{m:<{w}}  {a:>10}  {b:>10}  {c:>14}  {r1:>7}  {r2:>8}")

for r in (json.loads(l) for l in open(sys.argv[1]) if '"idle_cost"' in l):
    pickup = (f"; pickup p50 {r['pickup_p50_ms']:.3f} ms, p99 {r['pickup_p99_ms']:.3f} ms"
              if "pickup_p50_ms" in r else "")
    print(f"idle, {r['workers']} worker(s), 3 queues, concurrency 8: {r['commands_per_s']:.2f} Redis "
          f"commands/s over {r['seconds']} s{pickup}")
EOF
