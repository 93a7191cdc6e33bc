"""Named trace events in one registry, and the `Tracer` that devices and the harness emit into.

This module is pure (no Unicorn, no harness) so devices can trace; the output sinks (QEMU-log text, JSON
Lines, Chrome/Perfetto) live in `harness.trace`. Tests assert on `Record`s collected by a `ListSink`, never on
printed text.

Every event is declared once with `define(name, fields, doc)`; names follow QEMU's `hw/arm/trace-events`
where an equivalent exists (`smmuv3_cmdq_opcode`, ...). Emitting an undeclared event or an undeclared field
is a programming error and raises `KeyError` at the emit site (caught by tests, not by users).

Hot paths check `name in tracer.enabled` (a frozenset) before building any field dict.

Recording fast path (QEMU's simple trace backend records compact events and formats them later; here the
sinks format): an event that recurs with the same field values - the trap of one TLBI at one PC, the DVM
Sync of one DSB - is declared once as a `Payload` (`tracer.payload(name, dynamic=..., **fields)`, checked
then) and emitted with `tracer.emit_payload(payload, *values)`: the record carries the payload and the values
of its `dynamic` fields (a message number) instead of a field dict, which `Record.fields` builds only when
something reads it. File sinks (harness/trace/sinks.py) format a payload once into a template and fill in
`seq`, `ts` and the dynamic values; the output is the same bytes as for the same record emitted field by field.

Compact records: when a tracer's only sink offers a `CompactLog` (`sink.compact`, a jsonl or text file of its
own with the native formatter available), `emit_payload` does not call the sink: it appends `tid, seq, ts,
values...` as integers to the log (`tid`: the sink's template of the payload, for the current `where()` when
the record takes its cpu/pc from there) and the sink formats the log in bulk when it fills, before any other
record, and on flush and close. A record the log cannot hold (a value that is not an `int`, a payload the sink
has no template for) empties the log and takes the ordinary path, so the order of records never changes.
"""
from __future__ import annotations

import fnmatch
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

__all__ = ["EventDef", "Record", "Payload", "CompactLog", "Sink", "ListSink", "Tracer", "NULL_TRACER", "define", "REGISTRY",
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


class Payload:
    """The fields of a recurring event, declared (and checked) once: `fields` in emission order, of which the
    `dynamic` ones change at every emission (their values in `fields` are placeholders; given in field order;
    never `cpu` or `pc`, which decide a record's annotation). Immutable: sinks key what they derive from it by
    the object."""

    __slots__ = ("event", "fields", "dynamic")

    def __init__(self, event: str, fields: dict[str, Any], dynamic: tuple[str, ...] = ()):
        ev = REGISTRY[event]
        for k in fields:
            if k not in ev.fields:
                raise KeyError(f"trace event {event} has no field {k!r} (declared: {ev.fields})")
        for k in dynamic:
            if k not in fields or k in ("cpu", "pc"):
                raise KeyError(f"dynamic field {k!r} of {event}: not one of its fields {tuple(fields)} "
                               f"other than cpu and pc")
        self.event = event
        self.fields = dict(fields)
        self.dynamic = tuple(k for k in fields if k in dynamic)

    def with_values(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """The record's field dict for these dynamic `values`."""
        f = dict(self.fields)
        for k, v in zip(self.dynamic, values):
            f[k] = v
        return f

    def __repr__(self) -> str:
        return f"<Payload {self.event} {self.fields} dynamic={self.dynamic}>"


class Record:
    """One emitted event: `seq`, `event`, `ts` (virtual time: instructions retired machine-wide, or seq when the
    tracer has no clock) and its `fields` - given, or built on first access from `payload` and `values`."""

    __slots__ = ("seq", "event", "ts", "_fields", "payload", "values")

    def __init__(self, seq: int, event: str, ts: int, fields: dict[str, Any] | None = None,
                 payload: Payload | None = None, values: tuple[Any, ...] = ()):
        self.seq, self.event, self.ts = seq, event, ts
        self._fields = fields if fields is not None or payload is not None else {}
        self.payload, self.values = payload, values

    @property
    def fields(self) -> dict[str, Any]:
        f = self._fields
        if f is None:
            f = self._fields = self.payload.with_values(self.values)
        return f

    def __getitem__(self, k: str) -> Any:
        return self.fields[k]

    def get(self, k: str, default: Any = None) -> Any:
        return self.fields.get(k, default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.seq, self.event, self.ts, self.fields) == (other.seq, other.event, other.ts, other.fields)

    __hash__ = None                                    # type: ignore[assignment]   (mutable, like the dataclass was)

    def __repr__(self) -> str:
        return f"Record(seq={self.seq!r}, event={self.event!r}, ts={self.ts!r}, fields={self.fields!r})"


class CompactLog:
    """A sink's buffer of compact payload records (see the module docstring). `tids[payload]` is the template
    number of an anchored payload, False when the sink has none for it, or a dict `where() -> number`;
    `learn(payload)` makes the number for the current `where()` (or False); `drain()` formats and writes `data` and empties it, at the latest when it holds more
    than `limit` integers."""

    __slots__ = ("data", "tids", "where", "learn", "drain", "limit")

    def __init__(self, learn: Callable[[Payload], Any], drain: Callable[[], None],
                 where: Callable[[], Any] | None = None, limit: int = 1 << 16):
        self.data = array("q")
        self.tids: dict[Payload, Any] = {}
        self.where, self.learn, self.drain, self.limit = where, learn, drain, limit

    def add(self, payload: Payload, seq: int, ts: Any, values: tuple[Any, ...]) -> bool:
        """Keep the record (True), or empty the log and leave the record to the ordinary path (False)."""
        t = self.tids.get(payload)
        if t.__class__ is dict:
            t = t.get(self.where())
        if t is None:
            t = self.learn(payload)
        if t is False or ts.__class__ is not int or any(v.__class__ is not int for v in values):
            self.drain()
            return False
        data = self.data
        n = len(data)
        try:
            data.extend((t, seq, ts, *values))
        except OverflowError:                  # an int beyond 64 bits: the ordinary path formats it
            del data[n:]
            self.drain()
            return False
        if n > self.limit:
            self.drain()
        return True


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
        self._checked: set[tuple[str, tuple[str, ...]]] = set()    # (event, field names) already validated
        self._writers: tuple[Callable[..., None], ...] = ()        # how payload records reach the sinks
        self._wired = -1                                           # len(sinks) the writers were made for
        self.compact: CompactLog | None = None                     # the only sink's compact log, if it has one

    def enable(self, patterns: str | Iterable[str]) -> None:
        self.enabled = self.enabled | select(patterns)

    def enable_all(self) -> None:
        self.enabled = frozenset(REGISTRY)

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self._wired = -1

    def _wire(self) -> tuple[Callable[..., None], ...]:
        """Payload records go to a sink's `write_payload(payload, seq, ts, values)` when it has one (no Record
        is built for it), to the others' `write` as one shared `Record`."""
        direct = [s.write_payload for s in self.sinks if hasattr(s, "write_payload")]
        others = tuple(s for s in self.sinks if not hasattr(s, "write_payload"))
        if others:
            def generic(p: Payload, seq: int, ts: int, values: tuple[Any, ...]) -> None:
                rec = Record(seq, p.event, ts, None, p, values)
                for sink in others:
                    sink.write(rec)
            direct.append(generic)
        self._writers, self._wired = tuple(direct), len(self.sinks)
        self.compact = getattr(self.sinks[0], "compact", None) if len(self.sinks) == 1 else None
        return self._writers

    def emit(self, name: str, /, **fields: Any) -> None:
        if name not in self.enabled:
            return
        key = (name, tuple(fields))
        if key not in self._checked:
            ev = REGISTRY[name]
            for k in fields:
                if k not in ev.fields:
                    raise KeyError(f"trace event {name} has no field {k!r} (declared: {ev.fields})")
            self._checked.add(key)
        self.seq += 1
        rec = Record(self.seq, name, self.clock() if self.clock else self.seq, fields)
        for s in self.sinks:
            s.write(rec)

    def payload(self, name: str, /, dynamic: tuple[str, ...] = (), **fields: Any) -> Payload:
        """Declare a recurring event (see the module docstring); `dynamic` fields are given at each emission."""
        return Payload(name, fields, dynamic)

    def emit_payload(self, payload: Payload, /, *values: Any) -> None:
        """Emit `payload` with the values of its dynamic fields (in `payload.dynamic` order)."""
        if payload.event not in self.enabled:
            return
        self.seq = seq = self.seq + 1
        clock = self.clock
        ts = clock() if clock else seq
        writers = self._writers if len(self.sinks) == self._wired else self._wire()
        log = self.compact
        if log is not None:                       # CompactLog.add, inlined for the usual case
            t = log.tids.get(payload)
            if t.__class__ is dict:
                t = t.get(log.where())
            if t.__class__ is int and ts.__class__ is int:
                for v in values:
                    if v.__class__ is not int:
                        break
                else:
                    data = log.data
                    n = len(data)
                    try:
                        data.extend((t, seq, ts, *values))
                    except OverflowError:         # beyond 64 bits: the ordinary path formats it
                        del data[n:]
                    else:
                        if n > log.limit:
                            log.drain()
                        return
            if log.add(payload, seq, ts, values):
                return
        for w in writers:
            w(payload, seq, ts, values)

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
