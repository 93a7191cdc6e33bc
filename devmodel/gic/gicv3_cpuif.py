"""GICv3 CPU interface: the ICC_*_EL1 system registers of one PE (IHI 0069 chapter 12.2), single Security
state (GICD_CTLR.DS=1, no EL3) as QEMU's `-M virt,gic-version=3` without `secure=on`.

`ICC_SYSREGS` maps each register's (op0, op1, CRn, CRm, op2) encoding to a `SysReg` (name, readable,
writable), so the harness glue can register one MRS/MSR handler per entry and call
`GicV3CpuInterface.read_sysreg(name)` / `write_sysreg(name, value)`. An MRS of a write-only register or an MSR
of a read-only one is UNDEFINED in the architecture: the glue raises that itself (the table says which);
if such an access reaches the model anyway it reads 0 / is ignored and is counted.

Implementation choices, as QEMU 7.2 with `-cpu max` (verified on it by tests/devmodel/gic):
* 5 priority bits (ICC_CTLR_EL1.PRIbits=4, ICC_PMR_EL1 keeps bits [7:3]), 5 preemption bits: 32 preemption
  levels in ICC_AP0R0_EL1 / ICC_AP1R0_EL1 (AP0R1-3 / AP1R1-3 are not implemented and not in the table).
  Minimum ICC_BPR0_EL1 2, minimum ICC_BPR1_EL1 3; both reset to their minimum.
* ICC_CTLR_EL1: CBPR and EOImode writable; IDbits=1 (24-bit INTIDs), A3V=1, PMHE/SEIS/RSS 0.
* ICC_SRE_EL1 reads 0x7 (SRE, DFB, DIB RAO/WI): the memory-mapped GICC interface does not exist.
* Group 0 is signalled as FIQ, Group 1 as IRQ (IHI 0069 4.6.2 with no EL3). The highest-priority pending
  interrupt is chosen among interrupts whose group is enabled both in GICD_CTLR and in ICC_IGRPEN<n>_EL1 (the
  CPU interface's group enables are known to the redistributor, IHI 0069 4.7.2).
* ICC_HPPIR<n>_EL1 returns the highest-priority pending interrupt of its group without the PMR/running
  priority check; ICC_IAR<n>_EL1 acknowledges it only if it can preempt (priority < PMR and group priority <
  running priority), else returns 1023.
* ICC_EOIR<n>_EL1 drops the highest active priority if it belongs to that group (otherwise UNPREDICTABLE:
  ignored, counted); with EOImode=0 it also deactivates the INTID. ICC_DIR_EL1 deactivates only when
  EOImode=1. LPIs have no active state: acknowledging one clears its pending state.
* SGIs: ICC_SGI0R_EL1 generates Group 0, ICC_SGI1R_EL1 Group 1 and ICC_ASGI1R_EL1 "Secure Group 1" SGIs; a
  target accepts an SGI whose configured group matches (with DS=1 a Secure Group 1 request is accepted by a
  Group 0 SGI, as QEMU's `gicv3_redist_send_sgi`). IRM=1 targets every PE but the sender; otherwise the PEs
  whose Aff3.Aff2.Aff1 match and whose Aff0 is a bit of TargetList (RSS=0: RS is RES0 and ignored).

Not modelled: EL2/EL3 registers (ICH_*, ICC_*_EL3, ICC_SRE_EL2 is read-only 0xF), virtual interrupts, NMIs
(ICC_NMIAR1), PMHE, SEI.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .prio import IDLE_PRIORITY, apr_bit, apr_priority, group_prio_mask, lowest_bit, prio_mask
from .state import SPURIOUS, Irq

if TYPE_CHECKING:
    from .gicv3 import GicV3

__all__ = ["SysReg", "ICC_SYSREGS", "ICC_BY_NAME", "GicV3CpuInterface", "sysregs_for"]


@dataclass(frozen=True)
class SysReg:
    name: str
    encoding: tuple[int, int, int, int, int]     # op0, op1, CRn, CRm, op2
    readable: bool = True
    writable: bool = True


def _r(name, op1, crn, crm, op2, rw="rw"):
    return SysReg(name, (3, op1, crn, crm, op2), "r" in rw, "w" in rw)


#: IHI 0069 12.2 (encodings as Linux arch/arm64/include/asm/sysreg.h)
ICC_SYSREGS: dict[tuple[int, int, int, int, int], SysReg] = {r.encoding: r for r in (
    _r("ICC_PMR_EL1", 0, 4, 6, 0),
    _r("ICC_IAR0_EL1", 0, 12, 8, 0, "r"),
    _r("ICC_EOIR0_EL1", 0, 12, 8, 1, "w"),
    _r("ICC_HPPIR0_EL1", 0, 12, 8, 2, "r"),
    _r("ICC_BPR0_EL1", 0, 12, 8, 3),
    *(_r(f"ICC_AP0R{n}_EL1", 0, 12, 8, 4 + n) for n in range(4)),
    *(_r(f"ICC_AP1R{n}_EL1", 0, 12, 9, n) for n in range(4)),
    _r("ICC_DIR_EL1", 0, 12, 11, 1, "w"),
    _r("ICC_RPR_EL1", 0, 12, 11, 3, "r"),
    _r("ICC_SGI1R_EL1", 0, 12, 11, 5, "w"),
    _r("ICC_ASGI1R_EL1", 0, 12, 11, 6, "w"),
    _r("ICC_SGI0R_EL1", 0, 12, 11, 7, "w"),
    _r("ICC_IAR1_EL1", 0, 12, 12, 0, "r"),
    _r("ICC_EOIR1_EL1", 0, 12, 12, 1, "w"),
    _r("ICC_HPPIR1_EL1", 0, 12, 12, 2, "r"),
    _r("ICC_BPR1_EL1", 0, 12, 12, 3),
    _r("ICC_CTLR_EL1", 0, 12, 12, 4),
    _r("ICC_SRE_EL1", 0, 12, 12, 5),
    _r("ICC_IGRPEN0_EL1", 0, 12, 12, 6),
    _r("ICC_IGRPEN1_EL1", 0, 12, 12, 7),
    _r("ICC_SRE_EL2", 4, 12, 9, 5),
)}
ICC_BY_NAME = {r.name: r for r in ICC_SYSREGS.values()}

#: the group a register acts on, and the (group, n) of ICC_AP<g>R<n>_EL1
_GROUP_OF = {f"ICC_{kind}{g}_EL1": g for kind in ("IAR", "EOIR", "HPPIR", "IGRPEN") for g in (0, 1)}
_APR_OF = {f"ICC_AP{g}R{n}_EL1": (g, n) for g in (0, 1) for n in range(4)}

CTLR_CBPR, CTLR_EOIMODE = 1, 2
_CTLR_A3V = 1 << 15
SRE_EL1 = 0x7        # SRE | DFB | DIB
SRE_EL2 = 0xF        # SRE | DFB | DIB | Enable


def sysregs_for(pribits: int) -> dict[tuple[int, int, int, int, int], SysReg]:
    """The ICC registers a CPU interface with `pribits` priority bits implements (AP<g>R<n> for n below
    2^prebits / 32)."""
    naprs = _num_aprs(_prebits(pribits))
    return {enc: r for enc, r in ICC_SYSREGS.items() if _APR_OF.get(r.name, (0, 0))[1] < naprs}


def _prebits(pribits: int) -> int:
    return 7 if pribits == 8 else pribits


def _num_aprs(prebits: int) -> int:
    return max(1, (1 << prebits) // 32)


class GicV3CpuInterface:
    """ICC_* state of one PE; `read_sysreg(name)` / `write_sysreg(name, value)` are what the glue calls."""

    def __init__(self, gic: "GicV3", cpu: int, pribits: int = 5):
        if not 5 <= pribits <= 8:
            raise ValueError(f"ICC priority bits must be 5..8, not {pribits}")
        self.gic = gic
        self.cpu = cpu
        self.pribits = pribits
        self.prebits = _prebits(pribits)
        self.naprs = _num_aprs(self.prebits)
        self.pmr_mask = prio_mask(pribits)
        self.bpr0_min = 7 - self.prebits
        self.sysregs = sysregs_for(pribits)
        self.names = frozenset(r.name for r in self.sysregs.values())
        self.bad: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        self.pmr = 0
        self.bpr = [self.bpr0_min, self.bpr0_min + 1]
        self.ctlr = 0
        self.igrpen = [0, 0]
        self.apr = [0, 0]              # bit n = preemption level n active (ICC_AP0R / ICC_AP1R, all registers)

    # -- priority state ----------------------------------------------------------------------------------------
    def gprio(self, irq: Irq) -> int:
        """Group priority of `irq` (Group 1 uses ICC_BPR1_EL1 unless CBPR=1)."""
        if irq.group and not self.ctlr & CTLR_CBPR:
            return irq.prio & group_prio_mask(self.bpr[1], alias=True)
        return irq.prio & group_prio_mask(self.bpr[0])

    def running_priority(self) -> int:
        bits = self.apr[0] | self.apr[1]
        return apr_priority(lowest_bit(bits), self.prebits) if bits else IDLE_PRIORITY

    def can_preempt(self, irq: Irq | None) -> bool:
        return irq is not None and irq.prio < self.pmr and self.gprio(irq) < self.running_priority()

    def highest_active_group(self) -> int | None:
        low0, low1 = self.apr[0] & -self.apr[0], self.apr[1] & -self.apr[1]
        if not (low0 or low1):
            return None
        if low0 and (not low1 or low0 < low1):
            return 0
        return 1

    # -- system register access --------------------------------------------------------------------------------
    def read_sysreg(self, name: str) -> int:
        """MRS of ICC register `name` (a key of ICC_BY_NAME this interface implements)."""
        reg = ICC_BY_NAME[name]
        if name not in self.names or not reg.readable:
            self.bad[f"read_{name}"] += 1
            return 0
        value = self._read(name)
        gic = self.gic
        if name in ("ICC_IAR0_EL1", "ICC_IAR1_EL1"):
            ev = "gicv3_icc_iar0_read" if name == "ICC_IAR0_EL1" else "gicv3_icc_iar1_read"
            if ev in gic.tracer.enabled:
                gic.tracer.emit(ev, cpu=self.cpu, value=value)
        elif "gicv3_icc_read" in gic.tracer.enabled:
            gic.tracer.emit("gicv3_icc_read", cpu=self.cpu, reg=name, value=value)
        gic.settle()
        return value

    def write_sysreg(self, name: str, value: int) -> None:
        """MSR of ICC register `name`."""
        reg = ICC_BY_NAME[name]
        if name not in self.names or not reg.writable:
            self.bad[f"write_{name}"] += 1
            return
        value &= (1 << 64) - 1
        if name not in ("ICC_EOIR0_EL1", "ICC_EOIR1_EL1", "ICC_DIR_EL1", "ICC_SGI0R_EL1", "ICC_SGI1R_EL1",
                        "ICC_ASGI1R_EL1") and "gicv3_icc_write" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gicv3_icc_write", cpu=self.cpu, reg=name, value=value)
        self._write(name, value)
        self.gic.settle()

    def _read(self, name: str) -> int:
        if name == "ICC_IAR1_EL1":
            return self.acknowledge(1)
        if name == "ICC_IAR0_EL1":
            return self.acknowledge(0)
        if name in ("ICC_HPPIR0_EL1", "ICC_HPPIR1_EL1"):
            best = self.gic.hppi(self.cpu)
            return best.intid if best is not None and best.group == _GROUP_OF[name] else SPURIOUS
        if name == "ICC_PMR_EL1":
            return self.pmr
        if name == "ICC_BPR0_EL1":
            return self.bpr[0]
        if name == "ICC_BPR1_EL1":
            return min(self.bpr[0] + 1, 7) if self.ctlr & CTLR_CBPR else self.bpr[1]
        if name == "ICC_RPR_EL1":
            return self.running_priority()
        if name == "ICC_CTLR_EL1":
            return self.ctlr | (self.pribits - 1) << 8 | 1 << 11 | _CTLR_A3V
        if name == "ICC_SRE_EL1":
            return SRE_EL1
        if name == "ICC_SRE_EL2":
            return SRE_EL2
        if name in ("ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1"):
            return self.igrpen[_GROUP_OF[name]]
        group, n = _APR_OF[name]
        return (self.apr[group] >> (32 * n)) & 0xFFFF_FFFF

    def _write(self, name: str, value: int) -> None:
        gic, cpu = self.gic, self.cpu
        if name in ("ICC_EOIR0_EL1", "ICC_EOIR1_EL1"):
            self.end_of_interrupt(_GROUP_OF[name], value & 0xFF_FFFF)
        elif name == "ICC_DIR_EL1":
            self.deactivate(value & 0xFF_FFFF)
        elif name in ("ICC_SGI0R_EL1", "ICC_SGI1R_EL1", "ICC_ASGI1R_EL1"):
            gic.generate_sgi(cpu, value, {"ICC_SGI0R_EL1": "g0", "ICC_SGI1R_EL1": "g1ns",
                                          "ICC_ASGI1R_EL1": "g1s"}[name])
        elif name == "ICC_PMR_EL1":
            self.pmr = value & self.pmr_mask
            gic.touch(cpu)
        elif name == "ICC_BPR0_EL1":
            self.bpr[0] = max(value & 7, self.bpr0_min)
            gic.touch(cpu)
        elif name == "ICC_BPR1_EL1":
            if not self.ctlr & CTLR_CBPR:
                self.bpr[1] = max(value & 7, self.bpr0_min + 1)
                gic.touch(cpu)
        elif name == "ICC_CTLR_EL1":
            self.ctlr = value & (CTLR_CBPR | CTLR_EOIMODE)
            gic.touch(cpu)
        elif name in ("ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1"):
            group = _GROUP_OF[name]
            if self.igrpen[group] != value & 1:
                self.igrpen[group] = value & 1
                gic.refresh_cpu(cpu)
            gic.touch(cpu)
        elif name in ("ICC_SRE_EL1", "ICC_SRE_EL2"):
            pass                                          # RAO/WI
        else:                                             # ICC_AP<g>R<n>_EL1
            group, n = _APR_OF[name]
            shift = 32 * n
            self.apr[group] = (self.apr[group] & ~(0xFFFF_FFFF << shift)) | ((value & 0xFFFF_FFFF) << shift)
            gic.touch(cpu)

    # -- acknowledge / EOI / deactivate ------------------------------------------------------------------------
    def acknowledge(self, group: int) -> int:
        """ICC_IAR<group>_EL1 read."""
        gic = self.gic
        best = gic.hppi(self.cpu)
        if best is None or best.group != group or not self.can_preempt(best):
            return SPURIOUS
        self.apr[group] |= 1 << apr_bit(self.gprio(best), self.prebits)
        gic.activate(best)
        gic.touch(self.cpu)
        return best.intid

    def end_of_interrupt(self, group: int, intid: int) -> None:
        """ICC_EOIR<group>_EL1 write."""
        gic = self.gic
        if "gicv3_icc_eoir_write" in gic.tracer.enabled:
            gic.tracer.emit("gicv3_icc_eoir_write", cpu=self.cpu, group=group, value=intid)
        if 1020 <= intid <= 1023 or not gic.intid_exists(intid):
            return
        if self.highest_active_group() != group:
            self.bad[f"eoi_group{group}_not_highest"] += 1       # UNPREDICTABLE: ignored
            return
        bits = self.apr[group]
        self.apr[group] = bits & (bits - 1)                       # drop the highest active priority
        gic.touch(self.cpu)
        if not self.ctlr & CTLR_EOIMODE:
            gic.deactivate(self.cpu, intid)

    def deactivate(self, intid: int) -> None:
        """ICC_DIR_EL1 write (UNPREDICTABLE with EOImode=0: ignored)."""
        if "gicv3_icc_dir_write" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gicv3_icc_dir_write", cpu=self.cpu, value=intid)
        if not self.ctlr & CTLR_EOIMODE:
            self.bad["dir_with_eoimode0"] += 1
            return
        self.gic.deactivate(self.cpu, intid)

    def state(self) -> dict[str, Any]:
        return {"pmr": self.pmr, "bpr0": self.bpr[0], "bpr1": self._read("ICC_BPR1_EL1"), "ctlr": self.ctlr,
                "igrpen0": self.igrpen[0], "igrpen1": self.igrpen[1], "ap0r": self.apr[0], "ap1r": self.apr[1],
                "rpr": self.running_priority()}
