"""tools/benches/qemu.py runs its cases end to end and checks the consoles (the ratios and their goals are for
`python3 tools/bench.py qemu`, not for a unit test on a shared machine): with QEMU, and as on a machine
without it (the harness half alone, said so, no goal)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "benches" / "qemu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("smmu_bench_qemu_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None, reason="qemu-system-aarch64 not installed")
def test_start_up_case_against_qemu(capsys):
    r = _bench().run(["--only", "start-up", "--repeat", "1"])
    t = r["times"]["start-up"]
    assert t["harness"] > 0 and t["qemu"] > 0 and r["ratios"]["start-up"] == t["harness"] / t["qemu"]
    line = next(x for x in capsys.readouterr().out.splitlines() if "start-up" in x)
    assert "goal <= 2" in line and (line.endswith("ok") or line.endswith("MISSED"))


def test_without_qemu_the_harness_half_runs(capsys, monkeypatch):
    mod = _bench()
    monkeypatch.setattr(mod.shutil, "which", lambda name: None)
    r = mod.run(["--only", "start-up", "--repeat", "1"])
    assert r["ok"] and r["ratios"] == {} and r["times"]["start-up"]["qemu"] is None
    out = capsys.readouterr().out
    assert "not installed" in out and "ratio" not in out


def test_unknown_case_is_refused():
    with pytest.raises(SystemExit, match="unknown --only"):
        _bench().run(["--only", "nope"])
