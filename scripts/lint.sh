#!/usr/bin/env bash
# Runs clang-tidy (checks in .clang-tidy) over host/ with the compile database of the debug
# preset. Usage: scripts/lint.sh [FILES...]   (default: every .cpp under host/)
set -euo pipefail
cd "$(dirname "$0")/.."

tidy=$(command -v clang-tidy || ls /usr/bin/clang-tidy-* 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z "$tidy" ]]; then
  echo "lint: clang-tidy not found (apt-get install clang-tidy)" >&2
  exit 1
fi
if [[ ! -f build/debug/compile_commands.json ]]; then
  cmake --preset debug >/dev/null
fi
# Generated sources (e.g. protobuf) must exist before they are analysed.
cmake --build --preset debug >/dev/null

if [[ $# -gt 0 ]]; then
  files=("$@")
else
  mapfile -t files < <(find host -name '*.cpp' | sort)
fi
status=0
for f in "${files[@]}"; do
  "$tidy" -p build/debug --quiet "$f" || status=1
done
exit "$status"
