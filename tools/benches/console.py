"""Semihosting console benchmark: `python3 tools/bench.py console [--repeat R]`.

One ELF (tools/benches/console_writec.S) prints 50,000 characters one semihosting SYS_WRITEC at a time and
exits. It runs as a user runs it, end to end in a fresh process, under `qemu-system-aarch64 -M virt -cpu max
-semihosting -kernel ELF` and under `python3 -m harness run ELF` (both consoles to a file, which is then
checked to hold the 50,000 characters), alternated, the best wall time of R runs each kept. Goal: the
harness within 3x of QEMU's time. Without QEMU it says so and measures the harness alone (no goal then).
For information it also reports each side's fixed cost (the same ELF patched to print one character: start-up,
loading, exit) and so its cost per call, and the harness's run inside one process (the Machine alone).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
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


def _wait_timed():
    """tools/benches/proc.py's `wait_timed` (loaded by path: tools/benches is not a package)."""
    spec = importlib.util.spec_from_file_location("smmu_bench_proc", SOURCE.parent / "proc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.wait_timed


wait_timed = _wait_timed()


def _timed(cmd: list[str], out: Path, chars: int = CHARS, cwd: Path | None = None) -> float:
    """Wall time of `cmd` with stdout and stderr to `out`; checks it printed `chars` characters. Waited for
    without polling (tools/benches/proc.py: subprocess.run(timeout=) rounds times up to its poll intervals)."""
    with open(out, "wb") as f:
        status, dt, killed = wait_timed(cmd, 600, stdout=f, stderr=f, cwd=cwd)
    if killed:
        raise RuntimeError(f"{cmd[0]}: killed after 600 s")
    if status != 0 or out.stat().st_size != chars:
        raise RuntimeError(f"{cmd[0]}: status {status}, {out.stat().st_size} bytes printed "
                           f"(expected 0 and {chars})")
    return dt


def one_char_copy(elf: Path, out: Path) -> Path:
    """`elf` with its `chars` literal set to 1: the same image doing one call (the fixed costs)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(elf.read_bytes())
    with open(elf, "rb") as f:
        e = ELFFile(f)
        addr = e.get_section_by_name(".symtab").get_symbol_by_name("chars")[0]["st_value"]
        seg = next(s for s in e.iter_segments() if s["p_type"] == "PT_LOAD"
                   and s["p_vaddr"] <= addr < s["p_vaddr"] + s["p_filesz"])
    off = seg["p_offset"] + addr - seg["p_vaddr"]
    assert int.from_bytes(data[off:off + 8], "little") == CHARS, "chars literal not found"
    data[off:off + 8] = (1).to_bytes(8, "little")
    out.write_bytes(bytes(data))
    return out


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


def _commands(qemu: str | None, elf: Path) -> tuple[list[str], list[str]]:
    return ([qemu or "qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-semihosting", "-nographic",
             "-no-reboot", "-monitor", "none", "-serial", "none", "-kernel", str(elf)],
            [sys.executable, "-m", "harness", "run", str(elf)])


def _measure(qemu: str | None, elf: Path, one: Path, reps: int) -> dict[str, float]:
    """Best wall times of every side, the runs alternated: q/h (50,000 calls), q1/h1 (one call), inproc."""
    best = dict.fromkeys(("q", "h", "q1", "h1", "inproc"), float("inf"))
    (q_cmd, h_cmd), (q1_cmd, h1_cmd) = _commands(qemu, elf), _commands(qemu, one)
    out = one.with_name("console.txt")
    for _ in range(reps):
        if qemu:
            best["q"] = min(best["q"], _timed(q_cmd, out))
            best["q1"] = min(best["q1"], _timed(q1_cmd, out, 1))
        best["h"] = min(best["h"], _timed(h_cmd, out, cwd=ROOT))
        best["h1"] = min(best["h1"], _timed(h1_cmd, out, 1, cwd=ROOT))
        best["inproc"] = min(best["inproc"], in_process(elf))
    return best


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py console")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each, best kept [3]")
    args = ap.parse_args(argv)
    reps = max(1, args.repeat)
    elf = build_guest([SOURCE], name="bench_console_writec").path
    qemu = shutil.which("qemu-system-aarch64")
    with tempfile.TemporaryDirectory() as d:
        b = _measure(qemu, elf, one_char_copy(elf, Path(d) / "one_char.elf"), reps)
    h, inproc = b["h"], b["inproc"]
    print(f"console: {CHARS} SYS_WRITEC calls, best of {reps}: smmu-harness run {h:.3f} s, of which "
          f"{b['h1']:.3f} s fixed (start-up, load, exit: the same image printing 1 character); "
          f"{(h - b['h1']) / CHARS * 1e6:.1f} us/call (in one process: {inproc:.3f} s, "
          f"{inproc / CHARS * 1e6:.1f} us/call)")
    result = {"name": "console", "chars": CHARS, "harness_s": h, "harness_fixed_s": b["h1"], "in_process_s": inproc,
              "qemu_s": None, "qemu_fixed_s": None, "ratio": None, "goal": GOAL, "ok": True}
    if not qemu:
        print("console: qemu-system-aarch64 is not installed (Debian: qemu-system-arm): no ratio, no goal")
        return result
    ratio = h / b["q"]
    ok = ratio <= GOAL
    print(f"console: qemu-system-aarch64 {b['q']:.3f} s, of which {b['q1']:.3f} s fixed; "
          f"{(b['q'] - b['q1']) / CHARS * 1e6:.2f} us/call")
    print(f"console: smmu-harness / QEMU {ratio:.2f} (goal <= {GOAL:g})  {'ok' if ok else 'MISSED'}")
    result.update(qemu_s=b["q"], qemu_fixed_s=b["q1"], ratio=ratio, ok=ok)
    return result


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(0 if run(sys.argv[1:])["ok"] else 1)
