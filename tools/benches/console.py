"""Semihosting console benchmark: `python3 tools/bench.py console [--repeat R]`.

One ELF (tools/benches/console_writec.S) prints 50,000 characters one semihosting SYS_WRITEC at a time and
exits. It runs as a user runs it, end to end in a fresh process, under `qemu-system-aarch64 -M virt -cpu max
-semihosting -kernel ELF` and under `python3 -m harness run ELF` (both consoles to a file, which is then
checked to hold the 50,000 characters), alternated, the best wall time of R runs each kept. Goal: the
harness within 3x of QEMU's time. Without QEMU it says so and measures the harness alone (no goal then).
For information it also reports the run inside one process (the Machine alone, without Python's start-up
and imports) and the harness's cost per call.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.build import build_guest
from harness.machine import Machine

GOAL = 3.0
CHARS = 50_000
SOURCE = Path(__file__).resolve().parent / "console_writec.S"
ROOT = Path(__file__).resolve().parents[2]


def _timed(cmd: list[str], out: Path, cwd: Path | None = None) -> float:
    """Wall time of `cmd` with stdout and stderr to `out`; checks it printed the 50,000 characters."""
    with open(out, "wb") as f:
        t = time.perf_counter()
        p = subprocess.run(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL, cwd=cwd, timeout=600)
        dt = time.perf_counter() - t
    if p.returncode != 0 or out.stat().st_size != CHARS:
        raise RuntimeError(f"{cmd[0]}: status {p.returncode}, {out.stat().st_size} bytes printed "
                           f"(expected 0 and {CHARS})")
    return dt


def in_process(elf: Path) -> float:
    """The harness's run alone: Machine, load, run (console to a counter), wall time."""
    got = [0]
    m = Machine(console=lambda vm, data, stream: got.__setitem__(0, got[0] + len(data)))
    m.add_vm().load(elf)
    t = time.perf_counter()
    outcome = m.run(timeout=600)
    dt = time.perf_counter() - t
    if outcome.exit_code != 0 or got[0] != CHARS:
        raise RuntimeError(f"in-process run: {outcome.message}, {got[0]} characters")
    return dt


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py console")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each, best kept [3]")
    args = ap.parse_args(argv)
    reps = max(1, args.repeat)
    elf = build_guest([SOURCE], name="bench_console_writec").path
    qemu = shutil.which("qemu-system-aarch64")
    q_cmd = [qemu or "qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-semihosting", "-nographic",
             "-no-reboot", "-monitor", "none", "-serial", "none", "-kernel", str(elf)]
    h_cmd = [sys.executable, "-m", "harness", "run", str(elf)]
    q = h = inproc = float("inf")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "console.txt"
        for _ in range(reps):
            if qemu:
                q = min(q, _timed(q_cmd, out))
            h = min(h, _timed(h_cmd, out, cwd=ROOT))
            inproc = min(inproc, in_process(elf))
    print(f"console: {CHARS} SYS_WRITEC calls, best of {reps}: smmu-harness run {h:.3f} s "
          f"(in one process: {inproc:.3f} s, {inproc / CHARS * 1e6:.1f} us/call)")
    result = {"name": "console", "chars": CHARS, "harness_s": h, "in_process_s": inproc, "qemu_s": None,
              "ratio": None, "goal": GOAL, "ok": True}
    if not qemu:
        print("console: qemu-system-aarch64 is not installed (Debian: qemu-system-arm): no ratio, no goal")
        return result
    ratio = h / q
    ok = ratio <= GOAL
    print(f"console: qemu-system-aarch64 {q:.3f} s; smmu-harness / QEMU {ratio:.2f} (goal <= {GOAL:g})  "
          f"{'ok' if ok else 'MISSED'}")
    result.update(qemu_s=q, ratio=ratio, ok=ok)
    return result


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(0 if run(sys.argv[1:])["ok"] else 1)
