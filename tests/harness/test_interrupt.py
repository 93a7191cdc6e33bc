"""^C during a run (harness/interrupt.py): a guest spinning alone inside emu_start, where Python's SIGINT
handler never runs, ends with status 130 and the one line, after everything it printed, on both paths."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from guestbin import guest_elf

ROOT = Path(__file__).resolve().parents[2]


def _run(guest: str, native: str) -> subprocess.Popen:
    """`smmu-harness run` of catalogue guest `guest` on the native path or not, with SIGINT at its default
    (a test runner may have set it to be ignored in children)."""
    env = dict(os.environ, SMMU_HARNESS_NATIVE=native)
    return subprocess.Popen([sys.executable, "-m", "harness", "run", str(guest_elf(guest))], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("native", ["1", "0"])
def test_sigint_ends_a_spinning_guest_with_130_after_its_output(native):
    p = _run("spin", native)
    try:
        assert select.select([p.stdout], [], [], 30)[0], "the guest printed nothing"
        first = p.stdout.readline()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert first + out == b"spinning forever\n"
    assert p.returncode == 130 and err == b"smmu-harness: interrupted\n"


def _spinning(pid: int, cpu: float = 1.2, wait: float = 60) -> None:
    """Wait until `pid` has used `cpu` seconds of CPU time: past its start-up (~0.5 s), so it spins in the
    guest (nothing to wait for on stdout: the guest's line has no newline). CPU time, not wall time: the
    same on a loaded machine."""
    import time
    tick, end = os.sysconf("SC_CLK_TCK"), time.monotonic() + wait
    while time.monotonic() < end:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / tick >= cpu:
            return
        time.sleep(0.05)
    pytest.fail(f"the harness did not start within {wait} s")


@pytest.mark.parametrize("native", ["1", "0"])
def test_sigint_delivers_a_partial_line_first(native):
    """The guest's last bytes have no newline: on the native path they wait in console.c's buffer until the
    stopped emu_start returns; either way they are printed, then the interrupted line."""
    p = _run("spin_partial", native)
    try:
        _spinning(p.pid)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert (p.returncode, out, err) == (130, b"no newline yet", b"smmu-harness: interrupted\n")
