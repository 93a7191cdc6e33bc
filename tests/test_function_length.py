"""No function in devmodel/ or harness/ is longer than 60 lines unless a comment at it says why.

A function's length is its own lines: from `def` to its last line, docstring included, without the lines of the
functions and classes nested in it (those are measured on their own). The comment that allows more is
`# long function: <why>` on the `def` line or in the comment block directly above it (or above its decorators).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("devmodel", "harness")
LIMIT = 60
ALLOW = re.compile(r"#\s*long function:\s*\S")

# TEMPORARY: the lead removes these two lists once the parallel changes that make these paths comply are
# merged (the SMMU model's extension points and records, the VMM/vSMMU and the simulated host are reworked
# elsewhere).
TEMPORARY_EXCLUDED_PATHS = ()
# TEMPORARY as well: harness/build.py is being changed in parallel; its owner makes build_guest comply.
TEMPORARY_EXCLUDED_FUNCTIONS: set[tuple[str, str]] = set()


def own_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = set(range(fn.lineno, fn.end_lineno + 1))
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines -= set(range(node.lineno, node.end_lineno + 1))
    return len(lines)


def allowed(fn: ast.FunctionDef | ast.AsyncFunctionDef, source_lines: list[str]) -> bool:
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    if ALLOW.search(source_lines[fn.lineno - 1]):
        return True
    i = first - 2
    while i >= 0 and source_lines[i].strip().startswith("#"):
        if ALLOW.search(source_lines[i]):
            return True
        i -= 1
    return False


def long_functions(source: str, path: str = "<source>") -> list[tuple[str, str, int]]:
    """(path, name, own lines) of every function over LIMIT lines without the allowing comment."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = own_lines(node)
            if n > LIMIT and not allowed(node, lines):
                out.append((path, node.name, n))
    return out


def _tree_violations() -> list[tuple[str, str, int]]:
    found = []
    for tree in TREES:
        for p in sorted((ROOT / tree).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            found += long_functions(p.read_text(), rel)
    return found


def test_no_function_over_60_lines():
    found = [v for v in _tree_violations() if not v[0].startswith(TEMPORARY_EXCLUDED_PATHS)
             and (v[0], v[1]) not in TEMPORARY_EXCLUDED_FUNCTIONS]
    assert not found, "split these (or say why at the function with '# long function: <why>'):\n" + "\n".join(
        f"  {path}: {name}() has {n} lines" for path, name, n in found)


def test_the_rule_itself():
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT - 1))
    assert long_functions(f"def f():\n{body}\n") == []                                      # exactly 60
    assert long_functions(f"def f():\n{body}\n    y = 0\n") == [("<source>", "f", 61)]
    nested = f"def outer():\n    def inner():\n{body.replace('    ', '        ')}\n    return inner\n"
    assert long_functions(nested) == []                   # inner has 60 lines, outer 2 of its own
    assert long_functions(f"# long function: one table, read top to bottom\ndef f():\n{body}\n    y = 0\n") == []
    assert long_functions(f"@staticmethod\ndef f():  # long function: a state machine\n{body}\n    y = 0\n") == []
    assert long_functions(f"# long function:\ndef f():\n{body}\n    y = 0\n") != []           # a reason is needed
