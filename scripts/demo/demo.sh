# shellcheck shell=bash
# The pipeline demo behind `scripts/run-worker.sh --demo`. Sourced by run-worker.sh, which has
# already made sure Redis and PostgreSQL answer and provides `setting KEY DEFAULT` (environment,
# else ./.env, else the default).
#
# wk_demo WORKER_BIN PLUGINS_DIR [WORKER-ARGS...]
#   1. creates (once) a demo git repository in $WK_DEMO_DIR/repo (default .state/demo/repo)
#   2. starts the worker with the example agent (config/agent-example.sh) as AI_COMMAND and
#      worktrees under $WK_DEMO_DIR/worktrees, and waits until its plugins are loaded (they
#      create their tables)
#   3. inserts a task row in autodevs_tasks and enqueues planning:task (`worker enqueue`)
#   4. waits until the task is completed (or failed; at most $WK_DEMO_TIMEOUT seconds, 120 by
#      default), stops the worker (SIGTERM) and prints where to look.

wk_demo() {
  local worker=$1 plugins=$2
  shift 2
  local -a extra_args=("$@")
  local root demo repo log
  root=$(pwd)
  demo=${WK_DEMO_DIR:-$root/.state/demo}
  mkdir -p "$demo"
  demo=$(cd "$demo" && pwd)
  repo=$demo/repo
  log=$demo/worker.log
  local timeout=${WK_DEMO_TIMEOUT:-120}

  # The demo's own settings win over ./.env: the example agent, a private worktree base, the
  # deterministic planner, the pipeline's queues, no metrics port (another worker may hold it).
  export AI_PROVIDER=command
  export AI_COMMAND="'$root/config/agent-example.sh'"
  export AI_PLANNER=deterministic
  export WORKTREE_BASE_DIR="$demo/worktrees"
  export WORKER_QUEUES="planning=6,default=2"
  export WORKER_METRICS_ADDR=""

  # PostgreSQL as the worker sees it.
  local -a psql_args=(-X -q -v ON_ERROR_STOP=1 -h "$(setting DB_HOST localhost)" -p "$(setting DB_PORT 5432)"
                      -U "$(setting DB_USERNAME postgres)" -d "$(setting DB_NAME autodevs)")
  local db_password db_sslmode
  db_password=$(setting DB_PASSWORD "")
  db_sslmode=$(setting DB_SSLMODE disable)
  # demo_sql SQL [psql-args...]: runs SQL read from stdin (so :'var' interpolation works).
  demo_sql() {
    local sql=$1
    shift
    printf '%s\n' "$sql" | PGPASSWORD=$db_password PGSSLMODE=$db_sslmode psql "${psql_args[@]}" "$@"
  }

  if [[ ! -d "$repo/.git" ]]; then
    echo "demo: creating the demo repository $repo"
    mkdir -p "$repo"
    git -C "$repo" init -q -b main
    printf '# Demo repository\n\nA playground for the AutoDevs worker demo.\n' > "$repo/README.md"
    printf 'def greet(name):\n    return "Hello, " + name\n' > "$repo/greet.py"
    git -C "$repo" add README.md greet.py
    git -C "$repo" -c user.name="AutoDevs Demo" -c user.email=demo@autodevs.local commit -q -m "Initial commit"
  fi

  echo "demo: starting the worker (log in $log)"
  "$worker" --plugins "$plugins" "${extra_args[@]}" > "$log" 2>&1 &
  local pid=$!
  # Whatever happens from here on, the worker is stopped (SIGTERM: it finishes or requeues).
  # shellcheck disable=SC2064
  trap "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null" EXIT

  local i
  for ((i = 0; i < 600; i++)); do
    grep -q 'msg="Plugins loaded"' "$log" && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: the worker exited during start-up:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  grep -q 'msg="Plugins loaded"' "$log" || { echo "demo: the worker did not load its plugins in 60 s" >&2; return 1; }

  local id
  id=$(cat /proc/sys/kernel/random/uuid)
  demo_sql "INSERT INTO autodevs_tasks (id, title, description, repo_path, base_ref)
            VALUES (:'id', 'Demo: polish the greeting',
                    E'Three small changes:\n- explain what greet() does\n- add a farewell\n- note how to run it\n',
                    :'repo', 'main');" -v id="$id" -v repo="$repo"
  local queued
  queued=$("$worker" enqueue --type planning:task --queue planning --payload "{\"task_id\":\"$id\"}")
  echo "demo: task $id created; planning:task enqueued (asynq id $queued)"

  local status=""
  for ((i = 0; i < timeout * 5; i++)); do
    status=$(demo_sql "SELECT status FROM autodevs_tasks WHERE id = :'id';" -tA -v id="$id")
    [[ "$status" == completed || "$status" == failed ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: the worker exited:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done

  echo "demo: task $status; stopping the worker"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT

  local worktree branch
  worktree=$(demo_sql "SELECT path FROM autodevs_worktrees WHERE task_id = :'id';" -tA -v id="$id")
  branch="autodevs/$id"
  echo
  echo "Task        $id: $status"
  echo "Repository  $repo"
  echo "Worktree    ${worktree:-(none)}"
  echo "Branch      $branch"
  if git -C "$repo" rev-parse -q --verify "refs/heads/$branch" > /dev/null; then
    echo "Commits     (git -C $repo log --oneline main..$branch)"
    git -C "$repo" log --oneline "main..$branch" | sed 's/^/            /'
  fi
  echo "Steps"
  demo_sql "SELECT step_no AS step, status, left(commit_sha, 10) AS commit, title
            FROM autodevs_task_steps WHERE task_id = :'id' ORDER BY step_no;" -v id="$id" | sed 's/^/  /'
  echo "Worker log  $log"
  echo
  echo "Look around:"
  [[ -n "$worktree" ]] && echo "  git -C '$worktree' log --stat main..HEAD" && echo "  cat '$worktree/NOTES.md'"
  echo "  psql -h $(setting DB_HOST localhost) -p $(setting DB_PORT 5432) -U $(setting DB_USERNAME postgres) $(setting DB_NAME autodevs) -c \"SELECT * FROM autodevs_tasks WHERE id = '$id'\""
  [[ "$status" == completed ]]
}
