"""File sinks for `devmodel.trace` records: QEMU-log-style text, JSON Lines and Chrome/Perfetto JSON.

Every sink turns a `Record` into the same plain object first (`record_obj`): `event`, `seq`, `ts`, `cpu`, `pc`
(integer), `sym` (`symbol+0xoff` of the PC), `insn` (capstone text of the instruction at the PC), then the
event's own fields, with enums turned into their values. `cpu`/`pc` come from the record's fields, or, for
events emitted while a vCPU instruction is being handled (a `dvm_tlbi` caused by a trapped TLBI), from the
`where()` callable the harness gives the sink; `sym`/`insn` come from the `annotate(cpu, pc)` callable.

Files are complete and valid whatever way the run ends: each sink writes whole lines, `close()` is
idempotent and also runs at interpreter exit, and the Chrome sink uses the JSON Array Format (a trailing `]`
written on close; readers such as Perfetto and chrome://tracing also accept the array without it).

Fast path (devmodel/trace.py "Recording fast path"): the text and jsonl sinks turn a `Payload` into a template
the first time they meet it (for one `where()` value, when its record takes cpu/pc from there): the line of
that record formatted as above with markers in place of `seq`, `ts` and the dynamic fields, cut at the
markers. Every later record of that payload is the template filled in with `%`, so its bytes are the ones the
field-by-field formatting gives (tests/harness/test_trace_fast.py compares them). A sink that opened its own
file collects lines and writes them in blocks; one given a stream (stderr) writes each line at once, so that
it stays in order with whatever else goes there. A text or jsonl sink with a file of its own also offers a
compact log (`compact`, devmodel/trace.py "Compact records"): payload records kept as integers and formatted
in bulk by the native `tt_render` (harness/trace/compact.py), with the bytes of the templates above.

Not done yet: binary Perfetto protobuf output, log rotation.
"""
from __future__ import annotations

import atexit
import re
import sys
import weakref
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Optional

from devmodel.trace import CompactLog, Payload, PayloadGroup, Record

from ..clock import HZ as CLOCK_HZ

__all__ = ["record_obj", "TextSink", "JsonlSink", "ChromeSink", "open_sink", "FORMATS", "HEX_FIELDS",
           "Annotate", "Where", "STDERR"]

Annotate = Callable[[Optional[int], int], tuple[Optional[str], Optional[str]]]
Where = Callable[[], Optional[tuple[int, int]]]

#: fields printed in hex by the text sink (addresses, raw register values)
HEX_FIELDS = frozenset({"pc", "addr", "xt", "size", "range_bytes", "ipa", "iova", "pa", "va", "val", "value",
                        "base", "offset"})
FORMATS = ("text", "jsonl", "chrome")
STDERR = "-"                 # the trace "file" name for stderr
_SIMPLE = frozenset({int, str, bool, float, type(None)})


def _first_encode(obj: Any) -> str:
    """`_ENCODE` until its first call: json is imported by a run that writes a trace, not by every run."""
    global _ENCODE
    import json
    _ENCODE = json.JSONEncoder(separators=(",", ":")).encode   # one encoder: json.dumps(..., separators=)
    return _ENCODE(obj)                                        # would build a new one per call


_ENCODE = _first_encode


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str, float)):
        return v.value if isinstance(v, Enum) else v
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def record_obj(rec: Record, annotate: Annotate | None = None, where: Where | None = None) -> dict[str, Any]:
    """The plain object every sink and the golden compare use for one record."""
    f = rec.fields
    cpu, pc = f.get("cpu"), f.get("pc")
    if cpu is None and pc is None and where is not None:
        w = where()
        if w is not None:
            cpu, pc = w
    sym = insn = None
    if annotate is not None and pc is not None:
        sym, insn = annotate(cpu, pc)
    obj: dict[str, Any] = {"event": rec.event, "seq": rec.seq, "ts": rec.ts, "cpu": cpu, "pc": pc,
                           "sym": sym, "insn": insn}
    for k, v in f.items():
        if k not in obj:
            obj[k] = v if type(v) in _SIMPLE else _plain(v)
    return obj


_OPEN: "weakref.WeakSet[_FileSink]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for s in list(_OPEN):
        s.close()


_MARK = "\x00{}\x00"                 # template holes (no real field value holds NUL characters)
_BLOCK = 512                         # lines a sink collects before writing them to its own file


class _FileSink:
    """Common part: the target (path or text stream), annotation callables, idempotent close."""

    def __init__(self, target: str | Path | IO[str], annotate: Annotate | None = None,
                 where: Where | None = None):
        if isinstance(target, (str, Path)):
            self._f: IO[str] = open(target, "w", encoding="utf-8")
            self._owned = True
        else:
            self._f = target
            self._owned = False
        self.annotate = annotate
        self.where = where
        self.closed = False
        self.count = 0
        self._pending: list[str] = []
        _OPEN.add(self)

    def bind(self, where: Where | None = None, annotate: Annotate | None = None,
             cpu_name: Callable[[int], str] | None = None) -> None:
        """Late binding of the machine-dependent helpers, for a sink opened before the machine existed
        (`scenario run --trace`): what the sink was not given at construction is taken from here."""
        if self.where is None:
            self.where = where
        if self.annotate is None:
            self.annotate = annotate
        if getattr(self, "cpu_name", False) is None:
            self.cpu_name = cpu_name

    def write(self, rec: Record) -> None:
        if self.closed:
            return
        self._write(record_obj(rec, self.annotate, self.where))
        self.count += 1

    def _write(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def _out(self, line: str) -> None:
        """One line: collected for a file of our own, written at once to a shared stream."""
        if self._owned:
            pending = self._pending
            pending.append(line)
            if len(pending) >= _BLOCK:
                self._drain()
        else:
            self._f.write(line)

    def _drain(self) -> None:
        if self._pending:
            self._f.write("".join(self._pending))
            self._pending.clear()

    def _finish(self) -> None:
        """Write the trailer (Chrome's closing bracket)."""

    def flush(self) -> None:
        if not self.closed:
            self._drain()
            self._f.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        try:
            self._drain()
            self._finish()
            self._f.flush()
        finally:
            if self._owned:
                self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt_text(k: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) and (k in HEX_FIELDS or k.endswith("addr")):
        return f"{v:#x}"
    if isinstance(v, str) and (" " in v or not v):
        return _ENCODE(v)
    return str(v)


def _renderer(pieces: list[str], holes: list[Any], conv: list[Callable[[Any], Any]]) -> Callable[..., str]:
    """`render(seq, ts, values)`: `pieces` with the holes between them filled in (a hole is "seq", "ts" or the
    index of a dynamic value, which `conv[index]` turns into its text). The usual shapes are f-strings."""
    ts_text = _ts_text
    if not holes:
        line = pieces[0]
        return lambda seq, ts, v: line
    if holes == ["seq", "ts"]:
        a, b, c = pieces
        return lambda seq, ts, v: f"{a}{seq}{b}{ts if type(ts) is int else ts_text(ts)}{c}"
    if holes == ["seq", "ts", 0]:
        a, b, c, d = pieces
        f0 = conv[0]
        return lambda seq, ts, v: f"{a}{seq}{b}{ts if type(ts) is int else ts_text(ts)}{c}{f0(v[0])}{d}"
    if holes == [0]:
        a, b = pieces
        f0 = conv[0]
        return lambda seq, ts, v: f"{a}{f0(v[0])}{b}"

    def render(seq: int, ts: Any, v: tuple[Any, ...]) -> str:
        out = [pieces[0]]
        for h, piece in zip(holes, pieces[1:]):
            out.append(str(seq) if h == "seq" else ts_text(ts) if h == "ts" else str(conv[h](v[h])))
            out.append(piece)
        return "".join(out)

    return render


def _ts_text(ts: Any) -> str:
    return str(ts) if type(ts) is int else _ENCODE(ts)


class _LineSink(_FileSink):
    """A sink that writes one line per record (`_format`), and payload records from templates: the line of the
    payload's record formatted with markers for `seq`, `ts` and its dynamic fields, cut at the markers, then
    filled in (`write_payload`, which `Tracer.emit_payload` calls directly)."""

    STAMPED = False                   # the line shows seq and ts

    def __init__(self, target: str | Path | IO[str], annotate: Annotate | None = None,
                 where: Where | None = None):
        super().__init__(target, annotate, where)
        self._templates: dict[Any, Any] = {}      # Payload -> renderer, or {where(): renderer}
        self.compact: CompactLog | None = None    # compact records (devmodel/trace.py), for a file of our own
        self._writer: Any = None
        if self._owned:
            from . import compact
            self._writer = compact.writer()
            if self._writer is not None:
                self.compact = CompactLog(self._learn, self._drain_compact, where)

    def bind(self, where: Where | None = None, annotate: Annotate | None = None,
             cpu_name: Callable[[int], str] | None = None) -> None:
        super().bind(where, annotate, cpu_name)
        if self.compact is not None:
            self.compact.where = self.where

    def _write(self, obj: dict[str, Any]) -> None:
        self._out(self._format(obj))

    def write(self, rec: Record) -> None:
        if self.compact is not None and (self.compact.data or self.compact.packed):
            self._drain_compact()
        if rec.payload is not None:
            self.write_payload(rec.payload, rec.seq, rec.ts, rec.values)
        else:
            super().write(rec)

    def _anchored(self, p: Payload) -> bool:
        """Does `p`'s line not depend on `where()` (its record has its own cpu or pc, or there is no where)?"""
        f = p.fields
        return self.where is None or f.get("cpu") is not None or f.get("pc") is not None

    def write_payload(self, p: Payload, seq: int, ts: Any, values: tuple[Any, ...]) -> None:
        if self.closed:
            return
        if self.compact is not None and (self.compact.data or self.compact.packed):
            self._drain_compact()
        self.count += 1
        t = self._templates.get(p)
        if t is None:
            t = self._templates[p] = self._template(p) if self._anchored(p) else {}
        if t.__class__ is dict:                   # the record's cpu/pc come from where() (record_obj)
            w = self.where()
            tw = t.get(w)
            if tw is None:
                tw = t[w] = self._template(p)
            t = tw
        self._out(t(seq, ts, values))

    def _learn(self, p: Payload | PayloadGroup) -> int | bool:
        """The compact template number of `p` at the current `where()` (False: `p` has no template)."""
        tids = self.compact.tids
        try:
            pieces, holes, keys = self._group_parts(p) if isinstance(p, PayloadGroup) else (
                *self._template_parts(p), p.dynamic)
        except ValueError:
            tid: int | bool = False
        else:
            tid = self._writer.add(pieces, holes, [self._int_hex(k) for k in keys],
                                   _renderer(pieces, holes, [self._value_text(k) for k in keys]))
        members = p.members if isinstance(p, PayloadGroup) else (p,)
        if all(self._anchored(m) for m in members):
            tids[p] = tid
        else:
            d = tids.get(p)
            if d.__class__ is not dict:
                d = tids[p] = {}
            d[self.where()] = tid
        return tid

    def _group_parts(self, g: PayloadGroup) -> tuple[list[str], list[Any], tuple[str, ...]]:
        """The members' lines one after the other: the first one's seq is the record's, the others' are its
        first values, then come the members' own values (`keys`: the field each value is shown as)."""
        keys: list[str] = ["seq"] * (len(g.members) - 1)
        pieces, holes = [""], []
        for k, m in enumerate(g.members):
            mp, mh = self._template_parts(m)
            base = len(keys)
            pieces[-1] += mp[0]
            for h, piece in zip(mh, mp[1:]):
                holes.append(h if h == "ts" or (h == "seq" and k == 0) else k - 1 if h == "seq" else base + h)
                pieces.append(piece)
            keys.extend(m.dynamic)
        return pieces, holes, tuple(keys)

    def _drain(self) -> None:
        if self._writer is not None:
            self.count += self._writer.settle()     # the writer thread's records come first
        super()._drain()

    def _drain_compact(self) -> None:
        """Write the compact records (after the lines collected before them). Packed records alone go to the
        writer's thread (harness/trace/compact.py `submit`), given away: the log gets a new array."""
        log = self.compact
        data, packed = log.data, log.packed
        if not data and not packed:
            return
        if not self.closed:
            self._drain()
            self._f.flush()
            write = self._f.buffer.write
            if not data and not log.limit < 0:      # not at close: the thread is joined there
                self._writer.submit(log, write)
                return
            if packed:
                self.count += self._writer.render_packed(packed, write)
            if data:
                self.count += self._writer.render(data, write)
        del packed[:]
        del data[:]

    def flush(self) -> None:
        if not self.closed and self.compact is not None:
            self._drain_compact()
        super().flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.compact is not None:
                self.compact.limit = -1          # records emitted after close are dropped at once
                self._drain_compact()
        finally:
            try:
                if self._writer is not None:
                    self.count += self._writer.stop()
            finally:
                super().close()

    def _int_hex(self, key: str) -> bool:
        """Does the line show an int value of `key` in hex (else in decimal)?"""
        return False

    def _template(self, p: Payload) -> Callable[..., str]:
        pieces, holes = self._template_parts(p)
        return _renderer(pieces, holes, [self._value_text(k) for k in p.dynamic])

    def _template_parts(self, p: Payload) -> tuple[list[str], list[Any]]:
        """The pieces of `p`'s line and the holes between them: "seq", "ts" or the index of a dynamic value."""
        marks = {k: _MARK.format(k) for k in ("seq", "ts", *p.dynamic)}
        rec = Record(0, p.event, 0, p.with_values(tuple(marks[k] for k in p.dynamic)))
        obj = record_obj(rec, self.annotate, self.where)
        obj["seq"], obj["ts"] = marks["seq"], marks["ts"]
        text = self._format(obj)
        keys = (("seq", "ts") if self.STAMPED else ()) + p.dynamic
        found = sorted((text.find(self._hole(k, marks[k])), k) for k in keys)
        pieces: list[str] = []
        holes: list[Any] = []
        at = 0
        for pos, k in found:
            hole = self._hole(k, marks[k])
            if pos < at or text.count(hole) != 1:
                raise ValueError(f"trace sink: no template for {p!r} (field {k})")
            pieces.append(text[at:pos])
            holes.append(k if k in ("seq", "ts") else p.dynamic.index(k))
            at = pos + len(hole)
        pieces.append(text[at:])
        return pieces, holes

    def _format(self, obj: dict[str, Any]) -> str:
        """The line of one record."""
        raise NotImplementedError

    def _hole(self, key: str, marker: str) -> str:
        """How the string `marker` shows as the value of `key` in `_format`'s line."""
        raise NotImplementedError

    def _value_text(self, key: str) -> Callable[[Any], Any]:
        """value -> what `_format` shows for it as the value of `key`."""
        raise NotImplementedError


class TextSink(_LineSink):
    """QEMU log backend style: one line per event, `name k=v ...`, addresses in hex, the PC's symbol+offset
    and capstone disassembly next to it (`pc=0x40080010 sym=main+0x10 insn="tlbi vae1is, x0"`)."""

    def _format(self, obj: dict[str, Any]) -> str:
        parts = [obj["event"]]
        for k, v in obj.items():
            if k in ("event", "seq", "ts"):
                continue
            if v is None and k in ("cpu", "pc", "sym", "insn"):
                continue
            parts.append(f"{k}={_fmt_text(k, v)}")
        return " ".join(parts) + "\n"

    def _hole(self, key: str, marker: str) -> str:
        return marker

    def _int_hex(self, key: str) -> bool:
        return key in HEX_FIELDS or key.endswith("addr")          # as _fmt_text

    def _value_text(self, key: str) -> Callable[[Any], Any]:
        return lambda v: _fmt_text(key, v if type(v) in _SIMPLE else _plain(v))


def _json_value(v: Any) -> Any:
    """A dynamic value as JSON: an int as it is (its str() is its JSON), anything else encoded."""
    return v if type(v) is int else _ENCODE(v if type(v) in _SIMPLE else _plain(v))


class JsonlSink(_LineSink):
    """One JSON object per line (see `record_obj` for the keys)."""

    STAMPED = True

    def _format(self, obj: dict[str, Any]) -> str:
        return _ENCODE(obj) + "\n"

    def _hole(self, key: str, marker: str) -> str:
        return _ENCODE(marker)

    def _value_text(self, key: str) -> Callable[[Any], Any]:
        return _json_value


_CPU_NAME = re.compile(r"(^|\.)cpu\d+$")
#: args the Chrome sink shows as hex strings: the text sink's hex fields, the exception registers and `*addr`
_CHROME_HEX = HEX_FIELDS | {"esr", "elr", "far", "vector"}
_SYNC_FLOW_BASE = 1 << 32            # ids of DVM Sync ack flows, above every DVM message number


def _chrome_arg(k: str, v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and (k in _CHROME_HEX or k.endswith("addr")):
        return f"{v:#x}"
    return v


class ChromeSink(_FileSink):
    """Chrome Trace Event Format (JSON Array Format), openable in ui.perfetto.dev.

    Process 1 "vCPUs" has one thread (track) per vCPU; process 2 "DVM receivers" one per receiver; process 3
    "host/devices" the rest. Each event is a complete slice ("X") one clock tick long at its virtual time:
    `ts` is the record's `ts` (ticks of the machine's virtual clock, harness/clock.py) in microseconds at `hz`
    (62.5 MHz: one tick, 16 ns, per instruction); events of one slice of the scheduler share its time, so on
    each track a slice starts no earlier than the previous one ends (ts is monotonic per track). A `dvm_tlbi`
    adds a flow (`s` on the issuing vCPU's track, bound to its `tlbi_trap` slice; `f` on the receiver's slice)
    whose id is the DVM message number, so the UI draws an arrow from each TLBI to the invalidations it caused;
    a `dvm_sync` adds a `dvm_sync_ack` slice on each acknowledging receiver's track (its `acked` field) and a
    flow from the Sync to each of them. Addresses (and raw register values) are hex strings in `args`.
    `cpu_name(index)` names a vCPU's track as the DVM messages name it (`vm0.cpu1`); default `cpu<index>`.
    The clock only runs while something needs time: `needs_time` asks the scheduler to count from the start.
    """

    PID_CPU, PID_DVM, PID_OTHER = 1, 2, 3
    needs_time = True

    def __init__(self, target, annotate=None, where=None, cpu_name: Callable[[int], str] | None = None,
                 hz: int = CLOCK_HZ):
        super().__init__(target, annotate, where)
        self.cpu_name = cpu_name
        self.hz = hz
        self.tick_us = 1_000_000 / hz
        self._tracks: dict[tuple[int, str], int] = {}
        self._last: dict[tuple[int, int], tuple[float, float]] = {}    # track -> (ts, end) of its last slice
        self._sync_flows = 0
        self._first = True
        self._f.write("[\n")
        for pid, name in ((self.PID_CPU, "vCPUs"), (self.PID_DVM, "DVM receivers"),
                          (self.PID_OTHER, "host/devices")):
            self._emit({"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": name}})

    def _emit(self, ev: dict[str, Any]) -> None:
        self._f.write(("" if self._first else ",\n") + _ENCODE(ev))
        self._first = False

    def _track(self, pid: int, name: str) -> tuple[int, int]:
        key = (pid, name)
        tid = self._tracks.get(key)
        if tid is None:
            tid = self._tracks[key] = 1 + sum(1 for p, _ in self._tracks if p == pid)
            self._emit({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}})
            self._emit({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index",
                        "args": {"sort_index": tid}})
        return pid, tid

    def _vcpu_track(self, cpu: int) -> tuple[int, int]:
        return self._track(self.PID_CPU, self.cpu_name(cpu) if self.cpu_name is not None else f"cpu{cpu}")

    def _named_track(self, name: str) -> tuple[int, int]:
        return self._track(self.PID_CPU if _CPU_NAME.search(name) else self.PID_OTHER, name)

    def _us(self, ticks: int) -> float:
        return round(ticks * self.tick_us, 3)

    def _slice(self, where: tuple[int, int], ts: float, obj: dict[str, Any]) -> float:
        """An X slice on `where` at `ts` (us), after the track's previous one; returns its ts."""
        last = self._last.get(where)
        if last is not None and ts < last[1]:
            ts = last[1]
        args = {k: _chrome_arg(k, v) for k, v in obj.items() if k not in ("event", "ts") and v is not None}
        self._emit({"ph": "X", "pid": where[0], "tid": where[1], "ts": ts, "dur": self.tick_us,
                    "name": obj["event"], "cat": obj["event"].split("_", 1)[0], "args": args})
        self._last[where] = (ts, round(ts + self.tick_us, 3))
        return ts

    def _flow(self, src: tuple[int, int], s_ts: float, dst: tuple[int, int], f_ts: float, fid: int,
              name: str) -> None:
        self._emit({"ph": "s", "pid": src[0], "tid": src[1], "ts": s_ts, "id": fid, "name": name, "cat": name})
        self._emit({"ph": "f", "bp": "e", "pid": dst[0], "tid": dst[1], "ts": f_ts, "id": fid, "name": name,
                    "cat": name})

    def _write(self, obj: dict[str, Any]) -> None:
        ts = self._us(obj["ts"])
        ev = obj["event"]
        if ev == "dvm_tlbi":
            self._tlbi(obj, ts)
        elif ev == "dvm_sync":
            self._sync(obj, ts)
        elif isinstance(obj.get("cpu"), int):
            self._slice(self._vcpu_track(obj["cpu"]), ts, obj)
        else:
            self._slice(self._track(self.PID_OTHER, ev.split("_", 1)[0]), ts, obj)

    def _tlbi(self, obj: dict[str, Any], ts: float) -> None:
        src = self._named_track(str(obj.get("src")))
        dst = self._track(self.PID_DVM, str(obj.get("dst")))
        at = self._slice(dst, ts, obj)
        msg = obj.get("msg")
        if msg is None:
            return
        last = self._last.get(src)
        if last is None:                      # no slice on the source track yet (host maintenance)
            start = self._slice(src, ts, {"event": "dvm_send", "op": obj.get("op")})
        else:
            start = last[0]                   # the source's last slice: the TLBI's trap
        self._flow(src, start, dst, at, msg, "dvm")

    def _sync(self, obj: dict[str, Any], ts: float) -> None:
        src = self._named_track(str(obj.get("src")))
        at = self._slice(src, ts, obj)
        for name in filter(None, str(obj.get("acked") or "").split(",")):
            dst = self._track(self.PID_DVM, str(name))
            ack = self._slice(dst, ts, {"event": "dvm_sync_ack", "src": obj.get("src"), "dst": name,
                                        "msg": obj.get("msg")})
            self._sync_flows += 1
            self._flow(src, at, dst, ack, _SYNC_FLOW_BASE + self._sync_flows, "dvm_sync")

    def _finish(self) -> None:
        self._f.write("\n]\n")


_SINKS = {"text": TextSink, "jsonl": JsonlSink, "chrome": ChromeSink}


def format_for(path: str | Path) -> str:
    """The trace format a file name implies: `.jsonl`/`.ndjson` JSON Lines, `.json` Chrome/Perfetto,
    anything else QEMU-log-style text."""
    name = str(path).lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "chrome" if name.endswith(".json") else "text"


def open_sink(target: str | Path | IO[str], fmt: str = "jsonl", annotate: Annotate | None = None,
              where: Where | None = None, cpu_name: Callable[[int], str] | None = None) -> _FileSink:
    """Open a sink of format `fmt` (text, jsonl, chrome) on a path or text stream; the path `-` is stderr (where
    QEMU's log trace backend writes; opening /dev/stderr instead would truncate a redirected log file)."""
    try:
        cls = _SINKS[fmt]
    except KeyError:
        raise ValueError(f"unknown trace format {fmt!r} (choose from {', '.join(FORMATS)})") from None
    if isinstance(target, str) and target == STDERR:
        target = sys.stderr
    if cls is ChromeSink:
        return cls(target, annotate, where, cpu_name)
    return cls(target, annotate, where)

