"""tools/benches/proc.py's `wait_timed`, which the end-to-end benchmarks time their child processes with: a
blocking wait (Popen.wait(timeout), what subprocess.run(timeout=) does, polls with sleeps of up to 50 ms and
rounded a run up to 31/63/113/163 ms), the timeout enforced by killing the child."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parents[2] / "tools" / "benches"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"smmu_bench_{name}_proc_test", BENCHES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def waits(monkeypatch):
    seen = []
    real_wait = subprocess.Popen.wait
    monkeypatch.setattr(subprocess.Popen, "wait", lambda self, timeout=None: (seen.append(timeout),
                                                                             real_wait(self, timeout))[1])
    return seen


def test_wait_timed_blocks_and_kills_at_the_timeout(waits):
    wait_timed = _bench("proc").wait_timed
    status, dt, killed = wait_timed([sys.executable, "-c", "import sys; sys.exit(5)"], 60,
                                    stdout=subprocess.DEVNULL)
    assert (status, killed) == (5, False) and dt > 0 and waits == [None]
    status, dt, killed = wait_timed([sys.executable, "-c", "import time; time.sleep(30)"], 0.3)
    assert killed and status != 0 and 0.3 <= dt < 10


def test_console_timed_waits_without_polling_and_checks_the_output(tmp_path, waits):
    mod = _bench("console")
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 7)"]
    assert mod._timed(cmd, tmp_path / "out", 7) > 0 and waits == [None]
    with pytest.raises(RuntimeError, match="status 0, 7 bytes printed"):
        mod._timed(cmd, tmp_path / "out", 8)


def test_suites_parallel_waits_without_polling_and_kills_an_overrun(waits):
    mod = _bench("suites")
    quick = [sys.executable, "-c", "pass"]
    stuck = [sys.executable, "-c", "import time; time.sleep(30)"]
    t = time.perf_counter()
    assert mod._parallel([(quick, 60), (stuck, 0.3), (quick, 60)], 2) > 0.3
    assert time.perf_counter() - t < 10 and waits == [None, None, None]
