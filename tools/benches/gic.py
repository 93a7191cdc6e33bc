"""GIC model benchmark: `python3 tools/bench.py gic [--quick]`.

* The per-slice interrupt check the scheduler makes (`gic.irq_pending(cpu)` and `gic.fiq_pending(cpu)`), in
  checks per second, against a baseline of the same shape (a method call returning a list element) measured in
  the same run. Goal: >= 1/2 of the baseline (the check must stay O(1): the engine caches the outputs).
* Informational, in baseline-call units: one whole GICv3 interrupt (edge SPI pulse, ICC_IAR1_EL1 read,
  ICC_EOIR1_EL1 write) with 200 other SPIs enabled and idle, and one MSI through the ITS (translation through
  the in-memory tables, LPI pending, acknowledge, EOI).
"""
from __future__ import annotations

import argparse
import time

from devmodel.bus import Bus
from devmodel.gic import GicV3
from devmodel.gic.its import Its
from devmodel.gic.its_cmd import encode

CHECK_GOAL = 0.5
RAM = 0x4000_0000


class _Baseline:
    def __init__(self):
        self.out = [False] * 4

    def pending(self, cpu):
        return self.out[cpu]


def _rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return n / best


def _system():
    bus = Bus()
    bus.add_ram(RAM, 0x10_0000)
    g = GicV3(4, dma=bus)
    g.distributor.write(0, 2, 4)
    icc = g.cpu_interface(0)
    icc.write_sysreg("ICC_PMR_EL1", 0xFF)
    icc.write_sysreg("ICC_IGRPEN1_EL1", 1)
    for reg in range(1, 8):                                    # SPIs 32-255: Group 1, enabled, edge, idle
        g.distributor.write(0x80 + 4 * reg, 0xFFFF_FFFF, 4)
        g.distributor.write(0x100 + 4 * reg, 0xFFFF_FFFF, 4)
    for reg in range(4, 32):
        g.distributor.write(0xC00 + 4 * reg, 0xAAAA_AAAA, 4)
    rd = g.redistributor(0)
    bus.write(RAM + 0x1000, 0xA3, 1)                           # LPI 8192: priority 0xA0, enabled
    rd.write(0x70, RAM + 0x1000 | 13, 8)
    rd.write(0x78, RAM + 0x10000, 8)
    rd.write(0, 1, 4)
    its = Its(g)
    its.write(0x100, 1 << 63 | RAM + 0x20000, 8)               # 4 KiB pages
    its.write(0x108, 1 << 63 | RAM + 0x30000, 8)
    its.write(0x80, 1 << 63 | RAM + 0x40000, 8)
    its.write(0, 1, 4)
    for i, (name, f) in enumerate((("MAPD", dict(deviceid=3, size=3, itt_addr=RAM + 0x50000, v=1)),
                                   ("MAPC", dict(icid=0, rdbase=0, v=1)),
                                   ("MAPTI", dict(deviceid=3, eventid=1, pintid=8192, icid=0)))):
        bus.write_bytes(RAM + 0x40000 + 32 * i, encode(name, **f))
    its.write(0x88, 96, 8)
    assert not its.errors
    return g, its


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench.py gic")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (for tests)")
    args = ap.parse_args(argv)
    n = 40_000 if args.quick else 400_000
    m = 2_000 if args.quick else 20_000
    reps = 2 if args.quick else 5
    g, its = _system()
    icc = g.cpu_interface(0)
    base = _Baseline()

    def baseline(k):
        f = base.pending
        for _ in range(k):
            f(1)
            f(1)

    def check(k):
        irq, fiq = g.irq_pending, g.fiq_pending
        for _ in range(k):
            irq(1)
            fiq(1)

    def spi_round_trip(k):
        pulse, read, write = g.pulse_spi, icc.read_sysreg, icc.write_sysreg
        for _ in range(k):
            pulse(100)
            intid = read("ICC_IAR1_EL1")
            write("ICC_EOIR1_EL1", intid)
        assert intid == 100

    def msi_round_trip(k):
        msi, read, write = its.msi, icc.read_sysreg, icc.write_sysreg
        for _ in range(k):
            msi(3, 1)
            intid = read("ICC_IAR1_EL1")
            write("ICC_EOIR1_EL1", intid)
        assert intid == 8192

    base_rate = _rate(baseline, n, reps)
    check_rate = _rate(check, n, reps)
    spi_rate = _rate(spi_round_trip, m, reps)
    msi_rate = _rate(msi_round_trip, m, reps)
    ratio = check_rate / base_rate
    ok = ratio >= CHECK_GOAL
    per_call = base_rate * 2                                    # baseline calls per second
    print(f"gic: baseline (2 calls)      {base_rate / 1e6:8.2f} M/s")
    print(f"gic: irq+fiq check           {check_rate / 1e6:8.2f} M/s  ratio {ratio:.2f} of the baseline "
          f"(goal >= {CHECK_GOAL})  {'ok' if ok else 'MISSED'}")
    print(f"gic: SPI pulse+IAR1+EOIR1    {spi_rate / 1e3:8.1f} k/s  = {per_call / spi_rate:,.0f} baseline calls")
    print(f"gic: MSI->LPI+IAR1+EOIR1     {msi_rate / 1e3:8.1f} k/s  = {per_call / msi_rate:,.0f} baseline calls")
    return {"name": "gic", "ok": ok, "goal": CHECK_GOAL, "baseline_per_s": base_rate, "check_per_s": check_rate,
            "check_ratio": ratio, "spi_round_trip_per_s": spi_rate, "msi_round_trip_per_s": msi_rate}


if __name__ == "__main__":
    import sys
    run(sys.argv[1:])
