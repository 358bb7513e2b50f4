#!/usr/bin/env python3
"""Checks the source-to-test table of docs/testing.md against the tree.

Rules: every folder of host/ and plugins/, and sdk/, has a row; every test folder a row names
exists, holds a test file and defines the binaries and ctest names the row lists (in its
CMakeLists.txt or a parent's below tests/); every test file under tests/ lies in a folder some
row names. A test file is `*_test.{cpp,sh,py}` or `*_check.sh`. Usage: check-test-layout.py
[--root DIR]
"""
import pathlib
import re
import sys

HEADING = "### Source-to-test table"
CODE = re.compile(r"`([^`]+)`")
TEST_FILE = re.compile(r"(_test\.(cpp|sh|py)|_check\.sh)$")
# Folders of tests/ that hold helpers and fixtures, never tests.
NOT_TESTS = ("tests/support", "tests/fixtures")


def table_rows(doc: pathlib.Path) -> list:
    text = doc.read_text()
    if HEADING not in text:
        raise SystemExit(f"check-test-layout: no '{HEADING}' in {doc}")
    rows = []
    in_table = False
    for line in text[text.index(HEADING):].splitlines():
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] == "source" or set(cells[0]) <= set("-"):
            continue
        rows.append({
            "source": CODE.findall(cells[0]),
            "tests": [t.rstrip("/") for t in CODE.findall(cells[1])],
            # Binaries and ctest names are lower case; `Suite.*` names a part of a binary.
            "names": [n for n in CODE.findall(cells[2]) if n == n.lower() and "/" not in n],
            "text": cells[0],
        })
    return rows


def defined_names(root: pathlib.Path, folder: pathlib.Path) -> str:
    """The text of the CMakeLists.txt of folder and of its parents up to tests/."""
    text = ""
    current = folder
    while True:
        cmake = current / "CMakeLists.txt"
        if cmake.is_file():
            text += cmake.read_text()
        if current == root / "tests" or current == root:
            return text
        current = current.parent


def name_is_defined(name: str, cmake_text: str) -> bool:
    # `sdk.exports.*` and `sdk_cxx17_test` are made in loops: match what is fixed in them.
    stem = name.split("*")[0].rstrip(".")
    if re.search(r"\b" + re.escape(stem) + r"\b", cmake_text):
        return True
    looped = re.sub(r"\d+(_test)$", r"${std}\1", stem)
    return looped != stem and looped in cmake_text


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    args = sys.argv[1:]
    if args[:1] == ["--root"] and len(args) == 2:
        root = pathlib.Path(args[1])
    elif args:
        print(__doc__, file=sys.stderr)
        return 2
    rows = table_rows(root / "docs" / "testing.md")
    problems = []

    named_sources = {s.rstrip("/") for row in rows for s in row["source"]}
    sources = [f"{top}/{p.name}" for top in ("host", "plugins") if (root / top).is_dir()
               for p in sorted((root / top).iterdir()) if p.is_dir()]
    sources.append("sdk")
    for source in sources:
        if source not in named_sources:
            problems.append(f"{source}/: no row in the source-to-test table of docs/testing.md")

    claimed = set()
    for row in rows:
        if not row["tests"]:
            problems.append(f"docs/testing.md: the row for {row['text']} names no test folder")
        cmake_text = ""
        for test_dir in row["tests"]:
            folder = root / test_dir
            claimed.add(test_dir)
            if not folder.is_dir():
                problems.append(f"{test_dir}/: named in docs/testing.md for {row['text']}, but missing")
                continue
            if not any(TEST_FILE.search(p.name) for p in folder.iterdir() if p.is_file()):
                problems.append(f"{test_dir}/: named in docs/testing.md for {row['text']}, but holds no test file")
            cmake_text += defined_names(root, folder)
        for name in row["names"]:
            if cmake_text and not name_is_defined(name, cmake_text):
                problems.append(f"docs/testing.md: `{name}` (row {row['text']}) is defined by no CMakeLists.txt "
                                f"of {', '.join(row['tests'])}")

    tests = root / "tests"
    for path in sorted(tests.rglob("*")):
        if not path.is_file() or not TEST_FILE.search(path.name):
            continue
        folder = path.parent.relative_to(root).as_posix()
        if folder.startswith(NOT_TESTS):
            continue
        if folder not in claimed:
            problems.append(f"{path.relative_to(root)}: in a folder no row of docs/testing.md names")

    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
