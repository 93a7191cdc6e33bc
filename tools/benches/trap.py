"""Benchmark `trap`: a guest loop of `TLBI VAE1IS` + `DSB ISH`, run under the harness's TLBI trap (decode,
own-TLB flush, DVM broadcast to a second vCPU, DVM Sync at the DSB) against the floor of this design: bare
Unicorn running the same loop with a no-op Python SYS hook and a no-op code hook on the DSB. Tracing off, then
the harness with JSON Lines tracing of `tlbi*,dvm*` to a temporary file. Goal: harness/bare >= 0.5.

    python3 tools/bench.py trap [--iters N] [--repeat R]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from unicorn import UC_ARCH_ARM64, UC_HOOK_CODE, UC_HOOK_INSN, UC_MODE_ARM, Uc
from unicorn.arm64_const import UC_ARM64_INS_SYS, UC_ARM64_REG_X1

from devmodel.dvm import Interconnect
from devmodel.tlbi import encoding, sys_word
from devmodel.trace import Tracer
from harness.trace import JsonlSink
from harness.trap import TlbiTrap

GOAL = 0.5
BASE = 0x4008_0000
DSB_ISH = 0xD5033B9F


def loop_code(iters: int) -> bytes:
    """x0 = iters; loop: tlbi vae1is, x1; dsb ish; subs x0, x0, #1; b.ne loop; (end)"""
    words = [0xD2800000 | ((iters & 0xFFFF) << 5),               # movz x0, #lo
             0xF2A00000 | (((iters >> 16) & 0xFFFF) << 5),       # movk x0, #hi, lsl #16
             sys_word(*encoding("VAE1IS"), rt=1),
             DSB_ISH,
             0xF1000400,                                          # subs x0, x0, #1
             0x54FFFFA1]                                          # b.ne loop (-3 insns)
    return b"".join(w.to_bytes(4, "little") for w in words)


def _uc(code: bytes) -> Uc:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(16 << 20)
    uc.mem_map(BASE & ~0xFFFF, 0x10000 + 0x10000)
    uc.mem_write(BASE, code)
    uc.cpr_write(3, 6, 1, 1, 0, 0x500)
    uc.reg_write(UC_ARM64_REG_X1, 0x40080)
    return uc


def bare(iters: int) -> float:
    code = loop_code(iters)
    uc = _uc(code)
    uc.hook_add(UC_HOOK_INSN, lambda uc, reg, cp, u: 0, None, 1, 0, UC_ARM64_INS_SYS)
    dsb = BASE + 12
    uc.hook_add(UC_HOOK_CODE, lambda uc, a, s, u: None, None, dsb, dsb)
    t = time.perf_counter()
    uc.emu_start(BASE, BASE + len(code), count=10 * iters)
    return iters / (time.perf_counter() - t)


def harness(iters: int, trace_path: str | None = None) -> float:
    code = loop_code(iters)
    tr = Tracer()
    sink = None
    trap = TlbiTrap(Interconnect(tr), tr, lazy=True)     # as under the machine (flush at slice start)
    if trace_path is not None:
        sink = JsonlSink(trace_path, where=trap.where)
        tr.add_sink(sink)
        tr.enable("tlbi*,dvm*")
    cpus = [_uc(code) for _ in range(2)]
    for i, uc in enumerate(cpus):
        trap.add_cpu(uc, i, lambda: 1)
    trap.install_barriers([(BASE, code)])
    t = time.perf_counter()
    try:
        cpus[0].emu_start(BASE, BASE + len(code), count=10 * iters)
    finally:
        if sink is not None:
            sink.close()
    dt = time.perf_counter() - t
    if trap.traps != iters or trap.interconnect.syncs != iters:
        raise RuntimeError(f"trap bench: {trap.traps} traps, {trap.interconnect.syncs} syncs for {iters} iterations")
    return iters / dt


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py trap")
    ap.add_argument("--iters", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    b = max(bare(a.iters) for _ in range(a.repeat))
    h = max(harness(a.iters) for _ in range(a.repeat))
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        j = max(harness(a.iters, path) for _ in range(max(1, a.repeat - 1)))
    finally:
        os.unlink(path)
    ratio, ratio_j = h / b, j / b
    ok = ratio >= GOAL
    print(f"trap: bare Unicorn (no-op SYS + DSB hooks) {b:,.0f} iter/s; harness {h:,.0f} iter/s; "
          f"ratio {ratio:.2f} (goal >= {GOAL}) {'ok' if ok else 'MISSED'}")
    print(f"trap: harness with jsonl tracing {j:,.0f} iter/s; ratio {ratio_j:.2f}")
    return {"ok": ok, "bare": b, "harness": h, "harness_jsonl": j, "ratio": ratio, "ratio_jsonl": ratio_j}
