"""Golden-trace comparison for regression suites (`--expect-trace GOLDEN.jsonl`, `--update-golden`).

A golden file is JSON Lines as `JsonlSink` writes it. The comparison walks the golden events in order against
the selected events of the run: `seq` is always ignored, and so is every field a golden line leaves out (write
a golden with only `event` and `op` to pin just the sequence of operations). The first difference is reported
with the events around it from both sides. `write_golden` drops `seq`, `ts`, `pc`, `sym` and `insn`: they move
whenever the guest is rebuilt (another compiler allocates other registers), while a golden should pin what
the architecture defines (operation, operands, VMID, broadcast...). The trace file keeps them for debugging.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = ["GoldenDiff", "load_golden", "compare", "write_golden", "golden_events", "DROP_ON_UPDATE",
           "IGNORED"]

IGNORED = frozenset({"seq"})
DROP_ON_UPDATE = ("seq", "ts", "pc", "sym", "insn")
_MISSING = object()


@dataclass
class GoldenDiff:
    index: int                        # position in the event sequence (0-based)
    reason: str
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None
    key: str | None = None
    context_expected: list[dict[str, Any]] = field(default_factory=list)
    context_actual: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        import json                       # in each function, not at import: a run that compares nothing (start-up)

        out = [f"trace differs from golden at event #{self.index}: {self.reason}", "  golden:"]
        for e in self.context_expected:
            out.append(f"  {'>' if e is self.expected else ' '} {json.dumps(e, separators=(',', ':'))}")
        out.append("  actual:")
        for a in self.context_actual:
            out.append(f"  {'>' if a is self.actual else ' '} {json.dumps(a, separators=(',', ':'))}")
        return "\n".join(out)


def load_golden(path: str | Path) -> list[dict[str, Any]]:
    import json

    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(obj, dict) or "event" not in obj:
                raise ValueError(f"{path}:{n}: each line must be an object with an 'event' key")
            out.append(obj)
    return out


def golden_events(golden: Iterable[dict[str, Any]]) -> list[str]:
    """Event names a golden file covers (the default selection when comparing against it)."""
    return sorted({g["event"] for g in golden})


def compare(golden: list[dict[str, Any]], actual: list[dict[str, Any]], context: int = 2) -> GoldenDiff | None:
    """None when `actual` matches `golden`, else the first difference."""
    import json

    def ctx(seq: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
        return seq[max(0, i - context): i + context + 1]

    for i, g in enumerate(golden):
        if i >= len(actual):
            return GoldenDiff(i, f"run ended after {len(actual)} events; golden expects {g}", g, None,
                              context_expected=ctx(golden, i), context_actual=actual[max(0, i - context):])
        a = actual[i]
        for k, v in g.items():
            if k in IGNORED:
                continue
            got = a.get(k, _MISSING)
            if got != v or isinstance(got, bool) != isinstance(v, bool):   # JSON: true is not 1
                shown = "<absent>" if got is _MISSING else json.dumps(got)
                return GoldenDiff(i, f"{k}: expected {json.dumps(v)}, got {shown}", g, a, key=k,
                                  context_expected=ctx(golden, i), context_actual=ctx(actual, i))
    if len(actual) > len(golden):
        i = len(golden)
        return GoldenDiff(i, f"{len(actual) - len(golden)} more event(s) than the golden file, first {actual[i]}",
                          None, actual[i], context_expected=golden[max(0, i - context):],
                          context_actual=ctx(actual, i))
    return None


def write_golden(path: str | Path, actual: Iterable[dict[str, Any]], drop: Iterable[str] = DROP_ON_UPDATE) -> int:
    import json

    drop = tuple(drop)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for a in actual:
            f.write(json.dumps({k: v for k, v in a.items() if k not in drop}, separators=(",", ":")) + "\n")
            n += 1
    return n
