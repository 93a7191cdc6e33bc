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


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python3 -m harness ARGS` in a subprocess: real exit status, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
