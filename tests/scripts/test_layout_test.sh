#!/usr/bin/env bash
# scripts/check-test-layout.py passes on the repository, and fails, naming what is wrong, on a
# source folder without a row, a row whose test folder is missing or holds no test, a binary the
# folder does not define, and a test file in a folder no row names.
# Usage: test_layout_test.sh <repo root>
set -euo pipefail
root=$1
checker="$root/scripts/check-test-layout.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "test_layout_test: $*" >&2; exit 1; }
expect_failure() {  # <message to find> <what was wrong>
  if python3 "$checker" --root "$work" 2>"$work/out"; then fail "$2 passed"; fi
  grep -qF "$1" "$work/out" || { cat "$work/out" >&2; fail "unclear message for $2"; }
}

python3 "$checker" --root "$root" || fail "the repository itself does not match docs/testing.md"

# A small tree that matches its table.
mkdir -p "$work/docs" "$work/host/queue" "$work/sdk" "$work/tests/host/queue" "$work/tests/sdk"
cat >"$work/docs/testing.md" <<'DOC'
### Source-to-test table

| source | tests | binaries and ctest names | what | needs |
|---|---|---|---|---|
| `host/queue/` | `tests/host/queue/` | `queue_unit_test` (`Order.*`) | order | nothing |
| `sdk/` | `tests/sdk/` | `sdk_cxx17_test` | the SDK | nothing |
DOC
printf 'wk_add_test(queue_unit_test SOURCES order_test.cpp)\n' >"$work/tests/host/queue/CMakeLists.txt"
printf 'foreach(std 17 20)\n  wk_add_test(sdk_cxx${std}_test SOURCES sdk_test.cpp)\nendforeach()\n' \
  >"$work/tests/sdk/CMakeLists.txt"
touch "$work/tests/host/queue/order_test.cpp" "$work/tests/sdk/sdk_test.cpp"
python3 "$checker" --root "$work" || fail "a matching tree failed"

# A source folder without a row.
mkdir -p "$work/host/newthing"
expect_failure "host/newthing/: no row" "a folder without a row"
rmdir "$work/host/newthing"

# A test file in a folder no row names.
mkdir -p "$work/tests/unit/queue"
touch "$work/tests/unit/queue/stray_test.cpp"
expect_failure "tests/unit/queue/stray_test.cpp: in a folder no row" "an unlisted test folder"
rm -r "$work/tests/unit"

# A binary the folder does not define.
sed -i 's/queue_unit_test (/queue_fast_test (/; s/`queue_unit_test`/`queue_fast_test`/' "$work/docs/testing.md"
expect_failure '`queue_fast_test` (row `host/queue/`) is defined by no CMakeLists.txt' "an undefined binary"
sed -i 's/queue_fast_test/queue_unit_test/' "$work/docs/testing.md"

# A named test folder that holds no test, then one that is missing.
mv "$work/tests/host/queue/order_test.cpp" "$work/tests/host/queue/order.cpp"
expect_failure "tests/host/queue/: named in docs/testing.md for \`host/queue/\`, but holds no test file" "an empty test folder"
rm -r "$work/tests/host/queue"
expect_failure "tests/host/queue/: named in docs/testing.md for \`host/queue/\`, but missing" "a missing test folder"
echo "test_layout_test: ok"
