"""Benchmark `harness`: a guest loop of plain instructions (10^8 by default) run by `smmu-harness`'s machine
(ELF built with harness/build.py, loaded, one vCPU, PL011 + PSCI + semihosting glue, the CLI's timeout) against
bare Unicorn running the same code in the same process (mem_map + emu_start up to the loop's end, no hooks).
Goal: harness/bare >= 0.9. Rates use process CPU time and the best of interleaved repeats.

    python3 tools/bench.py harness [--insns N] [--repeat R]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, UC_PROT_ALL, Uc

from harness.build import build_guest
from harness.elfload import load_elf
from harness.machine import Machine

GOAL = 0.9
INSNS_PER_ITER = 4
SOURCE = Path(__file__).resolve().parent / "harness_loop.S"


def under_harness(image, iters: int) -> float:
    m = Machine(console=lambda vm, data, stream: None)
    vm = m.add_vm()
    vm.load(image)
    vm.ipa.write64(image.symbol("iterations"), iters)
    t = time.process_time()
    outcome = m.run(timeout=300)                     # as `smmu-harness run` does (its default --timeout)
    dt = time.process_time() - t
    if outcome.exit_code != 0:
        raise RuntimeError(f"bench guest failed: {outcome.message}")
    return dt


def bare_unicorn(image, iters: int) -> float:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(32 << 20)
    uc.mem_map(0x4000_0000, 128 << 20, UC_PROT_ALL)
    for seg in image.segments:
        uc.mem_write(seg.paddr, seg.data)
    uc.mem_write(image.symbol("iterations"), iters.to_bytes(8, "little"))
    t = time.process_time()
    uc.emu_start(image.entry, image.symbol("loop_end"))
    return time.process_time() - t


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py harness")
    ap.add_argument("--insns", type=int, default=100_000_000, help="guest instructions per run [1e8]")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats, best kept [3]")
    args = ap.parse_args(argv)
    iters = max(1, args.insns // INSNS_PER_ITER)
    insns = iters * INSNS_PER_ITER
    image = load_elf(build_guest([SOURCE], name="bench_harness_loop").path)
    h = b = float("inf")
    for _ in range(args.repeat):
        b = min(b, bare_unicorn(image, iters))
        h = min(h, under_harness(image, iters))
    hr, br = insns / h, insns / b
    ratio = hr / br
    ok = ratio >= GOAL
    print(f"harness: {insns:.3g} guest instructions: smmu-harness {hr / 1e6:.0f} M insn/s, "
          f"bare Unicorn {br / 1e6:.0f} M insn/s, ratio {ratio:.3f} (goal >= {GOAL}) {'ok' if ok else 'MISSED'}")
    return {"name": "harness", "insns": insns, "harness_rate": hr, "bare_rate": br, "ratio": ratio,
            "goal": GOAL, "ok": ok}
