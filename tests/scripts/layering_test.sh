#!/usr/bin/env bash
# scripts/check-layering.py passes on the repository, and fails, naming the file, the line and
# the rule, on a tree with an include that crosses the documented graph and on a host/ folder
# that the graph does not list.
# Usage: layering_test.sh <repo root>
set -euo pipefail
root=$1
checker="$root/scripts/check-layering.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "layering_test: $*" >&2; exit 1; }

python3 "$checker" || fail "the repository itself breaks the documented layering"

# A fake tree: the real graph, a queue file that includes plugins/, which queue may not.
mkdir -p "$work/docs" "$work/host/queue" "$work/host/plugins"
cp "$root/docs/architecture.md" "$work/docs/"
printf '#include "plugins/plugins.hpp"\n' >"$work/host/plugins/plugins.hpp"
printf '// fine\n#include "queue/broker.hpp"\n#include "plugins/plugins.hpp"\n' >"$work/host/queue/bad.cpp"
if python3 "$checker" --root "$work" 2>"$work/out"; then fail "a bad include passed"; fi
grep -q 'host/queue/bad.cpp:3: `queue` includes `plugins`' "$work/out" || { cat "$work/out" >&2; fail "unclear message"; }

# The same include from app/, which may include plugins/, passes.
rm "$work/host/queue/bad.cpp"
mkdir -p "$work/host/app"
printf '#include "plugins/plugins.hpp"\n' >"$work/host/app/main.cpp"
python3 "$checker" --root "$work" || fail "an allowed include failed"

# A folder with no line in the graph.
mkdir -p "$work/host/newthing"
if python3 "$checker" --root "$work" 2>"$work/out"; then fail "an unlisted folder passed"; fi
grep -q 'host/newthing/: no line' "$work/out" || { cat "$work/out" >&2; fail "unclear message"; }
echo "layering_test: ok"
