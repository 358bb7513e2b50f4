#!/usr/bin/env python3
"""The struct layout table of docs/sdk.md, generated from wk_abi.h and compared with the doc.

Every struct defined in the header is found by parsing it (so a new struct or field needs no
list to be kept up to date), and a C program compiled at run time with the given C compiler
reports sizeof, alignment, and each field's offset and size as that compiler lays them out. The
result is a markdown table that must equal the one between the abi-layout markers in
docs/sdk.md; authors of plugins in other languages copy their layouts from it.

The header has no implicit padding (the header matrix compiles it with -Wpadded), so the fields
of a struct must tile it exactly: a gap means a field the parser missed, and fails the run.

  layout_table.py             compare, print a diff on mismatch (exit 1); 77 = not x86-64 Linux
  layout_table.py --write     rewrite the table in docs/sdk.md
  layout_table.py --print     print the generated table
"""
import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BEGIN = "<!-- abi-layout:begin -->"
END = "<!-- abi-layout:end -->"
SKIP = 77  # ctest SKIP_RETURN_CODE
REGENERATE = "python3 tests/sdk/layout_table.py --write"
FUNCTION_POINTER = "function pointer"  # the signature is in the header; the layout is one pointer


class Problem(Exception):
    pass


def strip_comments_and_directives(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    lines, continued = [], False
    for line in text.split("\n"):
        directive = continued or line.lstrip().startswith("#")
        continued = directive and line.rstrip().endswith("\\")
        if not directive:
            lines.append(line)
    return "\n".join(lines)


def parse_field(declaration, struct):
    """(name, C type) of one member declaration, whitespace already collapsed."""
    fn = re.search(r"\(\s*(?:WK_CALL\s*)?\*\s*(\w+)\s*\)\s*\(", declaration)
    if fn:
        return fn.group(1), FUNCTION_POINTER
    if "," in declaration or ":" in declaration or "(" in declaration:
        raise Problem(f"{struct}: cannot read the member declaration '{declaration}' "
                      "(one declarator per line, no bit-fields)")
    m = re.fullmatch(r"(.*?)\b(\w+)\s*((?:\[[^\]]*\]\s*)*)", declaration)
    if not m or not m.group(1).strip():
        raise Problem(f"{struct}: cannot read the member declaration '{declaration}'")
    ctype = m.group(1).strip() + re.sub(r"\s+", "", m.group(3))
    return m.group(2), re.sub(r"\s*\*", "*", ctype)


def parse_structs(header_text):
    """[(tag, [(field, C type)...])] of every struct defined in the header, in header order."""
    code = strip_comments_and_directives(header_text)
    structs = []
    for m in re.finditer(r"\bstruct\s+(\w+)\s*\{([^{}]*)\}", code):
        tag, body = m.group(1), m.group(2)
        fields = []
        for declaration in body.split(";"):
            declaration = " ".join(declaration.split())
            if declaration:
                fields.append(parse_field(declaration, tag))
        if not fields:
            raise Problem(f"struct {tag} has no members the parser could read")
        structs.append((tag, fields))
    if not structs:
        raise Problem("no struct definitions found in the header")
    return structs


def probe_source(structs):
    out = ["#include <stddef.h>", "#include <stdio.h>", '#include "wk_abi.h"', "int main(void) {",
           "#if defined(__x86_64__) && defined(__linux__)", '  puts("platform x86_64-linux");',
           "#else", '  puts("platform other");', "#endif"]
    for tag, fields in structs:
        out.append(f'  printf("struct {tag} %zu %zu\\n", sizeof(struct {tag}), _Alignof(struct {tag}));')
        for name, _ in fields:
            out.append(f'  printf("field {tag} {name} %zu %zu\\n", offsetof(struct {tag}, {name}), '
                       f"sizeof(((struct {tag}*)0)->{name}));")
    out += ["  return 0;", "}", ""]
    return "\n".join(out)


def measure(structs, header, cc):
    """{tag: (size, align, {field: (offset, size)})} and the platform, from the compiled probe."""
    with tempfile.TemporaryDirectory() as work:
        source, exe = os.path.join(work, "layout_probe.c"), os.path.join(work, "layout_probe")
        with open(source, "w") as f:
            f.write(probe_source(structs))
        build = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", os.path.dirname(header),
                                source, "-o", exe], capture_output=True, text=True)
        if build.returncode != 0:
            raise Problem(f"the layout probe does not compile with {cc}:\n{build.stderr}")
        run = subprocess.run([exe], capture_output=True, text=True, check=True)
    platform, layout = None, {}
    for line in run.stdout.splitlines():
        words = line.split()
        if words[0] == "platform":
            platform = words[1]
        elif words[0] == "struct":
            layout[words[1]] = (int(words[2]), int(words[3]), {})
        else:
            layout[words[1]][2][words[2]] = (int(words[3]), int(words[4]))
    return platform, layout


def check_tiling(structs, layout):
    for tag, fields in structs:
        size, _, measured = layout[tag]
        end = 0
        for name, _ in fields:
            offset, field_size = measured[name]
            if offset != end:
                raise Problem(f"struct {tag}: {name} is at offset {offset}, expected {end}: implicit padding "
                              "(which wk_abi.h must not have) or a member the parser missed")
            end = offset + field_size
        if end != size:
            raise Problem(f"struct {tag}: the members end at {end} but sizeof is {size}: trailing padding "
                          "or a member the parser missed")


def render(structs, layout):
    lines = [f"<!-- generated from sdk/include/wk/wk_abi.h by `{REGENERATE}`; do not edit by hand -->",
             "",
             "| struct | size | align | field | C type | offset | field size |",
             "|---|---:|---:|---|---|---:|---:|"]
    for tag, fields in structs:
        size, align, measured = layout[tag]
        for i, (name, ctype) in enumerate(fields):
            offset, field_size = measured[name]
            head = [f"`{tag}`", str(size), str(align)] if i == 0 else ["", "", ""]
            shown_type = ctype if ctype == FUNCTION_POINTER else f"`{ctype}`"
            cells = head + [f"`{name}`", shown_type, str(offset), str(field_size)]
            lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(lines) + "\n"


def split_doc(doc_text, doc):
    begin, end = doc_text.find(BEGIN), doc_text.find(END)
    if begin < 0 or end < begin:
        raise Problem(f"{doc} has no '{BEGIN}' ... '{END}' block")
    start = begin + len(BEGIN) + 1  # the block starts on the line after the marker
    return doc_text[:start], doc_text[start:end], doc_text[end:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--header", default=os.path.join(ROOT, "sdk", "include", "wk", "wk_abi.h"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "sdk.md"))
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in the doc")
    mode.add_argument("--print", action="store_true", help="print the generated table")
    args = parser.parse_args()

    try:
        with open(args.header) as f:
            structs = parse_structs(f.read())
        platform, layout = measure(structs, args.header, args.cc)
        check_tiling(structs, layout)
        table = render(structs, layout)
        if args.print:
            sys.stdout.write(table)
            return 0
        if platform != "x86_64-linux":
            print("skipped: the table in the doc is for x86-64 Linux, this compiler targets another platform")
            return SKIP
        with open(args.doc) as f:
            doc_text = f.read()
        head, current, tail = split_doc(doc_text, args.doc)
    except Problem as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1

    if current == table:
        print(f"OK: the layout table in {args.doc} matches {args.header} "
              f"({len(structs)} structs, {sum(len(f) for _, f in structs)} fields)")
        return 0
    if args.write:
        with open(args.doc, "w") as f:
            f.write(head + table + tail)
        print(f"wrote the layout table of {len(structs)} structs into {args.doc}")
        return 0
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), table.splitlines(True),
                                               f"{args.doc} (as written)", "generated from wk_abi.h"))
    print(f"FAIL: the layout table in {args.doc} differs from what wk_abi.h gives (diff above).\n"
          f"Regenerate it with: {REGENERATE}  (from the repository root), and review the change: "
          "a moved field or a changed size is an ABI break.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
