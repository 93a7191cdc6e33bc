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
    assert 0 < r["times"]["interpreter"] < t["harness"]          # the floor under it, printed for information


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


def test_timed_waits_without_polling_and_kills_at_the_timeout(tmp_path, monkeypatch):
    """`timed` must see the exit when it happens: Popen.wait(timeout) (what subprocess.run(timeout=) does)
    polls with sleeps of up to 50 ms, which rounded a run up to 31/63/113/163 ms and skewed every ratio."""
    import subprocess
    import sys
    mod = _bench()
    waits = []
    real_wait = subprocess.Popen.wait
    monkeypatch.setattr(subprocess.Popen, "wait", lambda self, timeout=None: (waits.append(timeout),
                                                                             real_wait(self, timeout))[1])
    assert mod.timed([sys.executable, "-c", "pass"], tmp_path / "out") > 0 and waits == [None]
    with pytest.raises(RuntimeError, match="killed after 0.3 s"):
        mod.timed([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "out", timeout=0.3)
    with pytest.raises(RuntimeError, match="exit status 3: oops"):
        mod.timed([sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"], tmp_path / "out")


def test_bench_py_measures_its_own_checkout(tmp_path):
    """tools/bench.py puts its checkout first on sys.path: run from a worktree (or any directory), the benches
    import that tree's harness, not the one the editable install points at."""
    import subprocess
    import sys

    root = BENCH.parents[2]
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "__init__.py").write_text("")     # another tree's harness, first on sys.path here
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='bench'); import harness; "
             "print(harness.__file__)")
    p = subprocess.run([sys.executable, "-c", probe, str(root / "tools" / "bench.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).resolve().parent == (root / "harness").resolve()
