#!/usr/bin/env bash
# runnable_docs_test.py must fail on a failing command: a scratch root whose README has one
# passing and one failing runnable block, and one whose docs have none of either.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
worker=$1
plugins=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/docs"
printf '# t\n\n```sh runnable\ntrue\n```\n\n```sh runnable\ntrue\nfalse\ntrue\n```\n' >"$work/README.md"
if python3 "$here/runnable_docs_test.py" --root "$work" --worker "$worker" --plugins "$plugins" >"$work/out" 2>&1; then
  echo "FAIL: a failing runnable block passed"; cat "$work/out"; exit 1
fi
grep -q 'FAIL: the runnable block at README.md:8 exited with 1' "$work/out" || {
  echo "FAIL: the failing block was not named"; cat "$work/out"; exit 1
}
printf '# t\n\n```sh\nfalse\n```\n' >"$work/README.md"
if python3 "$here/runnable_docs_test.py" --root "$work" --worker "$worker" --plugins "$plugins" >"$work/out" 2>&1; then
  echo "FAIL: no runnable block at all passed"; cat "$work/out"; exit 1
fi
echo "OK: failing and missing runnable blocks fail the test"
