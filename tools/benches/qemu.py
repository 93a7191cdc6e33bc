"""Benchmark `qemu`: the harness against QEMU on the same guest ELFs, end to end, as a user runs them.

    python3 tools/bench.py qemu [--repeat R] [--only NAME,...] [--no-suites]

Each ELF is built from tools/benches/ (or guest_fw/tests/) and run under `qemu-system-aarch64 -M virt -cpu max
-smp N -semihosting -nographic -kernel ELF` and under `smmu-harness run --cpus N ELF` (this tree's code:
`sys.executable -m harness`, not the pyenv shim), in fresh processes, the two alternated, the best wall time of
R runs each kept. Both consoles go to a file, checked against what the guest must print (and the harness's
against QEMU's). Printed: each ratio harness/QEMU with its goal and "ok"/"MISSED":

* start-up: guest_fw/tests/hello.c (a few hundred characters, PSCI calls): goal <= 2; with, for information,
  the interpreter's own floor (`python3 -c pass`: its start-up and the environment's site packages);
* plain: tools/benches/harness_loop.S, 10^8 plain instructions: goal <= 1.5;
* console: 50,000 characters by semihosting SYS_WRITEC (console_writec.S) and by the PL011 (console_pl011.S),
  each: goal <= 3;
* TLBI: 10^6 `TLBI VAE1IS` + `DSB ISH` (tlbi_loop.S) on a 2-vCPU machine (the second vCPU stays off under
  both, but is a DVM participant here): goal <= 3, tracing off;
* tracing: the same TLBI run with `--trace FILE.jsonl --trace-events 'tlbi*,dvm*'` (four events an iteration)
  against itself untraced, whole process: goal >= 0.5 (harness only);
* DMA: tools/benches/dma_loop.c, 10^5 DMA reads by the DMA test device through the SMMU model with the
  guest's stage 1 and the host's stage 2 (harness/vmm.py's nested set-up, in one process: `run` has no VMM
  option). QEMU has no counterpart to run: its virt machine has no DMA test device, and its SMMUv3
  (`-M virt,iommu=smmuv3`) translates only for PCI devices, which a bare-metal guest would need a PCI
  enumeration and a device driver (e.g. for QEMU's `edu` device) to drive. Printed for information, no goal;
* suites: `tools/bench.py suites` (kvm-unit-tests and the guest catalogue, -j 2), goal < 1 (`--no-suites`
  leaves it out: it takes minutes).

The in-process ratios (`tools/bench.py harness`, `trap`, `console`) stay where they are. Without
qemu-system-aarch64 the QEMU half is skipped (said so) and the harness half runs, with no goal.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.build import GUEST_FW, RUNTIME_DIR, build_guest  # noqa: E402



def _sibling(name: str):
    """tools/benches/<name>.py, loaded by path as tools/bench.py loads the benchmarks (not a package)."""
    spec = importlib.util.spec_from_file_location(f"smmu_bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wait_timed = _sibling("proc").wait_timed

TRACE_EVENTS = "tlbi*,dvm*"
DMA_ITERATIONS = 100_000


class Case(NamedTuple):
    name: str
    sources: tuple[Path, ...]
    goal: float                      # harness/QEMU time must be <= goal
    cpus: int = 1
    chars: int | None = None         # characters the guest prints (None: whatever QEMU printed)


CASES = (
    Case("start-up", (GUEST_FW / "tests" / "hello.c",), 2.0),
    Case("plain", (HERE / "harness_loop.S",), 1.5),
    Case("console SYS_WRITEC", (HERE / "console_writec.S",), 3.0, chars=50_000),
    Case("console PL011", (HERE / "console_pl011.S",), 3.0, chars=50_000),
    Case("TLBI+DSB", (HERE / "tlbi_loop.S",), 3.0, cpus=2, chars=0),
)
TRACING_GOAL = 0.5                   # traced speed / untraced speed must be >= this
NAMES = tuple(c.name for c in CASES) + ("tracing", "dma", "suites")


def elf_of(case: Case) -> Path:
    stem = case.sources[-1].stem
    return build_guest(list(case.sources), name=stem if stem == "hello" else f"bench_{stem}").path


def qemu_cmd(qemu: str, elf: Path, cpus: int) -> list[str]:
    return [qemu, "-M", "virt", "-cpu", "max", "-smp", str(cpus), "-semihosting", "-nographic", "-no-reboot",
            "-monitor", "none", "-serial", "stdio", "-kernel", str(elf)]


def harness_cmd(elf: Path, cpus: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "run", "--cpus", str(cpus), *extra, str(elf)]


def timed(cmd: list[str], out: Path, timeout: float = 900) -> float:
    """Wall time of `cmd` with stdout and stderr to `out` (QEMU writes a semihosting console without a chardev
    to stderr), which must exit 0 within `timeout` seconds; waited for without polling (tools/benches/proc.py)."""
    with open(out, "wb") as f:
        status, dt, killed = wait_timed(cmd, timeout, stdout=f, stderr=f, cwd=ROOT)
    if killed:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: killed after {timeout:g} s")
    if status != 0:
        last = out.read_bytes().decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:4])}...: exit status {status}: {last[-1] if last else ''}")
    return dt


def _check_output(case: Case, out: Path, reference: bytes | None) -> bytes:
    data = out.read_bytes()
    if case.chars is not None and len(data) != case.chars:
        raise RuntimeError(f"{case.name}: {len(data)} characters printed, expected {case.chars}")
    if reference is not None and data != reference:
        raise RuntimeError(f"{case.name}: the harness printed other characters than QEMU")
    return data


def measure(case: Case, qemu: str | None, reps: int, tmp: Path) -> tuple[float, float | None]:
    """Best wall times (harness, QEMU or None) of `case`, the runs alternated."""
    elf = elf_of(case)
    out = tmp / "console.out"
    h, q, ref = float("inf"), float("inf"), None
    for _ in range(reps):
        if qemu:
            q = min(q, timed(qemu_cmd(qemu, elf, case.cpus), out))
            ref = _check_output(case, out, None)
        h = min(h, timed(harness_cmd(elf, case.cpus), out))
        _check_output(case, out, ref)
    return h, (q if qemu else None)


def measure_tracing(reps: int, tmp: Path) -> tuple[float, float]:
    """Best wall times of the TLBI case untraced and with jsonl tracing (the trace file is checked). Each run
    starts after `os.sync()`: without it the kernel's writeback of the previous run's 840 MB trace file competed
    with whichever run came next, and the ratio moved between 0.4 and 0.6 from one run of the bench to the next."""
    case = next(c for c in CASES if c.name == "TLBI+DSB")
    elf, out, trace = elf_of(case), tmp / "console.out", tmp / "trace.jsonl"
    plain = traced = float("inf")
    for _ in range(reps):
        os.sync()       # each run starts with no dirty pages: the last 840 MB trace's writeback is not timed here
        plain = min(plain, timed(harness_cmd(elf, case.cpus), out))
        os.sync()
        traced = min(traced, timed(harness_cmd(elf, case.cpus, "--trace", str(trace), "--trace-events",
                                               TRACE_EVENTS), out))
        lines = _count_lines(trace)
        trace.unlink()
        if lines != 4 * 1_000_000:                    # tlbi_trap, dvm_tlbi, tlbi_dsb, dvm_sync per iteration
            raise RuntimeError(f"tracing: {lines} trace lines, expected {4 * 1_000_000}")
    return plain, traced


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n


def measure_dma(reps: int) -> float:
    """Best wall time of dma_loop.c's run in one process (Machine, nested VM set-up, load, run)."""
    from harness.machine import Machine
    from harness.vmm import setup_nested_vm

    elf = build_guest([RUNTIME_DIR / "vsmmu.c", RUNTIME_DIR / "pgtable.c", HERE / "dma_loop.c"],
                      name="bench_dma_loop").path
    best = float("inf")
    for _ in range(reps):
        m = Machine(console=lambda vm, data, stream: None)
        vm = m.add_vm("vm0", ram_size=64 << 20)
        setup_nested_vm(m, vm, policy="shared")
        vm.load(str(elf))
        t = time.perf_counter()
        outcome = m.run(timeout=600)
        best = min(best, time.perf_counter() - t)
        if outcome.exit_code != 0 or f"{DMA_ITERATIONS} DMAs, 0 bad" not in vm.output.decode():
            raise RuntimeError(f"dma: {outcome.message}: {vm.output.decode()[-200:]}")
    return best


def _verdict(ratio: float, goal: float, at_most: bool = True) -> str:
    good = ratio <= goal if at_most else ratio >= goal
    return f"ratio {ratio:6.2f} (goal {'<=' if at_most else '>='} {goal:g})  {'ok' if good else 'MISSED'}"


def _suites(argv: list[str]) -> dict:
    return _sibling("suites").run(argv)


def _selected(only: str | None) -> set[str]:
    if only is None:
        return set(NAMES)
    chosen = {n.strip() for n in only.split(",") if n.strip()}
    unknown = chosen - set(NAMES)
    if unknown:
        raise SystemExit(f"bench.py qemu: unknown --only {', '.join(sorted(unknown))} (choose from "
                         f"{', '.join(NAMES)})")
    return chosen


def _run_cases(chosen: set[str], qemu: str | None, reps: int, tmp: Path, result: dict) -> bool:
    ok = True
    for case in CASES:
        if case.name not in chosen:
            continue
        h, q = measure(case, qemu, reps, tmp)
        line = f"qemu: {case.name:20} smmu-harness {h:7.3f} s"
        if q is not None:
            ratio = h / q
            ok &= ratio <= case.goal
            line += f"   qemu-system-aarch64 {q:7.3f} s   {_verdict(ratio, case.goal)}"
            result["ratios"][case.name] = ratio
        print(line, flush=True)
        result["times"][case.name] = {"harness": h, "qemu": q}
        if case.name == "start-up":
            floor = interpreter_floor(reps, tmp)
            result["times"]["interpreter"] = floor
            print(f"qemu: {'':20} (of which the interpreter alone, `{Path(sys.executable).name} -c pass` with this "
                  f"machine's site packages: {floor:.3f} s; for information)", flush=True)
    return ok


def interpreter_floor(reps: int, tmp: Path) -> float:
    """Best wall time of this interpreter doing nothing (its start-up and site packages: the .pth files of the
    environment, an editable install's finder), which every harness process pays before its first import."""
    return min(timed([sys.executable, "-c", "pass"], tmp / "floor.out") for _ in range(max(reps, 3)))


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py qemu")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each side, best kept [3]")
    ap.add_argument("--only", default=None, metavar="NAMES", help=f"comma-separated, of: {', '.join(NAMES)}")
    ap.add_argument("--no-suites", action="store_true", help="leave out the suites entry (minutes)")
    a = ap.parse_args(argv)
    reps, chosen = max(1, a.repeat), _selected(a.only)
    if a.no_suites:
        chosen.discard("suites")
    qemu = shutil.which("qemu-system-aarch64")
    print(f"qemu: best of {reps}, wall time of whole processes; {sys.executable} -m harness vs "
          f"{qemu or 'qemu-system-aarch64 (not installed)'}")
    if qemu is None:
        print("qemu: qemu-system-aarch64 is not installed (Debian: qemu-system-arm): harness half only, no goals")
    result: dict = {"name": "qemu", "ratios": {}, "times": {}, "ok": True}
    with tempfile.TemporaryDirectory() as d:
        ok = _run_cases(chosen, qemu, reps, Path(d), result)
        if "tracing" in chosen:
            plain, traced = measure_tracing(reps, Path(d))
            ratio = plain / traced
            ok &= ratio >= TRACING_GOAL
            result["ratios"]["tracing"] = ratio
            print(f"qemu: {'tracing (jsonl)':20} smmu-harness {traced:7.3f} s traced, {plain:.3f} s untraced   "
                  f"speed {_verdict(ratio, TRACING_GOAL, at_most=False)}", flush=True)
    if "dma" in chosen:
        t = measure_dma(reps)
        result["times"]["dma"] = {"harness": t, "qemu": None}
        print(f"qemu: {'DMA via SMMU':20} smmu-harness {t:7.3f} s in one process, {t / DMA_ITERATIONS * 1e6:.1f} us "
              f"a DMA; QEMU: nothing to run (no DMA test device; its SMMUv3 serves PCI devices only)", flush=True)
    if "suites" in chosen:
        s = _suites([])
        ok &= s.get("ok", True)
        result["ratios"].update({f"suites {k}": v for k, v in s.get("ratios", {}).items()})
    result["ok"] = ok if qemu else True
    return result


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(0 if run(sys.argv[1:])["ok"] else 1)
