"""Suites against QEMU: `python3 tools/bench.py suites [--repeat R] [-j N] [--only kut|guests]`.

A regression suite of many small guests is where an in-process harness can beat the C emulator, which
kvm-unit-tests' run_tests.sh starts once per test. Two suites, each run both ways with the same parallelism
(`-j`, default 2), wall time, best of `--repeat` (default 1), the two halves alternated:

* **kut**: kvm-unit-tests' arm/unittests.cfg (the shipped images, tests/fixtures/) through `smmu-harness
  unittests CFG -j N` (one process, N workers) against the same tests run one `qemu-system-aarch64` process
  each with arm/run's command line (`harness.unittests.qemu_command`), N at a time. Tests run_tests.sh skips
  before starting QEMU (nodefault, migration, accel) are left out of both halves.
* **guests**: this project's guest catalogue (guest_fw/tests/unittests.cfg) through the fastest in-process
  runner, `smmu-harness unittests CFG -j N` (one process that forks N workers; it builds each source through
  the cache, runs it on a fresh machine and compares its golden trace, as the pytest plugin does), against
  the same ELFs (built once beforehand, cached) run one `qemu-system-aarch64 -M virt -cpu max -semihosting`
  process each, N at a time. The pytest plugin's time (`python3 -m pytest guest_fw -n N`: pytest and
  pytest-xdist's start-up on top) is printed after it, for information, in the same round. Entries with an
  instruction budget (`max_insns`: they spin until it runs out, which QEMU has no equivalent of), and guests
  that do not end under QEMU within 5 s (a probe run first, named in the output), are left out of both halves.

The harness halves run with Python's bytecode cache (PYTHONDONTWRITEBYTECODE removed from their environment),
as a checkout runs once its modules have been imported once. Goal: harness / QEMU < 1 for each suite, printed with "ok"/"MISSED". Without qemu-system-aarch64 the QEMU
half is skipped (said so) and the harness half still runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.catalogue import parse_catalogue  # noqa: E402
from harness.unittests import Options, qemu_command, skip_reason  # noqa: E402

KUT_CFG = ROOT / "tests" / "fixtures" / "kvm-unit-tests-1da1819e" / "arm" / "unittests.cfg"
GUEST_CFG = ROOT / "guest_fw" / "tests" / "unittests.cfg"
GOAL = 1.0


def _wait_timed():
    """tools/benches/proc.py's `wait_timed` (loaded by path: tools/benches is not a package)."""
    spec = importlib.util.spec_from_file_location("smmu_bench_proc", Path(__file__).resolve().parent / "proc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.wait_timed


wait_timed = _wait_timed()


def _parallel(cmds: list[tuple[list[str], float]], jobs: int) -> float:
    """Wall time of running every (command, timeout) `jobs` at a time; a command that overruns is killed. Each
    exit is waited for without polling (tools/benches/proc.py: subprocess.run(timeout=) would end each command
    up to 50 ms late, and hold its worker that long)."""
    def one(item):
        cmd, limit = item
        wait_timed(cmd, limit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, cmds))
    return time.perf_counter() - t


def _timed(cmd: list[str], check: bool = False) -> float:
    """Wall time of `cmd`; with `check`, a run that did not pass (a failed test) is said so: its time is no
    figure (kvm-unit-tests has tests that fail as under QEMU: not checked)."""
    # as a user's checkout runs it: with cached bytecode (compiling every module each run is ~0.4 s of CPU)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    took = time.perf_counter() - t
    if check and p.returncode != 0:
        print(f"  warning: {' '.join(cmd[1:4])} ... exited {p.returncode} (a test failed)", flush=True)
    return took


def _kut(jobs: int, qemu: str | None):
    entries = [e for e in parse_catalogue(KUT_CFG, 2) if skip_reason(e, Options()) is None
               or skip_reason(e, Options()).startswith("not modelled")]
    names = [e.name for e in entries]
    ours = [sys.executable, "-m", "harness", "unittests", str(KUT_CFG), "-j", str(jobs), *names]
    theirs = [(qemu_command(e, qemu), e.timeout) for e in entries] if qemu else None
    return f"kut ({len(entries)} tests)", (lambda: _timed(ours)), (lambda: _parallel(theirs, jobs)) if qemu else None, None


def _qemu_guest(qemu: str, e) -> list[str]:
    from harness.build import build_guest
    elf = build_guest([e.source], name=e.source.stem).path
    machine = "virt,virtualization=on" if e.el == 2 else "virt"
    return [qemu, "-M", machine, "-cpu", "max", "-smp", str(e.cpus), "-m", "128M", "-nographic", "-no-reboot",
            "-nodefaults", "-monitor", "none", "-serial", "stdio", "-semihosting", "-kernel", str(elf)]


def _hangs_under_qemu(qemu: str, entries) -> set[str]:
    """Guests that do not end under QEMU within 5 s (they wait for what only the harness provides): timing
    QEMU's timeout would flatter the harness, so they are left out of both halves."""
    out = set()
    for e in entries:
        try:
            subprocess.run(_qemu_guest(qemu, e), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=5)
        except subprocess.TimeoutExpired:
            out.add(e.name)
    return out


def _guests(jobs: int, qemu: str | None):
    every = parse_catalogue(GUEST_CFG)
    entries = [e for e in every if e.max_insns is None]
    hangs = _hangs_under_qemu(qemu, entries) if qemu else set()
    if hangs:
        print(f"  guests that do not end under QEMU, left out: {', '.join(sorted(hangs))}")
    entries = [e for e in entries if e.name not in hangs]
    kept = {e.name for e in entries}
    ours = [sys.executable, "-m", "harness", "unittests", str(GUEST_CFG), "-j", str(jobs), *(e.name for e in entries)]
    theirs = [(_qemu_guest(qemu, e), e.timeout) for e in entries] if qemu else None
    info = ("pytest plugin", lambda: _guests_pytest(jobs, kept))
    return f"guests ({len(entries)} ELFs)", (lambda: _timed(ours, check=True)), (lambda: _parallel(theirs, jobs)) if qemu else None, info


def _guests_pytest(jobs: int, names: set[str]) -> float:
    """The same guests through the pytest plugin (for information: not the figure the goal is judged on)."""
    deselect = [f"--deselect=guest_fw/tests/unittests.cfg::{e.name}" for e in parse_catalogue(GUEST_CFG)
                if e.name not in names]
    return _timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(jobs), "guest_fw",
                   *deselect], check=True)


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py suites")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("-j", type=int, default=2, dest="jobs")
    ap.add_argument("--only", choices=("kut", "guests"), default=None)
    a = ap.parse_args(argv)
    qemu = shutil.which("qemu-system-aarch64")
    print(f"suites: -j {a.jobs}, best of {a.repeat}, wall time; goal harness/QEMU < {GOAL:g}")
    if qemu is None:
        print("  qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm): harness half only")
    import compileall                                  # the bytecode cache the harness halves use (_timed)
    for pkg in ("harness", "devmodel"):
        compileall.compile_dir(ROOT / pkg, quiet=1)
    ok = True
    results = {}
    for make in (_kut, _guests):
        label, ours, theirs, info = make(a.jobs, qemu)
        if a.only and not label.startswith(a.only):
            continue
        t_ours, t_theirs, t_info = [], [], []
        for _ in range(a.repeat):                      # alternated, best of R
            t_ours.append(ours())
            if theirs is not None:
                t_theirs.append(theirs())
            if info is not None:
                t_info.append(info[1]())
        best = min(t_ours)
        line = f"  {label:22} harness {best:7.2f} s"
        if t_theirs:
            ratio = best / min(t_theirs)
            good = ratio < GOAL
            ok &= good
            line += f"   qemu {min(t_theirs):7.2f} s   ratio {ratio:5.2f} (goal < {GOAL:g}) {'ok' if good else 'MISSED'}"
            results[label] = ratio
        print(line, flush=True)
        if t_info:
            print(f"  {'':22} ({info[0]} {min(t_info):.2f} s, for information)", flush=True)
    return {"ok": ok, "ratios": results, "cpus": os.cpu_count()}
