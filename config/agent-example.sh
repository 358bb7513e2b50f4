#!/bin/sh
# EXAMPLE agent for AI_PROVIDER=command -- not a real AI. It shows the contract an agent CLI
# gets from the ai:execute handler, and gives tests a deterministic edit:
#   - working directory: the task's git worktree (branch autodevs/<task_id>)
#   - stdin: the step's instructions
#   - environment: AUTODEVS_TASK_ID, AUTODEVS_STEP, AUTODEVS_STEP_COUNT, AUTODEVS_STEP_TITLE,
#     AUTODEVS_WORKTREE
#   - exit 0 = step done (the worker commits whatever changed); non-zero = retry later
#   - stdout/stderr are kept (bounded by AI_OUTPUT_LIMIT) in autodevs_task_steps.output
# Use it with:  AI_PROVIDER=command AI_COMMAND="/path/to/agent-example.sh"
set -eu

instructions=$(cat)
{
  printf '## Step %s: %s\n\n' "${AUTODEVS_STEP:-?}" "${AUTODEVS_STEP_TITLE:-}"
  printf '%s\n\n' "$instructions"
} >> NOTES.md
echo "appended step ${AUTODEVS_STEP:-?} of ${AUTODEVS_STEP_COUNT:-?} to NOTES.md"
