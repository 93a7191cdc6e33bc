"""harness.trace golden comparison and TraceSession (the `--expect-trace` / `--update-golden` machinery)."""
from __future__ import annotations

import json

import pytest

from devmodel.trace import Tracer, define
from harness.trace import TraceSession, compare, load_golden, write_golden

define("test_golden_ev", ("cpu", "pc", "op", "addr"), "test-only event")


def _emit_run(tracer, ops):
    for i, (op, addr) in enumerate(ops):
        tracer.emit("test_golden_ev", cpu=0, pc=0x1000 + 4 * i, op=op, addr=addr)


def test_compare_ignores_seq_and_absent_fields():
    actual = [{"event": "e", "seq": 7, "op": "VAE1IS", "addr": 1, "pc": 5},
              {"event": "e", "seq": 8, "op": "VMALLE1IS", "addr": None, "pc": 9}]
    golden = [{"event": "e", "seq": 1, "op": "VAE1IS"}, {"event": "e", "op": "VMALLE1IS", "addr": None}]
    assert compare(golden, actual) is None


def test_compare_reports_first_difference_with_context():
    actual = [{"event": "e", "op": f"OP{i}", "addr": i} for i in range(6)]
    golden = [dict(a) for a in actual]
    golden[3]["addr"] = 99
    golden[4]["addr"] = 77                             # later differences are not the first
    d = compare(golden, actual)
    assert d is not None and d.index == 3 and d.key == "addr"
    assert d.expected["addr"] == 99 and d.actual["addr"] == 3
    assert [c["op"] for c in d.context_actual] == ["OP1", "OP2", "OP3", "OP4", "OP5"]
    text = str(d)
    assert "event #3" in text and "expected 99, got 3" in text and '> {"event":"e","op":"OP3"' in text


def test_compare_is_json_typed_true_is_not_1():
    """Golden files are JSON: a field that turns from a bool into an int (or back) is a difference."""
    golden = [{"event": "e", "broadcast": True, "leaf": False, "ttl": 0}]
    assert compare(golden, [{"event": "e", "broadcast": True, "leaf": False, "ttl": 0}]) is None
    d = compare(golden, [{"event": "e", "broadcast": 1, "leaf": False, "ttl": 0}])
    assert d is not None and d.key == "broadcast" and "expected true, got 1" in d.reason
    d = compare(golden, [{"event": "e", "broadcast": True, "leaf": False, "ttl": False}])
    assert d is not None and d.key == "ttl"


def test_compare_missing_and_extra_events():
    a = [{"event": "e", "op": "A"}, {"event": "e", "op": "B"}]
    d = compare(a + [{"event": "e", "op": "C"}], a)
    assert d.index == 2 and d.actual is None and "ended after 2" in d.reason
    d = compare(a[:1], a)
    assert d.index == 1 and d.expected is None and "more event" in d.reason
    d = compare([{"event": "e", "op": "A", "vmid": 1}], a[:1])
    assert d.key == "vmid" and "<absent>" in d.reason


def test_load_golden_rejects_bad_lines(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text('{"event":"e"}\n\n# comment\n[1]\n')
    with pytest.raises(ValueError, match=":4:"):
        load_golden(p)


def test_session_update_then_compare(tmp_path):
    g = tmp_path / "golden.jsonl"
    tr = Tracer()
    with TraceSession(events="test_golden_ev", expect_trace=g, update_golden=True) as s:
        s.attach(tr)
        _emit_run(tr, [("VAE1IS", 0x1000), ("VMALLE1IS", None)])
    assert s.updated == 2
    lines = [json.loads(x) for x in g.read_text().splitlines()]
    assert "seq" not in lines[0] and "pc" not in lines[0] and "ts" not in lines[0]
    assert lines[0]["op"] == "VAE1IS" and lines[0]["addr"] == 0x1000

    tr2 = Tracer()
    s2 = TraceSession(expect_trace=g)                  # events default to the golden's event names
    s2.attach(tr2)
    assert "test_golden_ev" in tr2.enabled
    _emit_run(tr2, [("VAE1IS", 0x1000), ("VMALLE1IS", None)])
    assert s2.close() is None

    tr3 = Tracer()
    s3 = TraceSession(expect_trace=g)
    s3.attach(tr3)
    try:
        _emit_run(tr3, [("VAE1IS", 0x2000)])
        raise RuntimeError("guest died")               # the compare still happens on the way out
    except RuntimeError:
        pass
    finally:
        s3.close()
    assert s3.diff is not None and s3.diff.index == 0 and s3.diff.key == "addr"


def test_session_writes_trace_file_even_on_error(tmp_path):
    t = tmp_path / "t.jsonl"
    tr = Tracer()
    with pytest.raises(RuntimeError):
        with TraceSession(trace=t, fmt="jsonl", events="test_golden_ev") as s:
            s.attach(tr)
            _emit_run(tr, [("A", 1)])
            raise RuntimeError("boom")
    assert json.loads(t.read_text().splitlines()[0])["op"] == "A"


def test_update_golden_needs_a_path():
    with pytest.raises(ValueError, match="expect-trace"):
        TraceSession(update_golden=True)


def test_write_golden_drops_volatile_fields(tmp_path):
    p = tmp_path / "g.jsonl"
    assert write_golden(p, [{"event": "e", "seq": 1, "ts": 2, "pc": 3, "sym": "main+0x4", "insn": "tlbi vae1is, x8",
                             "op": "VAE1IS"}]) == 1
    assert json.loads(p.read_text()) == {"event": "e", "op": "VAE1IS"}


def test_update_keeps_the_golden_event_selection(tmp_path):
    g = tmp_path / "g.jsonl"
    g.write_text('{"event":"test_golden_ev","op":"OLD"}\n')
    s = TraceSession(expect_trace=g, update_golden=True)
    assert s.enabled == {"test_golden_ev"}
