#!/usr/bin/env python3
"""The code's shape, checked: no function over 80 lines and no file over 400 lines, outside
tests (files under tests/, benches/, fuzz/ and e2e/, files named tests.rs, and `#[cfg(test)]`
modules are not counted). A function runs from its `fn` line to its closing brace. Comments,
strings and char literals are blanked before braces are matched: a reviewer's reading, not a
compiler's. scripts/test.sh runs it; exit 1 lists what is over.

usage: check-shape.py [ROOT] [--functions N] [--files N] [--report]
  --report  print every file's counted lines and every function over the limit, exit 0
"""
import os, re, sys

SKIP_DIRS = {"tests", "benches", "examples", "fuzz", "e2e", "target", ".git", ".tools"}


def blank(src):
    """Comments, strings and char literals replaced by spaces; newlines kept."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c in "rb" and re.match(r'(br|r)#*"', src[i:i + 12]) and (
                i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'(br|r)(#*)"', src[i:])
            end = src.find('"' + m.group(2), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(2))
            out.append(re.sub(r"[^\n]", " ", src[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", src[i:j + 1]))
            i = j + 1
        elif c == "'" and (re.match(r"'(\\.|[^\\'])'", src[i:i + 4]) or src.startswith("'\\u{", i)
                           or src.startswith("'\\x", i)):
            j = src.find("'", i + 1)
            while src[j - 1] == "\\" and src[j - 2] != "\\":
                j = src.find("'", j + 1)
            out.append(" " * (j + 1 - i))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, open_brace):
    depth = 0
    for j in range(open_brace, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def test_spans(code):
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*(\{|;)", code):
        if m.group(3) == "{":
            spans.append((m.start(), block_end(code, m.end() - 1)))
    return spans


def measure(path):
    code = blank(open(path, encoding="utf-8", errors="replace").read())
    spans = test_spans(code)
    in_tests = lambda pos: any(a <= pos <= b for a, b in spans)
    tested_lines = sum(code.count("\n", a, b + 1) + 1 for a, b in spans)
    lines = code.count("\n") + (0 if code.endswith("\n") else 1) - tested_lines
    functions = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_]\w*)", code):
        if in_tests(m.start()):
            continue
        # The body's brace: the first `{` or `;` after the signature (a `;` is a declaration).
        k = m.end()
        depth = 0
        while k < len(code):
            ch = code[k]
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth -= 1 if ch != ">" or code[k - 1] != "-" else 0
            elif ch == ";" and depth <= 0:
                k = -1
                break
            elif ch == "{" and depth <= 0:
                break
            k += 1
        if k < 0 or k >= len(code):
            continue
        end = block_end(code, k)
        start_line = code.count("\n", 0, m.start()) + 1
        length = code.count("\n", m.start(), end) + 1
        functions.append((m.group(1), start_line, length))
    return lines, functions


def main():
    args = sys.argv[1:]
    opt = lambda name, default: int(args[args.index(name) + 1]) if name in args else default
    fn_limit, file_limit = opt("--functions", 80), opt("--files", 400)
    report = "--report" in args
    positional = [a for i, a in enumerate(args)
                  if not a.startswith("--") and (i == 0 or args[i - 1] not in ("--functions", "--files"))]
    root = positional[0] if positional else "."
    long_files, long_fns = [], []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for f in sorted(files):
            if not f.endswith(".rs") or f == "tests.rs" or f.endswith("_tests.rs"):
                continue
            path = os.path.relpath(os.path.join(dirpath, f), root)
            lines, functions = measure(os.path.join(dirpath, f))
            if report:
                print(f"{lines:6}  {path}")
            if lines > file_limit:
                long_files.append((lines, path))
            long_fns += [(n, path, line, name) for name, line, n in functions if n > fn_limit]
    for lines, path in sorted(long_files, reverse=True):
        print(f"file {path}: {lines} lines outside tests (limit {file_limit})")
    for n, path, line, name in sorted(long_fns, reverse=True):
        print(f"function {path}:{line} {name}: {n} lines (limit {fn_limit})")
    print(f"{len(long_files)} file(s) over {file_limit} lines, "
          f"{len(long_fns)} function(s) over {fn_limit} lines, outside tests")
    return 0 if report or not (long_files or long_fns) else 1


if __name__ == "__main__":
    sys.exit(main())
