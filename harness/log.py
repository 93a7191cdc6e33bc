"""QEMU-style debug log categories (`-d in_asm,int,guest_errors,unimp`, `-D FILE`).

`Log(categories, path)` writes to the file, or to stderr when no path is given. `log(category, msg)` is the
callable devices take; it is a no-op for categories that are off, and callers on hot paths test
`category in log.enabled` first.
"""
from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["CATEGORIES", "Log", "parse_categories", "listing"]

CATEGORIES = {
    "in_asm": "guest code as it is first executed, disassembled (capstone)",
    "int": "exceptions taken by vCPUs (HVC/SMC calls, semihosting, aborts, undefined instructions)",
    "guest_errors": "guest misbehaviour the devices tolerate (bad MMIO accesses, bad PSCI/semihosting calls)",
    "unimp": "guest use of unimplemented device features",
}


def listing() -> str:
    """The categories as QEMU's `-d help` lists its log items."""
    width = max(map(len, CATEGORIES)) + 2
    lines = ["Log items (comma separated):"]
    lines += [f"{name:<{width}}{doc}" for name, doc in CATEGORIES.items()]
    lines.append(f"{'all':<{width}}every item above")
    return "\n".join(lines) + "\n"


def parse_categories(spec: str | None) -> frozenset[str]:
    """'in_asm,int' -> {'in_asm', 'int'}; raises ValueError naming unknown categories."""
    if not spec:
        return frozenset()
    cats = {c.strip() for c in spec.split(",") if c.strip()}
    if "all" in cats:
        return frozenset(CATEGORIES)
    bad = sorted(cats - set(CATEGORIES))
    if bad:
        raise ValueError(f"unknown log category {', '.join(bad)} (choose from {', '.join(CATEGORIES)}, all)")
    return frozenset(cats)


class Log:
    def __init__(self, categories: str | frozenset[str] | None = None, path: str | None = None,
                 stream: TextIO | None = None):
        self.enabled = parse_categories(categories) if isinstance(categories, str) or categories is None \
            else frozenset(categories)
        self._own = False
        if path is not None:
            self.stream = open(path, "w", encoding="utf-8")
            self._own = True
        else:
            self.stream = stream
        self.lines = 0

    def __call__(self, category: str, msg: str) -> None:
        if category in self.enabled:
            out = self.stream if self.stream is not None else sys.stderr
            out.write(msg if msg.endswith("\n") else msg + "\n")
            self.lines += 1

    def close(self) -> None:
        if self._own:
            self.stream.close()
            self._own = False
        elif self.stream is not None:
            self.stream.flush()
