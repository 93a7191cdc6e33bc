"""GICv3 (Arm IHI 0069): distributor, one redistributor and one CPU interface per PE, LPIs; the ITS is
`devmodel.gic.its.Its`, attached to this object.

Configuration as QEMU's `-M virt,gic-version=3` (hw/intc/arm_gicv3*.c) presents it, checked on QEMU 7.2 by
tests/devmodel/gic/test_qemu_differential.py:
* Affinity routing always on and a single Security state: GICD_CTLR reads ARE=1 (bit 4) and DS=1 (bit 6), both
  RAO/WI; EnableGrp0 (bit 0) and EnableGrp1 (bit 1) are the only writable bits; RWP reads 0.
* GICD_TYPER: ITLinesNumber from `num_irqs` (QEMU virt: 256 INTIDs), LPIS when LPIs are supported, IDbits=15
  (16-bit INTIDs), A3V=1, No1N=1 (no 1-of-N SPI routing, so GICD_IROUTER<n>.IRM is RES0), MBIS=0 (no
  GICD_SETSPI_*), ESPI=0. GICD_IIDR 0x43B, PIDR0-4 0x92 0xB4 0x3B 0x00 0x44.
* With ARE=1 the distributor's banked registers (INTIDs 0-31 of IGROUPR, ISENABLER, ... , IPRIORITYR, ICFGR),
  GICD_ITARGETSR, GICD_SGIR, GICD_C/SPENDSGIR, GICD_IGRPMODR and GICD_NSACR are RAZ/WI.
* GICD_IPRIORITYR keeps 8 bits (as QEMU); the CPU interface implements 5 (ICC_PMR_EL1 0xF8 mask).
* An SPI is offered to the PE whose affinity equals GICD_IROUTER<n>.Aff3.Aff2.Aff1.Aff0, to none when no PE
  matches. GICD_IROUTER RES0 bits are masked (QEMU stores them; a model choice for spec fidelity).

PE affinities default to QEMU virt's (Aff0 = cpu % 16, Aff1 = cpu // 16); pass `affinities` (the MPIDR_EL1
Aff3.Aff2.Aff1.Aff0 values the vCPUs report) when the harness numbers them differently.

Not modelled: Security Extensions (GICD_CTLR.DS=0), extended SPI/PPI ranges, message-based SPIs, GICv4
virtual LPIs and VLPI frames, Direct LPI injection, wake-up (GICR_WAKER.ProcessorSleep is stored but does not
gate delivery), RWP/UWP delays.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol

from ..bus import BusError
from ..regs import Access, Reg, RegField, RegisterFile
from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .gicv3_cpuif import GicV3CpuInterface, SysReg, sysregs_for
from .gicv3_redist import GICR_FRAME, Redistributor
from .lpi import LPI_BASE
from .mmio import BadAccess, Log, id_regs
from .regmap import IrqArray, IrqArrays, common_arrays
from .state import Irq, IrqEngine, field_get, field_set

__all__ = ["GicV3", "GICD_V3_SIZE", "GICV3_DIST_ARRAYS", "IROUTER_MASK", "Dma", "qemu_virt_affinity"]

GICD_V3_SIZE = 0x10000
RO, RW = Access.RO, Access.RW
IDBITS = 15                       # GICD_TYPER.IDbits: 16-bit INTIDs
IROUTER_MASK = 0xFF_00FF_FFFF     # Aff3 [39:32], Aff2.Aff1.Aff0 [23:0]; IRM is RES0 with No1N=1

#: IHI 0069 table 12-25 (distributor, ARE=1). "zero" fields read as 0 and ignore writes.
GICV3_DIST_ARRAYS = (
    *common_arrays("GICD_"),
    IrqArray("GICD_ITARGETSR", 0x0800, 8, "zero", "ro", byte_ok=True),
    IrqArray("GICD_IGRPMODR", 0x0D00, 1, "zero", "ro"),
    IrqArray("GICD_NSACR", 0x0E00, 2, "zero", "ro"),
    IrqArray("GICD_IROUTER", 0x6000, 64, "route"),
)


class Dma(Protocol):
    """What the GIC and ITS read their in-memory tables through (a `devmodel.bus.Bus`)."""

    def read(self, addr: int, size: int = 8) -> int: ...

    def write(self, addr: int, value: int, size: int = 8) -> None: ...

    def read_bytes(self, addr: int, size: int) -> bytes: ...


def qemu_virt_affinity(cpu: int) -> int:
    """MPIDR affinity QEMU virt gives vCPU `cpu` with a GICv3 (16 PEs per Aff1 cluster)."""
    return ((cpu // 16) << 8) | (cpu % 16)


def _dist_regs(typer: int) -> tuple[Reg, ...]:
    return (
        Reg("GICD_CTLR", 0x0000, reset=0x50, fields=(
            RegField("EnableGrp0", 0, 1), RegField("EnableGrp1", 1, 1), RegField("ARE", 4, 1, access=RO),
            RegField("DS", 6, 1, access=RO), RegField("RWP", 31, 1, access=RO))),
        Reg("GICD_TYPER", 0x0004, reset=typer, access=RO),
        Reg("GICD_IIDR", 0x0008, reset=0x43B, access=RO),
        Reg("GICD_TYPER2", 0x000C, access=RO),
        Reg("GICD_STATUSR", 0x0010, access=RO),
        Reg("GICD_SGIR", 0x0F00, access=RO, doc="RAZ/WI with ARE=1"),
        *(Reg(f"GICD_{name}SGIR{n}", base + 4 * n, access=RO)
          for name, base in (("CPEND", 0xF10), ("SPEND", 0xF20)) for n in range(4)),
        *id_regs(0xFFD0, (0x92, 0xB4, 0x3B, 0x00, 0x44), "GICD_"),
    )


class _Mmio:
    __slots__ = ("read", "write")

    def __init__(self, read: Callable[[int, int], int], write: Callable[[int, int, int], None]):
        self.read = read
        self.write = write


class GicV3(IrqEngine):
    """A GICv3 with `num_cpus` PEs, `num_irqs` INTIDs below 1020 (a multiple of 32) and, if `lpis`, LPIs
    whose tables are read through `dma` (the address space the GIC masters: the host bus, or a VM's IPA
    space for a VM's virtual GIC).

    MMIO: `distributor` (64 KiB), `redistributors` (num_cpus x 128 KiB, contiguous), `redistributor(cpu)`.
    System registers: `cpu_interface(cpu).read_sysreg(name)` / `.write_sysreg(name, value)`, and
    `sysreg_table()` (encoding -> SysReg) for registering MRS/MSR handlers. Inputs: `set_spi`, `set_ppi`,
    `pulse_spi`, `pulse_ppi`, `set_lpi`. Outputs: `irq_pending(cpu)`, `fiq_pending(cpu)`, `on_change(cpu)`.
    """

    line_event = "gicv3_cpuif_set_irqs"

    def __init__(self, num_cpus: int = 1, num_irqs: int = 256, *, lpis: bool = True, dma: Dma | None = None,
                 pribits: int = 5, affinities: Iterable[int] | None = None, tracer: Tracer = NULL_TRACER,
                 log: Log | None = None, on_change: Callable[[int], None] | None = None, name: str = "gicv3"):
        if num_irqs % 32 or not 64 <= num_irqs <= 1024:
            raise ValueError(f"num_irqs {num_irqs} must be a multiple of 32 in 64..1024")
        super().__init__(num_cpus, tracer=tracer, on_change=on_change)
        self.name = name
        self.num_irqs = min(num_irqs, 1020)
        self.lpis = lpis
        self.dma = dma
        self.log = log
        self.idbits = IDBITS
        self.affinities = list(affinities) if affinities is not None else \
            [qemu_virt_affinity(c) for c in range(num_cpus)]
        if len(self.affinities) != num_cpus or len(set(self.affinities)) != num_cpus:
            raise ValueError(f"affinities must be {num_cpus} distinct values, got {self.affinities}")
        self.cpu_of_affinity = {a: c for c, a in enumerate(self.affinities)}
        self.bad = BadAccess(name, "gicv3_bad_access", tracer, log)
        self.arrays = IrqArrays(GICV3_DIST_ARRAYS)
        typer = (num_irqs // 32 - 1) | (int(lpis) << 17) | (IDBITS << 19) | (1 << 24) | (1 << 25)
        self.dist_regs = RegisterFile(self, _dist_regs(typer),
                                      on_bad_access=lambda k, o, s, v: self.bad(None, "gicd", k, o, s, v))
        self.spis = [Irq(i) for i in range(32, self.num_irqs)]
        self.redists = [Redistributor(self, c) for c in range(num_cpus)]
        self.cpuifs = [GicV3CpuInterface(self, c, pribits) for c in range(num_cpus)]
        for spi in self.spis:
            spi.targets = self._route_targets(spi.route)
        self.distributor = _Mmio(self.dist_read, self.dist_write)
        self.redistributors = _Mmio(self.redist_read, self.redist_write)

    # -- views -------------------------------------------------------------------------------------------------
    def affinity(self, cpu: int) -> int:
        return self.affinities[cpu]

    def redistributor(self, cpu: int) -> Redistributor:
        return self.redists[cpu]

    def cpu_interface(self, cpu: int) -> GicV3CpuInterface:
        return self.cpuifs[cpu]

    def sysreg_table(self) -> dict[tuple[int, int, int, int, int], SysReg]:
        """(op0, op1, CRn, CRm, op2) -> SysReg for every ICC register the CPU interfaces implement."""
        return sysregs_for(self.cpuifs[0].pribits)

    # -- engine hooks ------------------------------------------------------------------------------------------
    def group_enabled(self, cpu: int, group: int) -> bool:
        return bool(self.dist_regs["GICD_CTLR"] >> group & 1 and self.cpuifs[cpu].igrpen[group])

    def signal(self, cpu: int, best: Irq | None) -> tuple[bool, bool]:
        if not self.cpuifs[cpu].can_preempt(best):
            return False, False
        assert best is not None
        return best.group == 1, best.group == 0

    def irq(self, cpu: int, intid: int) -> Irq | None:
        """Interrupt `intid` as PE `cpu` sees it; LPIs only while pending. None if there is no such state."""
        if intid < 32:
            return self.redists[cpu].private[intid]
        if intid < self.num_irqs:
            return self.spis[intid - 32]
        return self.redists[cpu].lpis.get(intid)

    def intid_exists(self, intid: int) -> bool:
        return intid < self.num_irqs or (self.lpis and LPI_BASE <= intid < 1 << (self.idbits + 1))

    def iter_cpu_irqs(self, cpu: int) -> Iterator[Irq]:
        rd = self.redists[cpu]
        yield from rd.private
        yield from (s for s in self.spis if cpu in s.targets)
        yield from list(rd.lpis.values())

    def refresh_cpu(self, cpu: int) -> None:
        self.refresh_all(self.iter_cpu_irqs(cpu))

    def activate(self, irq: Irq) -> None:
        """Acknowledge: an LPI stops being pending; any other interrupt becomes active (and stays pending only
        while a level-sensitive line holds it)."""
        if irq.intid >= LPI_BASE:
            self.redists[irq.owner].clear_lpi(irq.intid)
            return
        irq.latch = False
        irq.active = True
        self.refresh(irq)

    def deactivate(self, cpu: int, intid: int) -> None:
        irq = self.irq(cpu, intid) if intid < LPI_BASE else None
        if irq is not None and irq.active:
            irq.active = False
            self.refresh(irq)

    # -- distributor MMIO --------------------------------------------------------------------------------------
    def dist_read(self, offset: int, size: int) -> int:
        value = self.arrays.read(offset, size, self._dist_get, self.num_irqs,
                                 lambda kind: self.bad(None, "gicd", kind, offset, size))
        if value is None:
            value = self.dist_regs.read(offset, size)
        if "gicv3_dist_read" in self.tracer.enabled:
            self.tracer.emit("gicv3_dist_read", offset=offset, value=value, size=size)
        return value

    def dist_write(self, offset: int, value: int, size: int) -> None:
        if "gicv3_dist_write" in self.tracer.enabled:
            self.tracer.emit("gicv3_dist_write", offset=offset, value=value, size=size)
        if not self.arrays.write(offset, value, size, self._dist_get, self._dist_set, self.num_irqs,
                                 lambda kind: self.bad(None, "gicd", kind, offset, size, value)):
            self.dist_regs.write(offset, value, size)
        self.settle()

    def _on_gicd_ctlr_write(self, old: int, new: int) -> None:
        if old != new:
            for cpu in range(self.ncpus):
                self.refresh_all(self.redists[cpu].private)
                self.refresh_all(list(self.redists[cpu].lpis.values()))
            self.refresh_all(self.spis)

    def _dist_get(self, intid: int, attr: str) -> int:
        if intid < 32 or intid >= self.num_irqs or attr == "zero":
            return 0
        irq = self.spis[intid - 32]
        return irq.route if attr == "route" else field_get(irq, attr)

    def _dist_set(self, intid: int, attr: str, value: int) -> None:
        if intid < 32 or intid >= self.num_irqs:
            return
        irq = self.spis[intid - 32]
        if attr == "route":
            irq.route = value & IROUTER_MASK
            irq.targets = self._route_targets(irq.route)
        else:
            field_set(irq, attr, value)
        self.refresh(irq)

    def _route_targets(self, route: int) -> tuple[int, ...]:
        aff = ((route >> 8) & 0xFF00_0000) | (route & 0xFF_FFFF)      # Aff3 to [31:24]
        cpu = self.cpu_of_affinity.get(aff)
        return () if cpu is None else (cpu,)

    # -- redistributor MMIO ------------------------------------------------------------------------------------
    def redist_read(self, offset: int, size: int) -> int:
        cpu, rel = divmod(offset, GICR_FRAME)
        if cpu >= self.ncpus:
            self.bad(None, "gicr", "read", offset, size)
            return 0
        value = self.redists[cpu].read(rel, size)
        if "gicv3_redist_read" in self.tracer.enabled:
            self.tracer.emit("gicv3_redist_read", cpu=cpu, offset=rel, value=value, size=size)
        return value

    def redist_write(self, offset: int, value: int, size: int) -> None:
        cpu, rel = divmod(offset, GICR_FRAME)
        if cpu >= self.ncpus:
            self.bad(None, "gicr", "write", offset, size, value)
            return
        if "gicv3_redist_write" in self.tracer.enabled:
            self.tracer.emit("gicv3_redist_write", cpu=cpu, offset=rel, value=value, size=size)
        self.redists[cpu].write(rel, value, size)
        self.settle()

    # -- SGIs --------------------------------------------------------------------------------------------------
    def generate_sgi(self, src: int, value: int, kind: str) -> None:
        """ICC_SGI0R ("g0") / SGI1R ("g1ns") / ASGI1R ("g1s") write by PE `src` (IHI 0069 12.2.22)."""
        intid = (value >> 24) & 0xF
        irm = (value >> 40) & 1
        if irm:
            targets = [c for c in range(self.ncpus) if c != src]
        else:
            # RS [47:44] is RES0: ICC_CTLR_EL1.RSS=0, so TargetList bit n is Aff0 = n
            upper = ((value >> 48) & 0xFF) << 24 | ((value >> 32) & 0xFF) << 16 | ((value >> 16) & 0xFF) << 8
            tlist = value & 0xFFFF
            targets = [c for bit in range(16) if tlist >> bit & 1
                       for c in [self.cpu_of_affinity.get(upper | bit)] if c is not None]
        reached = []
        for t in targets:
            sgi = self.redists[t].private[intid]
            accepted = {"g0": 0, "g1ns": 1, "g1s": 0}[kind]      # DS=1: a Secure Group 1 SGI hits Group 0 SGIs
            if sgi.group != accepted:
                continue
            sgi.latch = True
            self.refresh(sgi)
            reached.append(t)
            if "gicv3_redist_send_sgi" in self.tracer.enabled:
                self.tracer.emit("gicv3_redist_send_sgi", cpu=t, irq=intid, group=sgi.group)
        if "gicv3_icc_generate_sgi" in self.tracer.enabled:
            self.tracer.emit("gicv3_icc_generate_sgi", cpu=src, irq=intid, irm=irm, group=kind, targets=reached)

    # -- input lines (set_spi, set_ppi, pulse_*: IrqEngine) ----------------------------------------------------
    def set_lpi(self, cpu: int, intid: int, pending: bool = True) -> bool:
        """Set (or clear) LPI `intid` pending at PE `cpu`'s redistributor; False when it cannot accept it
        (LPIs disabled there, INTID out of the tables' range)."""
        ok = self.redists[cpu].set_lpi(intid, pending)
        self.settle()
        return ok

    def trace_line(self, intid: int, level: bool, cpu: int | None) -> None:
        if cpu is None:
            if "gicv3_dist_set_irq" in self.tracer.enabled:
                self.tracer.emit("gicv3_dist_set_irq", irq=intid, level=int(level))
        elif "gicv3_redist_set_irq" in self.tracer.enabled:
            self.tracer.emit("gicv3_redist_set_irq", cpu=cpu, irq=intid, level=int(level))

    # -- memory the LPI tables live in -------------------------------------------------------------------------
    def dma_read(self, addr: int, size: int) -> int:
        if self.dma is None:
            raise BusError(addr, size, "the GIC has no DMA bus")
        return self.dma.read(addr, size)

    def dma_write(self, addr: int, value: int, size: int) -> None:
        if self.dma is None:
            raise BusError(addr, size, "the GIC has no DMA bus")
        self.dma.write(addr, value, size)

    def dma_read_bytes(self, addr: int, size: int) -> bytes:
        if self.dma is None:
            raise BusError(addr, size, "the GIC has no DMA bus")
        return self.dma.read_bytes(addr, size)

    # -- whole device ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Every register and interrupt to its reset state (input levels and memory are kept)."""
        self.dist_regs.reset()
        for rd in self.redists:
            rd.reset()
        for ci in self.cpuifs:
            ci.reset()
        for spi in self.spis:
            spi.enabled = spi.latch = spi.active = spi.edge = False
            spi.group = spi.prio = spi.route = 0
            spi.targets = self._route_targets(0)
            self.refresh(spi)
        for c in range(self.ncpus):
            self.touch(c)
        self.settle()

    def state(self) -> dict[str, Any]:
        """A snapshot for tests and traces."""
        cpus = []
        for c in range(self.ncpus):
            mine = list(self.iter_cpu_irqs(c))
            best = self.hppi(c)
            cpus.append({**self.cpuifs[c].state(), **self.redists[c].state(), "irq": self.irq_out[c],
                         "fiq": self.fiq_out[c], "hppi": None if best is None else best.intid,
                         "pending": [i.intid for i in mine if i.pending],
                         "active": [i.intid for i in mine if i.active]})
        return {"ctlr": self.dist_regs["GICD_CTLR"], "cpus": cpus, "bad_accesses": dict(self.bad.counts)}
