#!/usr/bin/env python3
"""Checks every `#include "<library>/..."` under host/ against the allowed dependencies.

The allowed graph is the ```layering block of docs/architecture.md: one line per library of
host/, "library: the libraries it may include". An include of a library not on its line, or a
folder of host/ that has no line, is an error. Usage: check-layering.py [--root DIR]
"""
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.MULTILINE)


def allowed_graph(doc: pathlib.Path) -> dict:
    text = doc.read_text()
    match = re.search(r"```layering\n(.*?)```", text, re.DOTALL)
    if not match:
        raise SystemExit(f"check-layering: no ```layering block in {doc}")
    graph = {}
    for line in match.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, deps = line.partition(":")
        graph[name.strip()] = set(deps.split())
    return graph


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    args = sys.argv[1:]
    if args[:1] == ["--root"] and len(args) == 2:
        root = pathlib.Path(args[1])
    elif args:
        print(__doc__, file=sys.stderr)
        return 2
    graph = allowed_graph(root / "docs" / "architecture.md")
    host = root / "host"
    libraries = sorted(p.name for p in host.iterdir() if p.is_dir())
    problems = []
    for library in libraries:
        if library not in graph:
            problems.append(f"host/{library}/: no line for `{library}` in the layering block of docs/architecture.md")
            continue
        for source in sorted((host / library).rglob("*")):
            if source.suffix not in (".hpp", ".cpp", ".h"):
                continue
            for number, line in enumerate(source.read_text().splitlines(), start=1):
                m = INCLUDE.match(line)
                if not m or m.group(1) == library or m.group(1) not in libraries:
                    continue
                if m.group(1) not in graph[library]:
                    allowed = " ".join(sorted(graph[library])) or "nothing"
                    problems.append(f"{source.relative_to(root)}:{number}: `{library}` includes `{m.group(1)}`, "
                                    f"but may include only: {allowed} (docs/architecture.md)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
