#!/usr/bin/env bash
# `scripts/run-worker.sh --demo` against the test services (scripts/test.sh's Redis, DB 8, and
# PostgreSQL) with the worker and plugins of this build (no second build): the demo task must be
# completed, the demo branch must carry one commit per step, the worker must have stopped.
# Usage: demo_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
: "${WK_TEST_REDIS_HOST:?}" "${WK_TEST_REDIS_PORT:?}" "${WK_TEST_PG_HOST:?}" "${WK_TEST_PG_PORT:?}"
: "${WK_TEST_PG_USER:?}" "${WK_TEST_PG_DB:?}"

work=$(mktemp -d /tmp/wk-e2e-demo.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f "$work/out" ]] && { echo "--- demo output" >&2; cat "$work/out" >&2; }
  [[ -f "$work/demo/worker.log" ]] && { echo "--- worker log (tail)" >&2; tail -n 30 "$work/demo/worker.log" >&2; }
  exit 1
}

# Only the shipped plugins (the build's plugins dir may hold test fixtures).
mkdir -m 700 "$work/plugins"
cp "$build"/plugins/autodevs_{planning,worktree,ai}.so "$work/plugins/"
redis-cli -h "$WK_TEST_REDIS_HOST" -p "$WK_TEST_REDIS_PORT" -n 8 FLUSHDB > /dev/null

status=0
env REDIS_HOST="$WK_TEST_REDIS_HOST" REDIS_PORT="$WK_TEST_REDIS_PORT" REDIS_DB=8 \
  DB_HOST="$WK_TEST_PG_HOST" DB_PORT="$WK_TEST_PG_PORT" DB_USERNAME="$WK_TEST_PG_USER" DB_NAME="$WK_TEST_PG_DB" \
  DB_PASSWORD="" WORKTREE_MIN_DISK_SPACE=0 WK_DEMO_DIR="$work/demo" WK_DEMO_TIMEOUT=60 \
  WK_WORKER_BIN="$build/bin/worker" WK_PLUGINS_DIR="$work/plugins" \
  "$src/scripts/run-worker.sh" --demo > "$work/out" 2>&1 || status=$?
[[ $status -eq 0 ]] || fail "run-worker.sh --demo exited with $status"

id=$(sed -nE 's/^Task +([0-9a-f-]{36}): completed$/\1/p' "$work/out")
[[ -n "$id" ]] || fail "no 'Task <id>: completed' line"
repo="$work/demo/repo"
worktree="$work/demo/worktrees/repo/$id"
grep -qx "Worktree    $worktree" "$work/out" || fail "the worktree $worktree is not printed"
grep -qx "Branch      autodevs/$id" "$work/out" || fail "the branch is not printed"
[[ -d "$worktree" ]] || fail "no worktree at $worktree"
[[ "$(git -C "$worktree" symbolic-ref --short HEAD)" == "autodevs/$id" ]] || fail "worktree not on autodevs/$id"
commits=$(git -C "$repo" rev-list --count "main..autodevs/$id")
[[ "$commits" == 3 ]] || fail "expected 3 commits (one per step), found $commits"
# The printed log is the branch's: every commit line appears in the output.
while read -r line; do
  grep -qF "$line" "$work/out" || fail "commit '$line' not printed"
done < <(git -C "$repo" log --oneline "main..autodevs/$id")
grep -q '^## Step 3: note how to run it' "$worktree/NOTES.md" || fail "the example agent's NOTES.md lacks step 3"
grep -q 'msg="Worker stopped"' "$work/demo/worker.log" || fail "the worker was not stopped gracefully"
echo "demo test passed (task $id, $commits commits)"
