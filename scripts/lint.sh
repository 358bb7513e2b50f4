#!/usr/bin/env bash
# clang-tidy (checks in .clang-tidy, every finding is an error) over host/, plugins/ and
# sdk/examples/ — headers through HeaderFilterRegex — in parallel, one process per file.
# Exits non-zero on any finding and prints them (CI: scripts/test.sh calls it after the build).
# Usage: scripts/lint.sh [FILES...]     (default: every .cpp of those trees in the compile database)
# Environment:
#   WK_LINT_BUILD_DIR  build dir whose compile_commands.json is used (default build/lint; it is
#                      configured with the debug preset when missing — configure only: the project
#                      has no generated C/C++ sources, so clang-tidy needs no build)
#   WK_LINT_JOBS       parallel clang-tidy processes (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tidy=$(command -v clang-tidy || true)
if [[ -z "$tidy" ]]; then
  for candidate in /usr/bin/clang-tidy-[0-9]*; do [[ -x "$candidate" ]] && tidy=$candidate; done
fi
if [[ -z "$tidy" ]]; then
  echo "lint: clang-tidy not found (apt-get install clang-tidy)" >&2
  exit 1
fi

build_dir=${WK_LINT_BUILD_DIR:-build/lint}
if [[ ! -f "$build_dir/compile_commands.json" ]]; then
  cmake --preset debug -B "$build_dir" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wk-lint.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A copy of the compile database without GCC-only flags clang rejects ("unknown argument").
python3 - "$build_dir/compile_commands.json" "$work/compile_commands.json" <<'EOF'
import json, re, shlex, sys
gcc_only = re.compile(r"^(-fno-gnu-unique|-fconcepts.*|-fno-semantic-interposition|-fstack-clash-protection"
                      r"|-fcf-protection.*|-fno-allow-store-data-races|-flto=auto|-flto-partition=.*)$")
db = json.load(open(sys.argv[1]))
for e in db:
    if "arguments" in e:
        e["arguments"] = [a for a in e["arguments"] if not gcc_only.match(a)]
    else:
        e["command"] = shlex.join(a for a in shlex.split(e["command"]) if not gcc_only.match(a))
json.dump(db, open(sys.argv[2], "w"), indent=0)
EOF

if [[ $# -gt 0 ]]; then
  files=("$@")
else
  # Sources of host/, plugins/ and sdk/examples/ that the build compiles (i.e. in the database).
  mapfile -t files < <(python3 -c '
import json, os, sys
root = sys.argv[2]
for f in sorted({os.path.relpath(e["file"], root) for e in json.load(open(sys.argv[1]))}):
    if f.startswith(("host/", "plugins/", "sdk/examples/")) and f.endswith(".cpp"):
        print(f)' "$work/compile_commands.json" "$root")
fi

status=0
jobs=${WK_LINT_JOBS:-$(nproc)}
echo "lint: clang-tidy on ${#files[@]} files ($jobs jobs)"
mkdir -p "$work/out"
# One log per file (no interleaving); a file whose clang-tidy fails leaves a .fail marker.
# shellcheck disable=SC2016  # expanded by sh -c, not here
printf '%s\0' "${files[@]}" | xargs -0 -r -P"$jobs" -I{} sh -c '
  log="$3/out/$(echo "$1" | tr / _)"
  "$2" -p "$3" --quiet "$1" >"$log" 2>&1 || touch "$log.fail"' _ {} "$tidy" "$work"
for marker in "$work"/out/*.fail; do
  [[ -e "$marker" ]] || continue
  status=1
  grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' "${marker%.fail}" || true
done
if [[ $status -ne 0 ]]; then
  # A header's finding is reported once per including file: list it once (paths normalised).
  findings=$(cat "$work"/out/* | grep -E '^[^ ].*: (error|warning): ' |
             sed -E -e ':a' -e 's#/[^/.][^/]*/\.\./#/#' -e 'ta' -e "s#^$root/##" | sort -u)
  echo "lint: clang-tidy: $(grep -c . <<<"$findings") distinct findings:" >&2
  echo "$findings" >&2
fi

# Formatting (.clang-format): every C/C++ file we own, whole-tree only (not with a file list).
if [[ $# -eq 0 ]]; then
  format=$(command -v clang-format || ls /usr/bin/clang-format-* 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z "$format" ]]; then
    echo "lint: clang-format not found (apt-get install clang-format)" >&2
    status=1
  else
    mapfile -t sources < <(git ls-files 'host/*.[ch]pp' 'plugins/*.[ch]pp' 'plugins/*.h' 'sdk/*.h' 'sdk/*.[ch]pp' \
                             'tests/*.[ch]pp' 'tests/*.[ch]' 'bench/*.[ch]pp')
    if ! "$format" --dry-run -Werror "${sources[@]}" 2>"$work/format.log"; then
      status=1
      echo "lint: clang-format: these files differ from .clang-format (run clang-format -i on them):" >&2
      grep -oE '^[^:]+\.(cpp|hpp|h|c):' "$work/format.log" | sort -u | sed 's/:$//' >&2
    fi
  fi
fi

[[ $status -eq 0 ]] && echo "lint: clean"
exit "$status"
