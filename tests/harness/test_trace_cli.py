"""`smmu-harness run` trace options: --trace/--trace-format/--trace-events, --expect-trace, --update-golden,
and the TLBI trap being on for every run (undefined TLBI -> 132, trace file still valid)."""
from __future__ import annotations

import json

import pytest

from harness.build import build_test_guest
from harness.cli import main


@pytest.fixture(scope="module")
def dsb_guest():
    return str(build_test_guest("tlbi_dsb_sync"))


def test_trace_formats(tmp_path, dsb_guest, capsys):
    for fmt in ("text", "jsonl", "chrome"):
        out = tmp_path / f"t.{fmt}"
        assert main(["run", dsb_guest, "--cpus", "2", "--trace", str(out), "--trace-format", fmt,
                     "--trace-events", "tlbi_trap,dvm*"]) == 0
        text = out.read_text()
        if fmt == "jsonl":
            recs = [json.loads(x) for x in text.splitlines()]
            assert {r["event"] for r in recs} == {"tlbi_trap", "dvm_tlbi", "dvm_sync"}   # no tlbi_dsb
            t = recs[0]
            assert t["op"] == "VAE1IS" and t["insn"].startswith("tlbi vae1is, x") and t["sym"].startswith("main+")
            assert isinstance(t["pc"], int) and t["cpu"] == 0
        elif fmt == "chrome":
            evs = json.loads(text)
            assert {e["id"] for e in evs if e["ph"] == "s"} == {e["id"] for e in evs if e["ph"] == "f"} != set()
        else:
            assert text.splitlines()[0].startswith("tlbi_trap cpu=0 pc=0x")


def test_expect_and_update_golden(tmp_path, dsb_guest, capsys):
    g = tmp_path / "g.jsonl"
    assert main(["run", dsb_guest, "--cpus", "2", "--expect-trace", str(g), "--update-golden"]) == 0
    assert main(["run", dsb_guest, "--cpus", "2", "--expect-trace", str(g)]) == 0
    capsys.readouterr()
    assert main(["run", dsb_guest, "--cpus", "1", "--expect-trace", str(g)]) == 1   # no receiver: differs
    err = capsys.readouterr().err
    assert "differs from golden at event #1" in err and 'expected "dvm_tlbi"' in err


def test_undefined_tlbi_exit_132_and_valid_chrome_trace(tmp_path, capsys):
    elf = str(build_test_guest("tlbi_el2_at_el1"))
    out = tmp_path / "t.json"
    assert main(["run", elf, "--trace", str(out), "--trace-format", "chrome"]) == 132
    names = [e["name"] for e in json.loads(out.read_text()) if e["ph"] == "X"]
    assert names[-1] == "tlbi_undef"
    assert "TLBI ALLE1IS is undefined at EL1" in capsys.readouterr().err
    # the same form at EL2 is fine
    assert main(["run", elf, "--el", "2", "--trace", str(out)]) != 132


@pytest.mark.parametrize("opts, msg", [(["--trace-events", "no_such_event"], "unknown trace event"),
                                       (["--update-golden"], "needs --expect-trace"),
                                       (["--expect-trace", "/nonexistent/g.jsonl"], "No such file")])
def test_bad_trace_options_are_usage_errors(dsb_guest, capsys, opts, msg):
    assert main(["run", dsb_guest, *opts]) == 125                  # EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert msg in err and "internal error" not in err
