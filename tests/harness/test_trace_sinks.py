"""harness.trace sinks: text / jsonl / chrome output of devmodel.trace records, PC annotation, closing on
every exit path (the files stay valid when the run dies)."""
from __future__ import annotations

import io
import json

import pytest

from devmodel.dvm import Interconnect
from devmodel.tlbi import decode, encoding, sys_word
from devmodel.tlbi_types import DecodeContext
from devmodel.trace import Tracer, define, select
from harness.trace import Annotator, ChromeSink, JsonlSink, TextSink, open_sink, record_obj

define("test_trace_ev", ("cpu", "pc", "addr", "op", "flag", "note", "xt"), "test-only event")


class _P:
    def __init__(self, name):
        self.dvm_name = name
        self.got = []

    def dvm_tlbi(self, op, msg):
        self.got.append(msg)

    def dvm_sync(self, sync):
        pass


CODE = {0x40080000: sys_word(0, 8, 7, 0).to_bytes(4, "little"),            # tlbi vmalle1
        0x40080004: sys_word(*encoding("VAE1IS"), rt=0).to_bytes(4, "little")}  # tlbi vae1is, x0


def _annot():
    return Annotator(lambda cpu, pc, n: CODE.get(pc),
                     lambda cpu, pc: f"main+{pc - 0x40080000:#x}" if pc >= 0x40080000 else None)


def _tracer(sink, events="test_trace_ev,dvm*"):
    return Tracer(events=events, sinks=[sink])


def test_record_obj_keys_and_annotation():
    tr = Tracer(events="test_trace_ev")
    got = []

    class S:
        def write(self, r):
            got.append(record_obj(r, _annot()))

        def close(self):
            pass

    tr.add_sink(S())
    tr.emit("test_trace_ev", cpu=1, pc=0x40080004, addr=0x1000, op="VAE1IS", flag=True, note=None)
    o = got[0]
    assert o["event"] == "test_trace_ev" and o["seq"] == 1 and o["cpu"] == 1 and o["pc"] == 0x40080004
    assert o["sym"] == "main+0x4" and o["insn"] == "tlbi vae1is, x0"
    assert o["addr"] == 0x1000 and o["flag"] is True and o["note"] is None


def test_text_sink_qemu_log_style():
    buf = io.StringIO()
    s = TextSink(buf, annotate=_annot())
    tr = _tracer(s)
    tr.emit("test_trace_ev", cpu=0, pc=0x40080004, addr=0xFFFF800000100000, op="VAE1IS", flag=False, xt=255)
    s.close()
    line = buf.getvalue().strip()
    assert line.startswith("test_trace_ev cpu=0 pc=0x40080004 sym=main+0x4 insn=\"tlbi vae1is, x0\" ")
    assert "addr=0xffff800000100000" in line and "op=VAE1IS" in line and "flag=0" in line and "xt=0xff" in line


def test_jsonl_sink_lines_are_objects(tmp_path):
    p = tmp_path / "t.jsonl"
    ic_tracer = Tracer(events="dvm*,test_trace_ev")
    with JsonlSink(p, annotate=_annot(), where=lambda: (0, 0x40080004)) as s:
        ic_tracer.add_sink(s)
        ic = Interconnect(ic_tracer)
        a, b = _P("cpu0"), _P("smmu0")
        ic.attach(a), ic.attach(b)
        op = decode(*encoding("VAE1IS"), 0x40080, DecodeContext(el=1, vmid=3))
        ic.tlbi(op, a)
        ic.sync(a)
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["dvm_tlbi", "dvm_sync"]
    t = lines[0]
    assert (t["src"], t["dst"], t["op"], t["vmid"], t["addr"], t["msg"]) == ("cpu0", "smmu0", "VAE1IS", 3,
                                                                             0x40080000, 1)
    # cpu/pc/sym/insn filled from the harness context (the TLBI being handled)
    assert (t["cpu"], t["pc"], t["sym"], t["insn"]) == (0, 0x40080004, "main+0x4", "tlbi vae1is, x0")
    assert lines[1]["acks"] == 1


def _chrome_run(path, crash=False):
    tr = Tracer(events="dvm*,test_trace_ev")
    s = ChromeSink(path)
    tr.add_sink(s)
    try:
        ic = Interconnect(tr)
        cpus = [_P("cpu0"), _P("cpu1"), _P("smmu0")]
        for p in cpus:
            ic.attach(p)
        tr.emit("test_trace_ev", cpu=0, pc=0x40080004, op="VAE1IS")
        ic.tlbi(decode(*encoding("VAE1IS"), 1, DecodeContext(el=1)), cpus[0])
        ic.sync(cpus[0])
        if crash:
            raise RuntimeError("guest died")
    finally:
        s.close()


def test_chrome_tracks_and_flows(tmp_path):
    p = tmp_path / "t.json"
    _chrome_run(p)
    evs = json.loads(p.read_text())
    names = {(e["pid"], e["args"]["name"]) for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(1, "cpu0"), (2, "cpu1"), (2, "smmu0")} <= names
    # every flow is a TLBI delivery ("dvm", id = DVM message number) or a Sync ack ("dvm_sync"), nothing else
    assert {e["cat"] for e in evs if e["ph"] in "sf"} == {"dvm", "dvm_sync"}
    starts = [e for e in evs if e["ph"] == "s" and e["cat"] == "dvm"]
    ends = [e for e in evs if e["ph"] == "f" and e["cat"] == "dvm"]
    assert sorted(e["id"] for e in starts) == sorted(e["id"] for e in ends) == [1, 2]
    trap = next(e for e in evs if e["ph"] == "X" and e["name"] == "test_trace_ev")
    for s in starts:                                  # flows start on the issuing vCPU's TLBI slice
        assert (s["pid"], s["tid"], s["ts"]) == (trap["pid"], trap["tid"], trap["ts"])
    # the DVM Sync: a flow from the Sync's slice on its source to an ack slice on each receiver
    sync = next(e for e in evs if e["ph"] == "X" and e["name"] == "dvm_sync")
    acks = {(e["pid"], e["tid"]): e for e in evs if e["ph"] == "X" and e["name"] == "dvm_sync_ack"}
    tid = {e["args"]["name"]: (e["pid"], e["tid"]) for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(acks) == {tid["cpu1"], tid["smmu0"]} and sync["args"]["acked"] == "cpu1,smmu0"
    s_sync = [e for e in evs if e["ph"] == "s" and e["cat"] == "dvm_sync"]
    f_sync = [e for e in evs if e["ph"] == "f" and e["cat"] == "dvm_sync"]
    assert len(s_sync) == len(f_sync) == 2 and len({e["id"] for e in s_sync} | {1, 2}) == 4
    for s in s_sync:
        f = next(e for e in f_sync if e["id"] == s["id"])
        assert (s["pid"], s["tid"], s["ts"]) == (sync["pid"], sync["tid"], sync["ts"])
        assert (f["pid"], f["tid"], f["ts"]) == (acks[(f["pid"], f["tid"])]["pid"], acks[(f["pid"], f["tid"])]["tid"],
                                                 acks[(f["pid"], f["tid"])]["ts"])


def test_chrome_valid_after_crash_and_when_truncated(tmp_path):
    p = tmp_path / "crash.json"
    with pytest.raises(RuntimeError):
        _chrome_run(p, crash=True)
    assert any(e.get("name") == "dvm_sync" for e in json.loads(p.read_text()))
    # killed before close: what was flushed is the JSON Array Format without its optional closing bracket
    q = tmp_path / "trunc.json"
    s = ChromeSink(q)
    tr = Tracer(events="test_trace_ev", sinks=[s])
    tr.emit("test_trace_ev", cpu=0, pc=4, op="X")
    s.flush()
    text = q.read_text()
    assert not text.rstrip().endswith("]")
    assert json.loads(text + "]")[-1]["name"] == "test_trace_ev"
    s.close()
    s.close()                                         # idempotent
    assert json.loads(q.read_text())[-1]["name"] == "test_trace_ev"


def test_glob_selection():
    sel = select("dvm*,test_trace_*")
    assert {"dvm_tlbi", "dvm_sync", "test_trace_ev"} <= sel
    assert "dvm_tlbi" not in select("dvm*,-dvm_tlbi")
    with pytest.raises(KeyError):
        select("no_such_event")
    with pytest.raises(ValueError, match="unknown trace format"):
        open_sink(io.StringIO(), "xml")


def test_format_follows_the_file_name_when_not_given():
    from harness.trace.sinks import format_for
    assert [format_for(p) for p in ("t.jsonl", "T.NDJSON", "t.json", "t.log", "trace", "x.json.txt")] == \
        ["jsonl", "jsonl", "chrome", "text", "text", "text"]
