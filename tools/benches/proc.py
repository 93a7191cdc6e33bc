"""Timing a child process's wall time exactly, for the end-to-end benchmarks (qemu.py, console.py, suites.py).

`subprocess.run(timeout=)` (Popen.wait with a timeout) polls, sleeping 1, 2, 4 ... 50 ms between polls, which
rounds every time up to the next of about 31, 63, 113, 163 ... ms: a 32 ms QEMU start-up read 32 or 64 ms, an
87 ms harness run 114 ms, ratios off by up to 2x. `wait_timed` waits with a blocking waitpid instead and
enforces the timeout with a timer thread that kills the process."""
from __future__ import annotations

import subprocess
import threading
import time


def wait_timed(cmd: list[str], timeout: float, **popen) -> tuple[int, float, bool]:
    """Run `cmd` (Popen keyword arguments `popen`; stdin is /dev/null unless given) to its exit: (exit status,
    wall seconds, whether it was killed at `timeout` seconds)."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, **popen)
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        status = p.wait()
    finally:
        killer.cancel()
    dt = time.perf_counter() - t
    return status, dt, dt >= timeout
