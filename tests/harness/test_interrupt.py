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


@pytest.mark.parametrize("native", ["1", "0"])
def test_sigint_ends_a_spinning_guest_with_130_after_its_output(native):
    env = dict(os.environ, SMMU_HARNESS_NATIVE=native)
    p = subprocess.Popen([sys.executable, "-m", "harness", "run", str(guest_elf("spin"))], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
