#!/usr/bin/env python3
"""Benchmarks: `python3 tools/bench.py NAME [args]`, NAME in harness, trap, smmu, vmid, semihosting, console, gic, suites, qemu (or `all`).

Each benchmark lives in `tools/benches/<name>.py` with `run(argv) -> dict` and prints its rates and the ratio
against a baseline measured in the same run, so results do not depend on the machine's speed. Exit status 1
when a ratio misses its goal (the goal is printed next to it).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: the checkout this script is in: first on sys.path, so every bench measures this tree's code (the editable
#: install may point at another checkout, e.g. the one a worktree was made from)
ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))

NAMES = ("harness", "trap", "smmu", "vmid", "semihosting", "console", "gic", "suites", "qemu")


def _load(name: str):
    """Load tools/benches/<name>.py by path (tools/ is not an installed package)."""
    path = Path(__file__).resolve().parent / "benches" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"smmu_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    names = NAMES if name == "all" else (name,)
    worst = 0
    for n in names:
        if n not in NAMES:
            print(f"bench: unknown benchmark {n!r} (choose from {', '.join(NAMES)} or all)", file=sys.stderr)
            return 2
        mod = _load(n)
        result = mod.run(rest)
        if not result.get("ok", True):
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
