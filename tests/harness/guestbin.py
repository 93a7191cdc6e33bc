"""Test helper: sample guests from guest_fw/tests, built once per process (harness.build caches on disk too),
and a way to run the CLI as a user does."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from harness.build import build_test_guest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def guest_elf(name: str) -> Path:
    return build_test_guest(name).path


def run_cli(*args: str, timeout: float = 60, env: dict | None = None, cwd: str | os.PathLike | None = None
            ) -> subprocess.CompletedProcess:
    """`python3 -m harness ARGS` in a subprocess: real exit status, stdout and stderr. With `cwd` (another
    directory than the checkout) the checkout stays first on PYTHONPATH, so it is still this tree's harness."""
    env = {**os.environ, **(env or {})}
    if cwd is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def run_cli_closed_stdout(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Like run_cli, with stdout a pipe whose reader has already gone (`... | head -1` once head exited):
    every write to it fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    finally:
        os.close(w)


def assert_no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def under_cpu_load(fn):
    """fn() while another process burns a CPU (determinism tests compare it with a quiet run): its result."""
    burn = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return fn()
    finally:
        burn.kill()
        burn.wait()
