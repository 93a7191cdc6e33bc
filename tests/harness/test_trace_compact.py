"""Compact trace records (devmodel/trace.py `CompactLog`, `PayloadGroup`; harness/trace/compact.py; `tt_render` in
harness/native/tlbi_trap.c): the bytes are the Python templates' whatever the values, the order of records is
kept around other events, the native delivery's groups give what the Python hooks give record by record, and a
run that stops in the middle of a batch keeps its trace so far."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from devmodel.trace import Payload, PayloadGroup, Tracer
from harness import native
from harness.build import build_guest
from harness.cli import main
from harness.trace import compact
from harness.trace.catalog import load_all
from harness.trace.sinks import JsonlSink, TextSink

from trap_paths import PATHS, native_expected, use_path

load_all()
LOOP = Path(__file__).resolve().parents[2] / "tools" / "benches" / "tlbi_loop.S"


@pytest.fixture
def lib():
    got = native.tlbi_trap()
    if got is None:
        if native_expected():
            pytest.fail(f"native helper not built here: {native.status()}")
        pytest.skip(f"native helper unavailable: {native.status()}")
    return got


# dynamic values the C text must spell as Python does: zero, negatives, the int64 limits, beyond 64 bits (the
# Python template), and values the log refuses (None, bools, strings: the ordinary path)
VALUES = (0, 7, -5, 123456789012, (1 << 63) - 1, -(1 << 63), 1 << 70, None, True, "x y", 0x40080000)


def _emit_all(tr: Tracer, where: list) -> None:
    """Every kind of emission: payloads anchored or not (cpu/pc from where()), with decimal and hex holes,
    groups, and a field-by-field event between them."""
    hexed = tr.payload("tlbi_trap", ("xt", "addr"), cpu=0, pc=0x1000, el=1, op="VAE1IS", xt=0, addr=0,
                       broadcast=True)
    dvm = tr.payload("dvm_tlbi", ("msg", "addr"), src='a"b', dst="x y", op="VAE1IS", vmid=None, asid=42, addr=0,
                     size=4096, leaf=True, stage="S1", regime="EL1&0", msg=None)
    dsb = tr.payload("tlbi_dsb", cpu=1, pc=0x2000, domain="ISH", full=True)
    sync = tr.payload("dvm_sync", ("msg",), src="vm0.cpu0", acks=1, msg=None, acked="vm0.cpu1")
    group = PayloadGroup([dsb, sync])
    for i, v in enumerate(VALUES):
        where[0] = (i % 2, 0x3000 + 4 * (i % 3))
        tr.emit_payload(hexed, v, i)
        tr.emit_payload(dvm, i, v)
        tr.emit_payload(dsb)
        tr.emit_group(group, v)
        if i == 4:
            tr.emit("psci_call", cpu=1, fid=0xC4000003, name="CPU_ON", args=(1, 2, 3), ret=0)
        tr.emit_group(PayloadGroup([dvm, sync]), v, i, 2 * i)


@pytest.mark.parametrize("cls", [JsonlSink, TextSink])
def test_compact_file_is_the_bytes_of_the_python_templates(cls, lib, tmp_path):
    """The same emissions to a file of the sink's own (compact records, formatted in C) and to a stream
    (Python templates, record by record): the same text."""
    out = {}
    for tag in ("compact", "python"):
        where = [None]
        tr = Tracer("tlbi*,dvm*,psci*")
        tr.clock = lambda: 16
        path = tmp_path / f"{tag}.out"
        stream = io.StringIO()
        sink = cls(path if tag == "compact" else stream, where=lambda: where[0])
        tr.add_sink(sink)
        _emit_all(tr, where)
        if tag == "compact":
            assert tr.compact is not None and len(sink._writer.index) >= 4      # the compact path did run
        sink.close()
        out[tag] = path.read_text() if tag == "compact" else stream.getvalue()
    assert out["compact"].count("\n") > 5 * len(VALUES) and out["compact"] == out["python"]


def test_writer_text_of_hex_and_decimal_holes(lib):
    """`tt_render` alone: every hole kind, against Python's str() and %#x."""
    w = compact.CompactWriter(lib)
    tid = w.add(["<", "|", "|", "|", ">\n"], ["seq", "ts", 0, 1], [False, True], lambda s, t, v: "")
    got = []
    vals = (0, 1, -1, 255, -(1 << 63), (1 << 63) - 1)
    w.render([x for i, v in enumerate(vals) for x in (tid, i, 10 * i, v, v)], got.append)
    assert b"".join(bytes(g) for g in got).decode() == "".join(f"<{i}|{10 * i}|{v}|{v:#x}>\n"
                                                              for i, v in enumerate(vals))


def test_unknown_template_number_is_an_error_not_a_crash(lib):
    w = compact.CompactWriter(lib)
    w.add(["a", "\n"], ["seq"], [], lambda s, t, v: "")
    with pytest.raises(ValueError, match="no template"):
        w.render([5, 1, 0], lambda b: None)


def _loop_elf() -> str:
    return str(build_guest([LOOP], name="bench_tlbi_loop").path)


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_budget_mid_loop_same_trace_on_both_paths(fmt, tmp_path, monkeypatch, capsys):
    """The bench loop (TLBI VAE1IS + DSB ISH, 2 vCPUs) stopped by --max-insns in the middle of a native batch:
    both paths write the same complete lines, and the native one did use compact groups."""
    groups = []
    orig = Tracer.compact_id
    monkeypatch.setattr(Tracer, "compact_id", lambda self, g: groups.append(orig(self, g)) or groups[-1])
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.{fmt}"
        code = main(["run", _loop_elf(), "--cpus", "2", "--max-insns", "20003", "--trace", str(f),
                     "--trace-format", fmt, "--trace-events", "tlbi*,dvm*"])
        assert code != 0, "the budget ends the run"
        capsys.readouterr()
        out[path] = f.read_bytes()
    assert groups and all(isinstance(g, int) for g in groups)
    lines = out["native"].split(b"\n")
    assert lines[-1] == b"" and len(lines) > 10_000
    assert out["native"] == out["python"]
    if fmt == "jsonl":
        seqs = [json.loads(x)["seq"] for x in lines[:-1]]
        assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("path", PATHS)
def test_interrupt_keeps_the_trace_so_far(path, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of the loop (raised at the 3000th DVM Sync): exit 130 and a trace of whole lines,
    valid JSON, seq without gaps, up to the interrupted iteration."""
    from devmodel.dvm import Interconnect

    use_path(monkeypatch, path)
    calls = []
    orig = Interconnect.sync

    def sync(self, source, trace=True):
        calls.append(1)
        if len(calls) == 3000:
            raise KeyboardInterrupt
        return orig(self, source, trace)

    monkeypatch.setattr(Interconnect, "sync", sync)
    f = tmp_path / "t.jsonl"
    assert main(["run", _loop_elf(), "--cpus", "2", "--trace", str(f), "--trace-events", "tlbi*,dvm*"]) == 130
    assert "interrupted" in capsys.readouterr().err
    text = f.read_text()
    assert text.endswith("\n")
    recs = [json.loads(x) for x in text.splitlines()]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert 4 * 2999 <= len(recs) <= 4 * 3000
    assert [r["event"] for r in recs[:4]] == ["tlbi_trap", "dvm_tlbi", "tlbi_dsb", "dvm_sync"]


def test_group_takes_its_members_values():
    tr = Tracer("dvm_sync")
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    with pytest.raises(ValueError, match="1 values given, its members take 2"):
        tr.emit_group(PayloadGroup([p, p]), 1)


def test_log_refuses_what_it_cannot_hold(lib, tmp_path):
    """A bool, None, a string, an int beyond 64 bits as a dynamic value: not kept as an int (the ordinary path
    or the Python template formats it), so JSON true stays true."""
    tr = Tracer("dvm_sync")
    tr.clock = lambda: 0
    sink = JsonlSink(tmp_path / "t.jsonl")
    tr.add_sink(sink)
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    for v in (True, None, "s", 1 << 64, 3):
        tr.emit_payload(p, v)
    sink.close()
    msgs = [json.loads(x)["msg"] for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert msgs == [True, None, "s", 1 << 64, 3] and msgs[0] is True


def test_records_after_close_are_dropped(lib, tmp_path):
    tr = Tracer("dvm_sync")
    sink = JsonlSink(tmp_path / "t.jsonl")
    tr.add_sink(sink)
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    tr.emit_payload(p, 1)
    tr.emit_payload(p, 2)
    sink.close()
    for i in range(10):
        tr.emit_payload(p, 3 + i)
    assert not sink.compact.data
    assert (tmp_path / "t.jsonl").read_text().count("\n") == 2
