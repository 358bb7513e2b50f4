#!/bin/sh
# Agent CLI for the e2e tests (AI_PROVIDER=command). Not a real AI.
#   AI_COMMAND="test-agent.sh CONTROL_DIR [MODE STEP]"
# Every run appends "<task_id> <step> <pid> <epoch ns>" to CONTROL_DIR/runs, then appends the step's
# instructions to STEPS.md in the worktree (the worker commits that). MODE applies to the FIRST
# run of step STEP only (CONTROL_DIR/MODE.done marks it used):
#   block     leaves a partial edit (partial-edit.txt), writes its pid to CONTROL_DIR/block.pid
#             and blocks until killed: the test SIGKILLs the worker meanwhile.
#   stubborn  ignores SIGTERM, writes its pid to CONTROL_DIR/stubborn.pid and blocks: the worker
#             must SIGKILL it when AI_TIMEOUT (+ the kill grace) passes.
# MODE pace applies to EVERY run: it takes half a second before editing (a busy machine).
set -eu

control=$1
mode=${2:-edit}
target=${3:-0}
instructions=$(cat)
echo "$AUTODEVS_TASK_ID $AUTODEVS_STEP $$ $(date +%s%N)" >> "$control/runs"
if [ "$mode" = pace ]; then sleep 0.5; fi

if [ "$mode" != edit ] && [ "$mode" != pace ] && [ "$AUTODEVS_STEP" = "$target" ] && [ ! -e "$control/$mode.done" ]; then
  : > "$control/$mode.done"
  case $mode in
    block)
      echo "half-done work of step $AUTODEVS_STEP" > partial-edit.txt
      ;;
    stubborn)
      trap '' TERM  # ignored signals stay ignored across exec: sleep ignores SIGTERM too
      ;;
  esac
  echo $$ > "$control/$mode.pid.tmp"
  mv "$control/$mode.pid.tmp" "$control/$mode.pid"
  exec sleep 300
fi

{
  printf '## Step %s of %s: %s\n\n' "$AUTODEVS_STEP" "$AUTODEVS_STEP_COUNT" "$AUTODEVS_STEP_TITLE"
  printf '%s\n\n' "$instructions"
} >> STEPS.md
echo "step $AUTODEVS_STEP done"
