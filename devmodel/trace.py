"""Named trace events in one registry, and the `Tracer` that devices and the harness emit into.

This module is pure (no Unicorn, no harness) so devices can trace; the output sinks (QEMU-log text, JSON
Lines, Chrome/Perfetto) live in `harness.trace`. Tests assert on `Record`s collected by a `ListSink`, never on
printed text.

Every event is declared once with `define(name, fields, doc)`; names follow QEMU's `hw/arm/trace-events`
where an equivalent exists (`smmuv3_cmdq_opcode`, ...). Emitting an undeclared event or an undeclared field
is a programming error and raises `KeyError` at the emit site (caught by tests, not by users).

Hot paths check `name in tracer.enabled` (a frozenset) before building any field dict.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

__all__ = ["EventDef", "Record", "Sink", "ListSink", "Tracer", "NULL_TRACER", "define", "REGISTRY",
           "select"]


@dataclass(frozen=True)
class EventDef:
    name: str
    fields: tuple[str, ...]
    doc: str = ""


REGISTRY: dict[str, EventDef] = {}


def define(name: str, fields: Iterable[str], doc: str = "") -> EventDef:
    """Declare an event (idempotent for identical declarations)."""
    ev = EventDef(name, tuple(fields), doc)
    old = REGISTRY.get(name)
    if old is not None and old.fields != ev.fields:
        raise ValueError(f"trace event {name} redeclared with fields {ev.fields} (was {old.fields})")
    REGISTRY[name] = ev
    return ev


def select(patterns: str | Iterable[str] | None) -> frozenset[str]:
    """Event names matching comma-separated globs (QEMU `--trace` style); a leading '-' removes."""
    if patterns is None:
        return frozenset()
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    chosen: set[str] = set()
    for p in patterns:
        p = p.strip()
        if p.startswith("-"):
            chosen -= set(fnmatch.filter(REGISTRY, p[1:]))
        else:
            hits = fnmatch.filter(REGISTRY, p)
            if not hits and not any(c in p for c in "*?["):
                raise KeyError(f"unknown trace event {p!r}")
            chosen |= set(hits)
    return frozenset(chosen)


@dataclass
class Record:
    seq: int
    event: str
    ts: int                    # virtual time (instructions retired machine-wide, or seq when no clock)
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, k: str) -> Any:
        return self.fields[k]

    def get(self, k: str, default: Any = None) -> Any:
        return self.fields.get(k, default)


class Sink(Protocol):
    def write(self, rec: Record) -> None: ...

    def close(self) -> None: ...


class ListSink:
    """Keeps records in memory; what tests assert on."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, rec: Record) -> None:
        self.records.append(rec)

    def close(self) -> None:
        pass

    def of(self, *names: str) -> list[Record]:
        return [r for r in self.records if r.event in names]


class Tracer:
    """Fan-out of enabled events to sinks. `enabled` is the set of event names currently on."""

    def __init__(self, events: str | Iterable[str] | None = None, sinks: Iterable[Sink] = (),
                 clock: Callable[[], int] | None = None):
        self.sinks: list[Sink] = list(sinks)
        self.enabled: frozenset[str] = select(events) if events is not None else frozenset()
        self.seq = 0
        self.clock = clock

    def enable(self, patterns: str | Iterable[str]) -> None:
        self.enabled = self.enabled | select(patterns)

    def enable_all(self) -> None:
        self.enabled = frozenset(REGISTRY)

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, name: str, /, **fields: Any) -> None:
        if name not in self.enabled:
            return
        ev = REGISTRY[name]
        for k in fields:
            if k not in ev.fields:
                raise KeyError(f"trace event {name} has no field {k!r} (declared: {ev.fields})")
        self.seq += 1
        rec = Record(self.seq, name, self.clock() if self.clock else self.seq, fields)
        for s in self.sinks:
            s.write(rec)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class _NullTracer(Tracer):
    """A tracer that is always off (the default for devices built without one)."""

    def enable(self, patterns: str | Iterable[str]) -> None:
        raise RuntimeError("NULL_TRACER cannot be enabled; give the device its own Tracer")

    def enable_all(self) -> None:
        self.enable("*")


NULL_TRACER = _NullTracer()
