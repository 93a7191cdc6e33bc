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
from typing import Any, Callable, Iterable, Protocol

from .record import Frozen, assign

__all__ = ["EventDef", "Record", "Payload", "PayloadGroup", "CompactLog", "Sink", "ListSink", "Tracer", "NULL_TRACER", "define", "REGISTRY",
           "select"]


class EventDef(Frozen):
    __slots__ = ("name", "fields", "doc")
    name: str
    fields: tuple[str, ...]
    doc: str

    def __init__(self, name: str, fields: tuple[str, ...], doc: str = "") -> None:
        assign(self, "name", name)
        assign(self, "fields", fields)
        assign(self, "doc", doc)


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


class PayloadGroup:
    """Payload records that are always emitted together (`Tracer.emit_group`): consecutive `seq` numbers, one
    `ts`, nothing between them - the trap of a broadcast TLBI and its `dvm_tlbi` messages when no receiver
    traces anything itself. The values of an emission are the members' dynamic values, in member order."""

    __slots__ = ("members", "counts", "total", "enabled")

    def __init__(self, members: Iterable[Payload]):
        self.members = tuple(members)
        self.counts = tuple(len(m.dynamic) for m in self.members)
        self.total = sum(self.counts)
        self.enabled: frozenset[str] | None = None      # a `Tracer.enabled` found to enable every member

    def __repr__(self) -> str:
        return f"<PayloadGroup {[m.event for m in self.members]}>"


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
    """A sink's buffer of compact payload records (see the module docstring): `data` is a flat list of ints,
    after the records in `packed` (the same ints as int64s, from `add_packed`).
    `tids[payload]` is the template number of an anchored payload, False when the sink has none for it, or a
    dict `where() -> number`; `learn(payload)` makes the number for the current `where()` (or False);
    `drain()` formats and writes `packed` then `data` and empties them, at the latest when either holds more
    than `limit` ints."""

    __slots__ = ("data", "packed", "tids", "where", "learn", "drain", "limit")

    def __init__(self, learn: Callable[[Payload], Any], drain: Callable[[], None],
                 where: Callable[[], Any] | None = None, limit: int = 1 << 16):
        from array import array                  # here: a run without a trace file does not import it

        self.data: list[int] = []
        self.packed = array("q")
        self.tids: dict[Payload, Any] = {}
        self.where, self.learn, self.drain, self.limit = where, learn, drain, limit

    def add(self, payload: Payload, seq: int, ts: Any, values: tuple[Any, ...]) -> bool:
        """Keep the record (True), or empty the log and leave the record to the ordinary path (False)."""
        t = self.tids.get(payload)
        if t.__class__ is dict:
            t = t.get(self.where())
        if t is None:
            t = self.learn(payload)
        if (t is False or ts.__class__ is not int or len(values) != len(payload.dynamic)
                or any(v.__class__ is not int for v in values)):
            self.drain()
            return False
        self.data.extend((t, seq, ts, *values))
        if len(self.data) > self.limit:
            self.drain()
        return True


    def add_packed(self, ints: Any) -> None:
        """Append records already made as int64s (a buffer of `tid, seq, ts, values...`), after every record
        kept so far: `data` moves to `packed` first (or, holding an int beyond 64 bits, is drained)."""
        if self.data:
            try:
                self.packed.fromlist(self.data)       # all or nothing
            except OverflowError:
                self.drain()
            else:
                del self.data[:]
        self.packed.frombytes(ints)
        if len(self.packed) > self.limit:
            self.drain()


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
        self.compact = None
        self.__dict__.pop("emit_payload", None)         # the compact emitter, if any: rewired at next emit

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
        if self.compact is not None:
            self.emit_payload = self._compact_emitter(self.compact)     # type: ignore[method-assign]
        return self._writers

    def _compact_emitter(self, log: CompactLog) -> Callable[..., None]:
        """`emit_payload` while every record goes to `log`: the method's compact case with its lookups done
        once (an instance attribute, dropped by `add_sink`); anything unusual goes to the method."""
        tids, data = log.tids, log.data
        method = Tracer.emit_payload

        def emit_payload(payload: Payload, /, *values: Any) -> None:
            if payload.event not in self.enabled:
                return
            clock = self.clock
            t = tids.get(payload)
            if t.__class__ is dict:
                t = t.get(log.where())
            if t.__class__ is not int or clock is None or len(values) != len(payload.dynamic):
                return method(self, payload, *values)
            for v in values:
                if v.__class__ is not int:
                    return method(self, payload, *values)
            ts = clock()
            if ts.__class__ is not int:
                return method(self, payload, *values)
            self.seq = seq = self.seq + 1
            data.extend((t, seq, ts, *values))
            if len(data) > log.limit:
                log.drain()

        return emit_payload

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
        log = self.compact                        # set by _wire, dropped by add_sink
        if log is not None:                       # CompactLog.add, inlined for the usual case
            t = log.tids.get(payload)
            if t.__class__ is dict:
                t = t.get(log.where())
            if t.__class__ is int and ts.__class__ is int and len(values) == len(payload.dynamic):
                for v in values:
                    if v.__class__ is not int:
                        break
                else:
                    data = log.data
                    data.extend((t, seq, ts, *values))
                    if len(data) > log.limit:
                        log.drain()
                    return
            if log.add(payload, seq, ts, values):
                return
        for w in (self._writers if len(self.sinks) == self._wired else self._wire()):
            w(payload, seq, ts, values)

    def emit_group(self, group: PayloadGroup, /, *values: Any) -> None:
        """Emit the members of `group` one after the other (`values`: their dynamic values, in member order):
        the same records as `emit_payload` of each; a compact log keeps them as one record."""
        if len(values) != group.total:
            raise ValueError(f"{group!r}: {len(values)} values given, its members take {group.total}")
        log = self.compact
        if log is not None and self._group_ok(group):
            clock = self.clock
            ts = clock() if clock else None
            t = log.tids.get(group)
            if t.__class__ is dict:
                t = t.get(log.where())
            if t is None:
                t = log.learn(group)
            if t.__class__ is int and ts.__class__ is int:
                for v in values:
                    if v.__class__ is not int:
                        break
                else:
                    seq = self.seq
                    n = len(group.members)
                    self.seq = seq + n
                    data = log.data
                    data.extend((t, seq + 1, ts))
                    if n > 1:
                        data.extend(range(seq + 2, seq + n + 1))
                    data.extend(values)
                    if len(data) > log.limit:
                        log.drain()
                    return
        at = 0
        for m, n in zip(group.members, group.counts):
            Tracer.emit_payload(self, m, *values[at:at + n])
            at += n

    def compact_id(self, group: PayloadGroup) -> int | None:
        """The compact log's template number for `group` at the sink's current `where()`, for a caller that
        appends the group's records to `compact.data` itself (`tid, seq, ts, the other members' seqs,
        values`), or None when the log cannot hold them."""
        log = self.compact
        if log is None or not self._group_ok(group):
            return None
        t = log.tids.get(group)
        if t.__class__ is dict:
            t = t.get(log.where())
        if t is None:
            t = log.learn(group)
        return t if t.__class__ is int else None

    def _group_ok(self, group: PayloadGroup) -> bool:
        """Are all of `group`'s events enabled (and every record goes to the compact log)?"""
        if group.enabled is self.enabled:
            return len(self.sinks) == self._wired
        if all(m.event in self.enabled for m in group.members):
            group.enabled = self.enabled
            return len(self.sinks) == self._wired
        return False

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
