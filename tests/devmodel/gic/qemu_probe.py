"""Run a script of MMIO / system-register accesses on qemu-system-aarch64 -M virt (probe/gic_probe.c) and get
back the values read, so tests can replay the same script on the GIC models and compare (QEMU 7.2 as the oracle).

A script is a list of `Op`s; `run_qemu(ops, gic=2|3, cpus=N)` returns the list of values the reads returned.
`run_model(ops, board)` replays it on a `ModelBoard` (a Bus with RAM and the GIC devices at QEMU virt's
addresses), so the two lists compare directly.
"""
from __future__ import annotations

import functools
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.build import build_guest

QEMU = shutil.which("qemu-system-aarch64")
PROBE_SRC = Path(__file__).resolve().parent / "probe" / "gic_probe.c"
SCRIPT_ADDR = 0x4F00_0000

R8, R16, R32, R64, W8, W16, W32, W64, MRS, MSR = range(1, 11)
_SIZE = {R8: 1, R16: 2, R32: 4, R64: 8, W8: 1, W16: 2, W32: 4, W64: 8}

#: system register number -> ICC/ARM name, parsed from the probe's X-macro list (one source of truth)
SYSREGS: dict[int, str] = {int(n): r.upper() for n, r in
                           re.findall(r"X\((\d+), (\w+),", PROBE_SRC.read_text())}
SYSREG_NO = {name: n for n, name in SYSREGS.items()}


@dataclass(frozen=True)
class Op:
    kind: int
    addr: int = 0
    value: int = 0
    cpu: int = 0

    def pack(self) -> bytes:
        return struct.pack("<IIQQ", self.cpu, self.kind, self.addr, self.value & (1 << 64) - 1)


def r32(addr, cpu=0): return Op(R32, addr, cpu=cpu)
def r64(addr, cpu=0): return Op(R64, addr, cpu=cpu)
def r8(addr, cpu=0): return Op(R8, addr, cpu=cpu)
def w32(addr, v, cpu=0): return Op(W32, addr, v, cpu)
def w64(addr, v, cpu=0): return Op(W64, addr, v, cpu)
def w8(addr, v, cpu=0): return Op(W8, addr, v, cpu)
def mrs(name, cpu=0): return Op(MRS, SYSREG_NO[name], cpu=cpu)
def msr(name, v, cpu=0): return Op(MSR, SYSREG_NO[name], v, cpu)


@functools.cache
def probe_elf() -> Path:
    return build_guest([PROBE_SRC], name="gic_probe").path


def run_qemu(ops: list[Op], gic: int, cpus: int = 1) -> list[int]:
    script = struct.pack("<Q", len(ops)) + b"".join(o.pack() for o in ops)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "script.bin"
        path.write_bytes(script)
        cmd = [QEMU, "-M", f"virt,gic-version={gic}", "-cpu", "max", "-smp", str(cpus), "-m", "256M",
               "-semihosting", "-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio",
               "-kernel", str(probe_elf()), "-device", f"loader,file={path},addr={SCRIPT_ADDR:#x},force-raw=on"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = p.stdout.replace("\r\n", "\n").splitlines()
    if "END" not in lines or p.returncode != 0:
        raise RuntimeError(f"probe failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    return [int(x[1:], 16) for x in lines if x.startswith("=")]


# -- the same script on the models -----------------------------------------------------------------------------
GICD, GICC, ITS_BASE, GICR = 0x0800_0000, 0x0801_0000, 0x0808_0000, 0x080A_0000
TABLES, TABLES_SIZE = 0x4800_0000, 0x0100_0000     # guest RAM the scripts use for ITS/LPI tables


class ModelBoard:
    """QEMU virt's GIC addresses over the devmodel GICs, plus RAM at TABLES for in-memory tables."""

    def __init__(self, gic: int, cpus: int = 1):
        from devmodel.bus import Bus
        from devmodel.gic import GicV2, GicV3
        self.version = gic
        self.bus = Bus()
        self.bus.add_ram(TABLES, TABLES_SIZE)
        self.its = None
        if gic == 2:
            self.gic = GicV2(cpus)
        else:
            self.gic = GicV3(cpus, dma=self.bus)
            from devmodel.gic.its import Its
            self.its = Its(self.gic, self.bus)

    def device(self, addr: int, cpu: int):
        """(read(offset, size), write(offset, value, size), offset) for `addr` as CPU `cpu` sees it."""
        g = self.gic
        if GICD <= addr < GICD + 0x10000:
            if self.version == 2:
                return (lambda o, s: g.dist_read(cpu, o, s)), (lambda o, v, s: g.dist_write(cpu, o, v, s)), \
                    addr - GICD
            return g.dist_read, g.dist_write, addr - GICD
        if self.version == 2 and GICC <= addr < GICC + 0x10000:
            return g.cpus[cpu].read, g.cpus[cpu].write, addr - GICC
        if self.version == 3 and ITS_BASE <= addr < ITS_BASE + 0x20000:
            return self.its.read, self.its.write, addr - ITS_BASE
        if self.version == 3 and GICR <= addr < GICR + 0xF6_0000:
            return g.redist_read, g.redist_write, addr - GICR
        return self.bus.read, self.bus.write, addr

    def sysreg(self, name: str, cpu: int, value: int | None = None) -> int:
        g = self.gic
        if name == "ISR_EL1":
            return (g.irq_pending(cpu) << 7) | (g.fiq_pending(cpu) << 6)
        if name == "MPIDR_EL1":
            aff = g.affinity(cpu) if self.version == 3 else cpu
            return 0x8000_0000 | aff
        if value is None:
            return g.cpu_interface(cpu).read_sysreg(name)
        g.cpu_interface(cpu).write_sysreg(name, value)
        return 0


def run_model(ops: list[Op], board: ModelBoard) -> list[int]:
    out = []
    for op in ops:
        if op.kind in (MRS, MSR):
            name = SYSREGS[op.addr]
            if op.kind == MRS:
                out.append(board.sysreg(name, op.cpu))
            else:
                board.sysreg(name, op.cpu, op.value)
            continue
        read, write, off = board.device(op.addr, op.cpu)
        size = _SIZE[op.kind]
        if op.kind in (R8, R16, R32, R64):
            out.append(read(off, size))
        else:
            write(off, op.value & ((1 << (8 * size)) - 1), size)
    return out
