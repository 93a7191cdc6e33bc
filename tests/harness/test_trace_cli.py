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


# -- no silent no-ops; QEMU-style `help` listings ------------------------------------------------------------
@pytest.mark.parametrize("opts, msg", [
    (["--trace", "{tmp}/t.log", "--trace-events", "nomatch*"], "selects no trace event"),
    (["--trace", "{tmp}/t.log", "--trace-events", "tlbi*,-tlbi*"], "selects no trace event"),
    (["--trace-format", "text"], "--trace-format text needs --trace FILE"),
    (["--trace-events", "tlbi*"], "--trace-events needs --trace FILE"),
])
def test_trace_options_that_would_do_nothing_are_usage_errors(dsb_guest, tmp_path, capsys, opts, msg):
    assert main(["run", dsb_guest, *[o.format(tmp=tmp_path) for o in opts]]) == 125
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "t.log").exists()


@pytest.mark.parametrize("opts", [["--trace", "help"], ["--trace-events", "help"], ["--trace-events", "tlbi*,help"]])
def test_trace_help_lists_the_events_and_writes_no_file(tmp_path, opts):
    from devmodel.trace import REGISTRY
    from guestbin import run_cli
    from harness.trace.catalog import load_all
    load_all()
    p = run_cli("run", *opts, cwd=tmp_path)                # no ELF needed, as `qemu -trace help`
    assert p.returncode == 0 and p.stderr == ""
    names = {line.split("(", 1)[0] for line in p.stdout.splitlines()}
    assert {"tlbi_trap", "dvm_sync", "smmuv3_cmdq_opcode", "kvm_vmid_rollover"} <= names <= set(REGISTRY)
    assert list(tmp_path.iterdir()) == []                  # in particular no file named "help"


def test_d_help_lists_the_log_categories(capsys):
    from harness.log import CATEGORIES
    assert main(["run", "-d", "help"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Log items (comma separated):"        # QEMU's -d help heading
    assert [line.split()[0] for line in out[1:]] == [*CATEGORIES, "all"]


def test_scenario_run_trace_help_and_no_ops(tmp_path, capsys):
    assert main(["scenario", "run", "sva-btm", "--trace-events", "help"]) == 0
    assert "scenario_report(" in capsys.readouterr().out
    assert main(["scenario", "run", "sva-btm", "--trace", str(tmp_path / "s.log"), "--trace-events", "zz*"]) == 125
    assert "selects no trace event" in capsys.readouterr().err and not (tmp_path / "s.log").exists()
    assert main(["scenario", "run", "sva-btm", "--trace-events", "tlbi*"]) == 125
    assert "needs --trace FILE" in capsys.readouterr().err


def test_trace_to_stderr(dsb_guest, capsys):
    assert main(["run", dsb_guest, "--cpus", "2", "--trace", "-", "--trace-events", "dvm_sync"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("dvm_sync ") for line in err)
