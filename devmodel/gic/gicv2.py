"""GICv2 (Arm IHI 0048B): distributor and CPU interfaces, without the Security and Virtualization Extensions,
as QEMU's `-M virt,gic-version=2` (hw/intc/arm_gic.c) presents it.

Register maps: IHI 0048B table 4-1 (distributor, 4 KiB) and table 4-2 (CPU interface, 8 KiB, GICC_DIR at
0x1000). Values QEMU 7.2 shows and this model reproduces (tests/devmodel/gic/test_qemu_differential.py compares
them on the real QEMU): GICD_IIDR 0x43B, GICC_IIDR 0x0002043B, PIDR0-4 0x90 0xB4 0x2B 0x00 0x04, 8 priority
bits (GICC_BPR minimum 0, GICC_ABPR minimum 1), SGIs permanently enabled and edge-triggered, PPIs' GICD_ICFGR1
writable, GICD_ITARGETSR0-7 reading the accessing CPU's bit, every GICD_ITARGETSR RAZ/WI on a uniprocessor GIC
(every SPI then targets CPU 0), GICC_AIAR/AEOIR/AHPPIR RAZ/WI (they belong to the Security Extensions).
Where QEMU 7.2 departs from the architecture the model follows the architecture (docs/gic.md lists the cases):
GICD_ITARGETSR / GICD_SPENDSGIR bits of missing CPUs are RAZ/WI, GICD_ISPENDR0's SGI bits are read-only, the
reserved GICD_SGIR.TargetListFilter 0b11 is ignored (counted).

Behaviour: interrupt groups exist (GICv2 always has them); Group 0 is signalled as FIQ when GICC_CTLR.FIQEn=1,
else as IRQ; Group 1 as IRQ. A Group 1 interrupt is acknowledged only when GICC_CTLR.AckCtl=1 (else GICC_IAR
and GICC_HPPIR return 1022; IHI 0048B 4.4.4). SGIs keep one pending bit per source CPU (GICD_SPENDSGIRn) and
GICC_IAR returns the source in CPUID [12:10]. SPIs follow the 1-N model: pending once, offered to every CPU in
GICD_ITARGETSR; the first to acknowledge it takes it. Active priorities: one bit per preemption level (128
levels: priority >> 1) in GICC_APRn (Group 0) and GICC_NSAPRn (Group 1); GICC_RPR is the highest of them.
EOImode (GICC_CTLR bit 9) = 1 splits priority drop (GICC_EOIR) from deactivation (GICC_DIR).

Not modelled: Security Extensions (GICD_CTLR is the single-security view), virtualization (GICH/GICV),
GICv2m, wake-up/bypass signals, PPISR/SPISR.
"""
from __future__ import annotations

from typing import Any, Callable

from ..regs import Access, Reg, RegField, RegisterFile
from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .frames import GICC_SIZE, GICD_SIZE
from .mmio import BadAccess, CpuView, CurrentCpuView, Log, id_regs
from .prio import IDLE_PRIORITY, group_prio_mask, lowest_bit
from .regmap import IrqArray, IrqArrays, common_arrays
from .state import NO_ACK_GROUP1, SPURIOUS, Irq, IrqEngine, field_get, field_set

__all__ = ["GicV2", "GicV2CpuInterface", "GICD_SIZE", "GICC_SIZE", "GICV2_DIST_ARRAYS", "GICC_REGS",
           "GICV2_MAX_CPUS"]

GICV2_MAX_CPUS = 8

RO, RW, WO = Access.RO, Access.RW, Access.WO

#: IHI 0048B table 4-1: the per-interrupt arrays of the distributor
GICV2_DIST_ARRAYS = (
    *common_arrays("GICD_"),
    IrqArray("GICD_ITARGETSR", 0x800, 8, "targets", byte_ok=True),
    IrqArray("GICD_CPENDSGIR", 0xF10, 8, "sources_clear", count=16, byte_ok=True),
    IrqArray("GICD_SPENDSGIR", 0xF20, 8, "sources_set", count=16, byte_ok=True),
)

GICD_SGIR = 0xF00


def _dist_regs(typer: int) -> tuple[Reg, ...]:
    return (
        Reg("GICD_CTLR", 0x000, fields=(RegField("EnableGrp0", 0, 1), RegField("EnableGrp1", 1, 1))),
        Reg("GICD_TYPER", 0x004, reset=typer, access=RO),
        Reg("GICD_IIDR", 0x008, reset=0x43B, access=RO),
        Reg("GICD_SGIR", GICD_SGIR, access=WO, fields=(
            RegField("SGIINTID", 0, 4, access=WO), RegField("NSATT", 15, 1, access=WO),
            RegField("CPUTargetList", 16, 8, access=WO), RegField("TargetListFilter", 24, 2, access=WO))),
        # NSACR exists only with the Security Extensions: RAZ/WI (declared so it is not a bad access)
        *(Reg(f"GICD_NSACR{n}", 0xE00 + 4 * n, access=RO) for n in range(64)),
        *id_regs(0xFD0, (0x90, 0xB4, 0x2B, 0x00, 0x04), "GICD_"),
    )


# GICC_CTLR without the Security Extensions (IHI 0048B 4.4.1, as QEMU implements it: bypass disables and
# EOImodeNS are not implemented, so bits 5-8 and 10 read as zero).
CTLR_ENABLE_GRP0, CTLR_ENABLE_GRP1, CTLR_ACKCTL, CTLR_FIQEN, CTLR_CBPR, CTLR_EOIMODE = 1, 2, 4, 8, 16, 1 << 9

GICC_REGS: tuple[Reg, ...] = (
    Reg("GICC_CTLR", 0x00, fields=(RegField("EnableGrp0", 0, 1), RegField("EnableGrp1", 1, 1),
                                   RegField("AckCtl", 2, 1), RegField("FIQEn", 3, 1), RegField("CBPR", 4, 1),
                                   RegField("EOImode", 9, 1))),
    Reg("GICC_PMR", 0x04, fields=(RegField("Priority", 0, 8),)),
    Reg("GICC_BPR", 0x08, fields=(RegField("BinaryPoint", 0, 3),)),
    Reg("GICC_IAR", 0x0C, access=RO, doc="read acknowledges"),
    Reg("GICC_EOIR", 0x10, access=WO),
    Reg("GICC_RPR", 0x14, access=RO),
    Reg("GICC_HPPIR", 0x18, access=RO),
    Reg("GICC_ABPR", 0x1C, reset=1, fields=(RegField("BinaryPoint", 0, 3),)),
    Reg("GICC_AIAR", 0x20, access=RO, doc="Security Extensions only: RAZ"),
    Reg("GICC_AEOIR", 0x24, access=RO, doc="Security Extensions only: WI"),
    Reg("GICC_AHPPIR", 0x28, access=RO, doc="Security Extensions only: RAZ"),
    *(Reg(f"GICC_APR{n}", 0xD0 + 4 * n) for n in range(4)),
    *(Reg(f"GICC_NSAPR{n}", 0xE0 + 4 * n) for n in range(4)),
    Reg("GICC_IIDR", 0xFC, reset=0x0002_043B, access=RO),
    Reg("GICC_DIR", 0x1000, access=WO),
)

_PREEMPT_SHIFT = 1     # 8 priority bits, minimum BPR 0: preemption level = group priority >> 1


class GicV2CpuInterface:
    """One CPU's GICC_* frame. It is itself the MMIO device of that CPU's view (`read`/`write`)."""

    def __init__(self, gic: "GicV2", cpu: int):
        self.gic = gic
        self.cpu = cpu
        self.regs = RegisterFile(self, GICC_REGS, on_bad_access=self._bad)

    # -- MMIO --------------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        value = self.regs.read(offset, size)
        if "gic_cpu_read" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gic_cpu_read", cpu=self.cpu, offset=offset, value=value, size=size)
        self.gic.settle()
        return value

    def write(self, offset: int, value: int, size: int) -> None:
        if "gic_cpu_write" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gic_cpu_write", cpu=self.cpu, offset=offset, value=value, size=size)
        self.regs.write(offset, value, size)
        self.gic.settle()

    def _bad(self, kind: str, offset: int, size: int, value: int | None) -> None:
        self.gic.bad(self.cpu, "gicc", kind, offset, size, value)

    # -- state the engine asks for -------------------------------------------------------------------------
    @property
    def ctlr(self) -> int:
        return self.regs["GICC_CTLR"]

    @property
    def pmr(self) -> int:
        return self.regs["GICC_PMR"]

    def gprio(self, irq: Irq) -> int:
        """Group priority of `irq` for preemption (GICC_ABPR for Group 1 unless CBPR=1)."""
        if irq.group and not self.ctlr & CTLR_CBPR:
            return irq.prio & group_prio_mask(self.regs["GICC_ABPR"], alias=True)
        return irq.prio & group_prio_mask(self.regs["GICC_BPR"])

    def running_priority(self) -> int:
        for n in range(4):
            bits = self.regs[f"GICC_APR{n}"] | self.regs[f"GICC_NSAPR{n}"]
            if bits:
                return ((32 * n + lowest_bit(bits)) << _PREEMPT_SHIFT) & 0xFF
        return IDLE_PRIORITY

    def can_preempt(self, irq: Irq | None) -> bool:
        return irq is not None and irq.prio < self.pmr and self.gprio(irq) < self.running_priority()

    # -- register hooks --------------------------------------------------------------------------------------
    def _on_gicc_ctlr_write(self, old: int, new: int) -> None:
        if (old ^ new) & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1):
            self.gic.refresh_cpu(self.cpu)
        self.gic.touch(self.cpu)

    def _on_gicc_pmr_write(self, old: int, new: int) -> None:
        self.gic.touch(self.cpu)

    def _on_gicc_bpr_write(self, old: int, new: int) -> None:
        self.gic.touch(self.cpu)

    def _on_gicc_abpr_write(self, old: int, new: int) -> None:
        self.regs["GICC_ABPR"] = max(new, 1)      # minimum binary point of Group 1 is BPR min + 1
        self.gic.touch(self.cpu)

    def _on_gicc_iar_read(self, value: int) -> int:
        return self.acknowledge()

    def _on_gicc_hppir_read(self, value: int) -> int:
        best = self.gic.hppi(self.cpu)
        if best is None or best.prio >= self.pmr:
            return SPURIOUS
        if best.group and not self.ctlr & CTLR_ACKCTL:
            return NO_ACK_GROUP1
        return best.intid

    def _on_gicc_rpr_read(self, value: int) -> int:
        return self.running_priority()

    def _on_gicc_eoir_write(self, old: int, new: int) -> None:
        self.end_of_interrupt(new)

    def _on_gicc_dir_write(self, old: int, new: int) -> None:
        self.deactivate(new & 0x3FF)

    def _apr_written(self, old: int, new: int) -> None:
        self.gic.touch(self.cpu)     # software restored active priorities: the running priority changed

    # -- acknowledge / EOI / deactivate ----------------------------------------------------------------------
    def acknowledge(self) -> int:
        """GICC_IAR read: activate the highest-priority pending interrupt that can preempt."""
        gic, cpu = self.gic, self.cpu
        best = gic.hppi(cpu)
        if not self.can_preempt(best):
            return SPURIOUS
        assert best is not None
        if best.group and not self.ctlr & CTLR_ACKCTL:
            return NO_ACK_GROUP1
        value = best.intid
        if best.intid < 16:              # SGI: one source at a time, lowest CPU number first (as QEMU)
            src = lowest_bit(best.sources)
            best.sources &= ~(1 << src)
            best.latch = best.sources != 0
            value |= src << 10
        else:
            best.latch = False
        best.active = True
        level = self.gprio(best) >> _PREEMPT_SHIFT
        name = f"GICC_{'NS' if best.group else ''}APR{level // 32}"
        self.regs[name] = self.regs[name] | (1 << (level % 32))
        gic.refresh(best)
        gic.touch(cpu)
        if "gic_acknowledge_irq" in gic.tracer.enabled:
            gic.tracer.emit("gic_acknowledge_irq", cpu=cpu, irq=best.intid, value=value)
        return value

    def end_of_interrupt(self, value: int) -> None:
        """GICC_EOIR write: priority drop in the interrupt's group, and deactivation unless EOImode=1."""
        gic, cpu = self.gic, self.cpu
        intid = value & 0x3FF
        irq = gic.irq(cpu, intid)
        if irq is None:                  # spurious INTIDs and interrupts that do not exist: ignored
            return
        if irq.group and not self.ctlr & CTLR_ACKCTL:
            return                       # Group 1 EOI with AckCtl=0 is ignored (it could not be acknowledged)
        prefix = "GICC_NSAPR" if irq.group else "GICC_APR"
        for n in range(4):
            bits = self.regs[f"{prefix}{n}"]
            if bits:
                self.regs[f"{prefix}{n}"] = bits & (bits - 1)
                break
        deactivate = not self.ctlr & CTLR_EOIMODE
        if deactivate:
            irq.active = False
            gic.refresh(irq)
        gic.touch(cpu)
        if "gic_eoi" in gic.tracer.enabled:
            gic.tracer.emit("gic_eoi", cpu=cpu, irq=intid, deactivated=int(deactivate))

    def deactivate(self, intid: int) -> None:
        """GICC_DIR write: deactivate (only meaningful with EOImode=1; otherwise UNPREDICTABLE, ignored)."""
        irq = self.gic.irq(self.cpu, intid)
        if irq is None or not self.ctlr & CTLR_EOIMODE:
            return
        irq.active = False
        self.gic.refresh(irq)
        if "gic_deactivate" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gic_deactivate", cpu=self.cpu, irq=intid)

    def reset(self) -> None:
        self.regs.reset()

    def state(self) -> dict[str, int]:
        return {"ctlr": self.ctlr, "pmr": self.pmr, "bpr": self.regs["GICC_BPR"], "abpr": self.regs["GICC_ABPR"],
                "rpr": self.running_priority(),
                "apr": [self.regs[f"GICC_APR{n}"] for n in range(4)],
                "nsapr": [self.regs[f"GICC_NSAPR{n}"] for n in range(4)]}


for _n in range(4):      # one hook for the eight active-priority registers
    setattr(GicV2CpuInterface, f"_on_gicc_apr{_n}_write", GicV2CpuInterface._apr_written)
    setattr(GicV2CpuInterface, f"_on_gicc_nsapr{_n}_write", GicV2CpuInterface._apr_written)


class GicV2(IrqEngine):
    """A GICv2 with `num_cpus` CPU interfaces and `num_irqs` INTIDs (a multiple of 32, SPIs from 32).

    MMIO: `distributor` / `cpu_interface` route each access to the CPU `current_cpu()` names;
    `distributor_for(cpu)` / `cpu_interface_for(cpu)` are fixed views. Inputs: `set_spi`, `set_ppi`,
    `pulse_spi`, `pulse_ppi`. Outputs: `irq_pending(cpu)`, `fiq_pending(cpu)`, `on_change(cpu)`.
    """

    line_event = "gic_update_set_irq"

    def __init__(self, num_cpus: int = 1, num_irqs: int = 288, *, tracer: Tracer = NULL_TRACER,
                 log: Log | None = None, on_change: Callable[[int], None] | None = None,
                 current_cpu: Callable[[], int] | None = None, name: str = "gicv2"):
        if not 1 <= num_cpus <= GICV2_MAX_CPUS:
            raise ValueError(f"GICv2 supports 1 to {GICV2_MAX_CPUS} CPUs, not {num_cpus}")
        if num_irqs % 32 or not 32 < num_irqs <= 1020 + 4:
            raise ValueError(f"num_irqs {num_irqs} must be a multiple of 32 in 64..1024")
        super().__init__(num_cpus, tracer=tracer, on_change=on_change)
        self.name = name
        self.num_irqs = min(num_irqs, 1020)
        self.log = log
        self.bad = BadAccess(name, "gic_bad_access", tracer, log)
        self.arrays = IrqArrays(GICV2_DIST_ARRAYS)
        typer = (num_irqs // 32 - 1) | ((num_cpus - 1) << 5)
        self.dist_regs = RegisterFile(self, _dist_regs(typer),
                                      on_bad_access=lambda k, o, s, v: self.bad(None, "gicd", k, o, s, v))
        self.private = [[Irq(i, cpu, edge=i < 16, targets=(cpu,)) for i in range(32)] for cpu in range(num_cpus)]
        self.spis = [Irq(i, targets=(0,) if num_cpus == 1 else ()) for i in range(32, self.num_irqs)]
        for cpu in range(num_cpus):
            for sgi in self.private[cpu][:16]:
                sgi.enabled = True       # SGIs are permanently enabled (IMPLEMENTATION DEFINED; as QEMU)
        self.cpus = [GicV2CpuInterface(self, c) for c in range(num_cpus)]
        current = current_cpu or (lambda: 0)
        self.distributor = CurrentCpuView(self.dist_read, self.dist_write, current)
        self.cpu_interface = CurrentCpuView(lambda c, o, s: self.cpus[c].read(o, s),
                                            lambda c, o, v, s: self.cpus[c].write(o, v, s), current)

    # -- views ---------------------------------------------------------------------------------------------
    def distributor_for(self, cpu: int) -> CpuView:
        return CpuView(self.dist_read, self.dist_write, cpu)

    def cpu_interface_for(self, cpu: int) -> GicV2CpuInterface:
        return self.cpus[cpu]

    # -- engine hooks ----------------------------------------------------------------------------------------
    def group_enabled(self, cpu: int, group: int) -> bool:
        bit = 1 << group
        return bool(self.dist_regs["GICD_CTLR"] & bit and self.cpus[cpu].ctlr & bit)

    def signal(self, cpu: int, best: Irq | None) -> tuple[bool, bool]:
        ci = self.cpus[cpu]
        if not ci.can_preempt(best):
            return False, False
        assert best is not None
        fiq = best.group == 0 and bool(ci.ctlr & CTLR_FIQEN)
        return not fiq, fiq

    def irq(self, cpu: int, intid: int) -> Irq | None:
        """The interrupt `intid` as `cpu` sees it (its banked copy for SGIs/PPIs), None if it does not exist."""
        if intid < 32:
            return self.private[cpu][intid]
        if intid < self.num_irqs:
            return self.spis[intid - 32]
        return None

    def all_irqs(self):
        for bank in self.private:
            yield from bank
        yield from self.spis

    def refresh_cpu(self, cpu: int) -> None:
        self.refresh_all(self.private[cpu])
        self.refresh_all(s for s in self.spis if cpu in s.targets)

    # -- distributor MMIO -------------------------------------------------------------------------------------
    def dist_read(self, cpu: int, offset: int, size: int) -> int:
        value = self.arrays.read(offset, size, lambda i, attr: self._field_get(cpu, i, attr), self.num_irqs,
                                 lambda kind: self.bad(cpu, "gicd", kind, offset, size))
        if value is None:
            value = self.dist_regs.read(offset, size)
        if "gic_dist_read" in self.tracer.enabled:
            self.tracer.emit("gic_dist_read", cpu=cpu, offset=offset, value=value, size=size)
        return value

    def dist_write(self, cpu: int, offset: int, value: int, size: int) -> None:
        if "gic_dist_write" in self.tracer.enabled:
            self.tracer.emit("gic_dist_write", cpu=cpu, offset=offset, value=value, size=size)
        in_array = self.arrays.write(offset, value, size, lambda i, attr: self._field_get(cpu, i, attr),
                                     lambda i, attr, v: self._field_set(cpu, i, attr, v), self.num_irqs,
                                     lambda kind: self.bad(cpu, "gicd", kind, offset, size, value))
        if in_array:
            pass
        elif offset == GICD_SGIR and size == 4:
            self._sgir(cpu, value)          # needs the writing CPU: not a register-file hook
        else:
            self.dist_regs.write(offset, value, size)
        self.settle()

    def _on_gicd_ctlr_write(self, old: int, new: int) -> None:
        if old != new:
            self.refresh_all(self.all_irqs())

    def _field_get(self, cpu: int, intid: int, attr: str) -> int:
        irq = self.irq(cpu, intid)
        if irq is None:
            return 0
        if attr == "targets":             # RAZ/WI on a uniprocessor GIC (IHI 0048B 4.3.12)
            if self.ncpus == 1:
                return 0
            return 1 << cpu if intid < 32 else sum(1 << c for c in irq.targets)
        if attr in ("sources_set", "sources_clear"):
            return irq.sources
        return field_get(irq, attr)

    def _field_set(self, cpu: int, intid: int, attr: str, value: int) -> None:
        irq = self.irq(cpu, intid)
        if irq is None:
            return
        if attr == "targets":
            if intid < 32 or self.ncpus == 1:
                return
            irq.targets = tuple(c for c in range(self.ncpus) if value >> c & 1)
        elif attr in ("sources_set", "sources_clear"):
            irq.sources = irq.sources | value & ((1 << self.ncpus) - 1) if attr == "sources_set" \
                else irq.sources & ~value
            irq.latch = irq.sources != 0
        elif intid < 16 and attr in ("enabled", "pending", "cfg"):
            return        # SGIs: always enabled, edge, made pending only by GICD_SGIR / SPENDSGIR
        else:
            field_set(irq, attr, value)
        self.refresh(irq)

    def _sgir(self, cpu: int, value: int) -> None:
        """GICD_SGIR (IHI 0048B 4.3.15): TargetListFilter 0 = list, 1 = all but self, 2 = self, 3 reserved."""
        intid = value & 0xF
        flt = (value >> 24) & 3
        every = (1 << self.ncpus) - 1
        if flt == 0:
            targets = (value >> 16) & 0xFF & every
        elif flt == 1:
            targets = every & ~(1 << cpu)
        elif flt == 2:
            targets = 1 << cpu
        else:
            self.bad(cpu, "gicd", "sgir_filter", GICD_SGIR, 4, value)
            return
        for t in range(self.ncpus):
            if targets >> t & 1:
                sgi = self.private[t][intid]
                sgi.sources |= 1 << cpu
                sgi.latch = True
                self.refresh(sgi)
        if "gic_sgi" in self.tracer.enabled:
            self.tracer.emit("gic_sgi", src=cpu, irq=intid, targets=targets)

    def trace_line(self, intid: int, level: bool, cpu: int | None) -> None:
        if "gic_set_irq" in self.tracer.enabled:
            self.tracer.emit("gic_set_irq", irq=intid, level=int(level), cpu=cpu)

    # -- whole-device -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Return every register and interrupt to its reset state (input levels are kept)."""
        self.dist_regs.reset()
        for ci in self.cpus:
            ci.reset()
        for irq in self.all_irqs():
            irq.latch = irq.active = False
            irq.sources = irq.group = irq.prio = 0
            if irq.intid >= 16:
                irq.enabled = False
                irq.edge = False
            if irq.intid >= 32:
                irq.targets = (0,) if self.ncpus == 1 else ()
            self.refresh(irq)
        for c in range(self.ncpus):
            self.touch(c)
        self.settle()

    def state(self) -> dict[str, Any]:
        """A snapshot for tests and traces: distributor control, per-CPU interface state and interrupts."""
        def listing(irqs, pred):
            return [i.intid for i in irqs if pred(i)]
        cpus = []
        for c in range(self.ncpus):
            mine = list(self.private[c]) + [s for s in self.spis if c in s.targets]
            best = self.hppi(c)
            cpus.append({**self.cpus[c].state(), "irq": self.irq_out[c], "fiq": self.fiq_out[c],
                         "hppi": None if best is None else best.intid,
                         "pending": listing(mine, lambda i: i.pending),
                         "active": listing(mine, lambda i: i.active),
                         "enabled": listing(mine, lambda i: i.enabled)})
        return {"ctlr": self.dist_regs["GICD_CTLR"], "cpus": cpus, "bad_accesses": dict(self.bad.counts)}
