"""The recording fast path (devmodel/trace.py `Payload`, the line templates of harness/trace/sinks.py) writes the
same bytes as emitting every record field by field: each guest or scenario is traced once as it runs and once
with `Tracer.emit_payload` replaced by the field-by-field `Tracer.emit` of the same fields, in every format."""
from __future__ import annotations

import io

import pytest

from devmodel.trace import Payload, Record, Tracer
from harness.build import build_test_guest
from harness.cli import main
from harness.trace import compact
from harness.trace.sinks import JsonlSink, TextSink

FORMATS = ("jsonl", "text", "chrome")


def _field_by_field(self: Tracer, payload: Payload, *values) -> None:
    self.emit(payload.event, **payload.with_values(values))


def _both(monkeypatch, run) -> tuple[bytes, bytes]:
    fast = run("fast")
    with monkeypatch.context() as m:
        m.setattr(Tracer, "emit_payload", _field_by_field)
        m.setattr(compact, "writer", lambda: None)          # no compact records (harness/trace/compact.py)
        slow = run("slow")
    return fast, slow


def _slow_unless(default: set, cases: list) -> list:
    """`cases` with the ones not in `default` marked slow (the whole matrix runs with -m slow)."""
    return [c if c in default else pytest.param(*c, marks=pytest.mark.slow) for c in cases]


GUEST_CASES = _slow_unless({("smp_remap", 4, f) for f in FORMATS} | {("tlbi_el1_forms", 1, "jsonl")},
                           [(g, n, f) for g, n in (("smp_remap", 4), ("tlbi_el1_forms", 1), ("tlbi_dsb_sync", 2))
                            for f in FORMATS])


@pytest.mark.parametrize("guest,cpus,fmt", GUEST_CASES)
def test_guest_traces_are_the_same_bytes(guest, cpus, fmt, tmp_path, monkeypatch, capsys):
    elf = str(build_test_guest(guest))

    def run(tag: str) -> bytes:
        f = tmp_path / f"{tag}.{fmt}"
        code = main(["run", elf, "--cpus", str(cpus), "--trace", str(f), "--trace-format", fmt,
                     "--trace-events", "*"])
        assert code in (0, 132), capsys.readouterr().err
        return f.read_bytes()

    fast, slow = _both(monkeypatch, run)
    assert len(fast) > 500 and fast == slow


@pytest.mark.parametrize("fmt", ["jsonl", pytest.param("text", marks=pytest.mark.slow),
                                 pytest.param("chrome", marks=pytest.mark.slow)])
def test_scenario_traces_are_the_same_bytes(fmt, tmp_path, monkeypatch, capsys):
    ext = {"jsonl": "jsonl", "text": "log", "chrome": "json"}[fmt]

    def run(tag: str) -> bytes:
        f = tmp_path / f"{tag}.{ext}"
        main(["scenario", "run", "sva-btm", "--trace", str(f)])
        capsys.readouterr()
        return f.read_bytes()

    fast, slow = _both(monkeypatch, run)
    assert b"dvm_tlbi" in fast and fast == slow


@pytest.mark.parametrize("cls", [TextSink, JsonlSink])
def test_template_line_equals_the_formatted_record(cls):
    """A payload with dynamic fields and awkward values (quotes, backslashes, None, bools, big ints) through
    its template and through the field-by-field formatting of the same record, to a stream."""
    fields = dict(src='a"b\\c', dst="x y", op="VAE1IS", vmid=None, asid=0xFFFF, addr=1 << 63, size=4096,
                  leaf=True, stage=1, regime="EL10", msg=None)
    p = Payload("dvm_tlbi", fields, ("msg",))
    a, b = io.StringIO(), io.StringIO()
    fast, slow = cls(a), cls(b)
    for seq, msg in ((1, 7), (2, 123456789012), (3, None)):
        fast.write_payload(p, seq, seq * 16, (msg,))
        slow.write(Record(seq, "dvm_tlbi", seq * 16, p.with_values((msg,))))
    assert a.getvalue() == b.getvalue() and a.getvalue().count("\n") == 3


def test_payload_checks_its_fields_once():
    with pytest.raises(KeyError, match="no field"):
        Payload("dvm_tlbi", dict(bogus=1))
    with pytest.raises(KeyError, match="dynamic field"):
        Payload("tlbi_dsb", dict(cpu=0, pc=0, domain="ISH", full=True), ("pc",))
