"""GICv3 redistributor of one PE (IHI 0069 12.10-12.11): the RD_base frame (control, LPI tables) and the
SGI_base frame (SGI/PPI registers) at +0x10000, 0x20000 bytes per PE (no VLPI frames: GICv3, not GICv4).

RD_base: GICR_CTLR (EnableLPIs; CES=1 so it can be cleared; RWP/UWP read 0: every write takes effect at
once), GICR_IIDR 0x43B, GICR_TYPER (PLPIS, Last, Processor_Number, CommonLPIAff=1, affinity in [63:32]),
GICR_STATUSR 0, GICR_WAKER (ProcessorSleep resets to 1; ChildrenAsleep follows it), GICR_PROPBASER /
GICR_PENDBASER (RES0 bits masked, PTZ write-only and reading 0; a write while EnableLPIs=1, UNPREDICTABLE,
takes effect at once as in QEMU), ID registers (PIDR0 0x93, PIDR2 0x3B). GICR_TYPER.DirectLPI=0:
GICR_SETLPIR/CLRLPIR/INVLPIR/INVALLR/SYNCR are not implemented (RAZ/WI, counted).

SGI_base: IGROUPR0, IS/ICENABLER0, IS/ICPENDR0, IS/ICACTIVER0, IPRIORITYR0-7 (byte accessible, 8 bits as QEMU),
ICFGR0 (SGIs edge, read-only), ICFGR1 (PPIs, trigger mode writable as QEMU), IGRPMODR0 and NSACR RAZ/WI
(GICD_CTLR.DS=1).

LPIs: while GICR_CTLR.EnableLPIs=1 the redistributor accepts LPIs (`set_lpi`). Pending state is kept in
memory (the pending table, written through on every change) and mirrored in `lpis` for the engine; the
configuration byte is read from the property table when an LPI becomes pending and again on INV/INVALL
(configuration caching is architecturally allowed; a changed byte of an LPI that is already pending takes
effect after an invalidation). Setting EnableLPIs reads the pending table whatever PTZ said (as QEMU: a table
that is not zero despite PTZ=1 is UNPREDICTABLE, so both are allowed); clearing it forgets the mirror (the
table keeps the state). An LPI that arrives while EnableLPIs=0 or
outside the tables' INTID range is dropped and counted. Table accesses go through the GIC's `dma` bus; a bus
error disables that LPI (property) or is counted (pending write), never raised.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ..bus import BusError
from ..regs import Access, Reg, RegField, RegisterFile
from .lpi import LPI_BASE, PENDBASER_FIELDS, PROPBASER_FIELDS, lpi_limit, pending_in, prop_entry
from .mmio import id_regs
from .regmap import IrqArrays, common_arrays
from .state import Irq, field_get, field_set

if TYPE_CHECKING:
    from .gicv3 import GicV3

__all__ = ["Redistributor", "GICR_FRAME", "GICR_SGI_OFFSET", "GICR_SGI_ARRAYS"]

GICR_FRAME = 0x20000
GICR_SGI_OFFSET = 0x10000
RO, RW = Access.RO, Access.RW

#: IHI 0069 table 12-30 (SGI_base frame), offsets relative to SGI_base
GICR_SGI_ARRAYS = common_arrays("GICR_", count=32)

_SGI_REGS = (Reg("GICR_IGRPMODR0", 0xD00, access=RO, doc="RAZ/WI with GICD_CTLR.DS=1"),
             Reg("GICR_NSACR", 0xE00, access=RO, doc="RAZ/WI with GICD_CTLR.DS=1"))

CTLR_ENABLE_LPIS = 1
WAKER_PROCESSOR_SLEEP, WAKER_CHILDREN_ASLEEP = 2, 4


def _rd_regs(typer: int, lpis: bool) -> tuple[Reg, ...]:
    return (
        Reg("GICR_CTLR", 0x0000, reset=0x2, fields=(
            RegField("EnableLPIs", 0, 1, access=RW if lpis else RO), RegField("CES", 1, 1, access=RO),
            RegField("RWP", 3, 1, access=RO), RegField("UWP", 31, 1, access=RO))),
        Reg("GICR_IIDR", 0x0004, reset=0x43B, access=RO),
        Reg("GICR_TYPER", 0x0008, size=8, reset=typer, access=RO),
        Reg("GICR_STATUSR", 0x0010, access=RO),
        Reg("GICR_WAKER", 0x0014, reset=WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP, fields=(
            RegField("ProcessorSleep", 1, 1), RegField("ChildrenAsleep", 2, 1, access=RO))),
        Reg("GICR_PROPBASER", 0x0070, size=8, fields=PROPBASER_FIELDS),
        Reg("GICR_PENDBASER", 0x0078, size=8, fields=PENDBASER_FIELDS),
        *id_regs(0xFFD0, (0x93, 0xB4, 0x3B, 0x00, 0x44), "GICR_"),
    )


class Redistributor:
    """Redistributor of PE `cpu`: `read`/`write` take offsets inside its 0x20000 frame."""

    def __init__(self, gic: "GicV3", cpu: int):
        self.gic = gic
        self.cpu = cpu
        aff = gic.affinity(cpu)
        last = cpu == gic.ncpus - 1
        typer = (aff << 32) | (1 << 24) | (cpu << 8) | (int(last) << 4) | int(gic.lpis)
        self.rd_regs = RegisterFile(self, _rd_regs(typer, gic.lpis), on_bad_access=self._bad_rd)
        self.sgi_regs = RegisterFile(self, _SGI_REGS, on_bad_access=self._bad_sgi)
        self.arrays = IrqArrays(GICR_SGI_ARRAYS)
        self.private = [Irq(i, cpu, edge=i < 16, targets=(cpu,)) for i in range(32)]
        self.lpis: dict[int, Irq] = {}      # pending LPIs (mirror of the pending table)
        self.lpi_stats: Counter[str] = Counter()

    # -- MMIO --------------------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset < GICR_SGI_OFFSET:
            return self.rd_regs.read(offset, size)
        rel = offset - GICR_SGI_OFFSET
        value = self.arrays.read(rel, size, self._get, 32, lambda kind: self._bad_sgi(kind, rel, size, None))
        return self.sgi_regs.read(rel, size) if value is None else value

    def write(self, offset: int, value: int, size: int) -> None:
        if offset < GICR_SGI_OFFSET:
            self.rd_regs.write(offset, value, size)
            return
        rel = offset - GICR_SGI_OFFSET
        if not self.arrays.write(rel, value, size, self._get, self._set, 32,
                                 lambda kind: self._bad_sgi(kind, rel, size, value)):
            self.sgi_regs.write(rel, value, size)

    def _bad_rd(self, kind: str, offset: int, size: int, value: int | None) -> None:
        self.gic.bad(self.cpu, "gicr", kind, offset, size, value)

    def _bad_sgi(self, kind: str, offset: int, size: int, value: int | None) -> None:
        self.gic.bad(self.cpu, "gicr_sgi", kind, offset, size, value)

    def _get(self, intid: int, attr: str) -> int:
        return field_get(self.private[intid], attr)

    def _set(self, intid: int, attr: str, value: int) -> None:
        if intid < 16 and attr == "cfg":
            return                                  # SGIs are always edge-triggered
        irq = self.private[intid]
        field_set(irq, attr, value)
        self.gic.refresh(irq)

    # -- register hooks ----------------------------------------------------------------------------------------
    def _on_gicr_ctlr_write(self, old: int, new: int) -> None:
        if (old ^ new) & CTLR_ENABLE_LPIS:
            if new & CTLR_ENABLE_LPIS:
                self._enable_lpis()
            else:
                self._disable_lpis()

    def _on_gicr_waker_write(self, old: int, new: int) -> None:
        sleep = bool(new & WAKER_PROCESSOR_SLEEP)
        self.rd_regs.set_field("GICR_WAKER", "ChildrenAsleep", int(sleep))

    # -- LPIs --------------------------------------------------------------------------------------------------
    @property
    def enabled_lpis(self) -> bool:
        return bool(self.rd_regs["GICR_CTLR"] & CTLR_ENABLE_LPIS)

    @property
    def _prop_base(self) -> int:
        return self.rd_regs.get_field("GICR_PROPBASER", "PA")

    @property
    def _pend_base(self) -> int:
        return self.rd_regs.get_field("GICR_PENDBASER", "PA")

    @property
    def lpi_end(self) -> int:
        """One past the largest LPI INTID in range (LPI_BASE: none, e.g. while EnableLPIs=0)."""
        if not self.enabled_lpis:
            return LPI_BASE
        return lpi_limit(self.rd_regs["GICR_PROPBASER"] & 0x1F, self.gic.idbits)

    def _enable_lpis(self) -> None:
        end = self.lpi_end
        if end <= LPI_BASE:
            return
        try:
            table = self.gic.dma_read_bytes(self._pend_base + LPI_BASE // 8, (end - LPI_BASE) // 8)
        except BusError:
            self.lpi_stats["pending_table_read_error"] += 1
            return
        for intid in pending_in(table):
            self._set_pending(intid, write_back=False)

    def _disable_lpis(self) -> None:
        for lpi in self.lpis.values():
            lpi.latch = False                  # the pending table keeps the state
            self.gic.refresh(lpi)
        self.lpis.clear()

    def _load_config(self, lpi: Irq) -> None:
        try:
            byte = self.gic.dma_read(self._prop_base + lpi.intid - LPI_BASE, 1)
        except BusError:
            self.lpi_stats["property_read_error"] += 1
            byte = 0
        lpi.prio, lpi.enabled = prop_entry(byte)

    def _write_pending(self, intid: int, pending: bool) -> None:
        addr = self._pend_base + intid // 8
        try:
            byte = self.gic.dma_read(addr, 1)
            bit = 1 << (intid % 8)
            self.gic.dma_write(addr, byte | bit if pending else byte & ~bit, 1)
        except BusError:
            self.lpi_stats["pending_table_write_error"] += 1

    def _set_pending(self, intid: int, write_back: bool = True) -> None:
        lpi = self.lpis.get(intid)
        if lpi is None:
            lpi = self.lpis[intid] = Irq(intid, self.cpu, edge=True, targets=(self.cpu,))
            lpi.group = 1                           # LPIs are always Non-secure Group 1
        self._load_config(lpi)
        lpi.latch = True
        if write_back:
            self._write_pending(intid, True)
        self.gic.refresh(lpi)

    def set_lpi(self, intid: int, pending: bool) -> bool:
        """Make LPI `intid` pending (or not). False when the redistributor cannot accept it."""
        if not self.enabled_lpis or not LPI_BASE <= intid < self.lpi_end:
            self.lpi_stats["dropped"] += 1
            return False
        if "gicv3_redist_set_lpi" in self.gic.tracer.enabled:
            self.gic.tracer.emit("gicv3_redist_set_lpi", cpu=self.cpu, irq=intid, level=int(pending))
        if pending:
            self._set_pending(intid)
        else:
            self.clear_lpi(intid)
        return True

    def clear_lpi(self, intid: int) -> None:
        """Remove the pending state of LPI `intid` (acknowledge, CLEAR, DISCARD, MOVI's source side)."""
        lpi = self.lpis.pop(intid, None)
        if lpi is not None:
            lpi.latch = False
            self.gic.refresh(lpi)
        if self.enabled_lpis and LPI_BASE <= intid < self.lpi_end:
            self._write_pending(intid, False)

    def lpi_pending(self, intid: int) -> bool:
        return intid in self.lpis

    def invalidate(self, intid: int | None = None) -> None:
        """INV (one LPI) / INVALL (intid None): re-read cached configuration from the property table."""
        if intid is None:
            which = list(self.lpis.values())
        else:
            which = [self.lpis[intid]] if intid in self.lpis else []
        for lpi in which:
            self._load_config(lpi)
            self.gic.refresh(lpi)

    # -- whole device ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._disable_lpis()
        self.rd_regs.reset()
        self.sgi_regs.reset()
        for irq in self.private:
            irq.enabled = irq.latch = irq.active = False
            irq.group = irq.prio = 0
            irq.edge = irq.intid < 16
            self.gic.refresh(irq)

    def state(self) -> dict[str, Any]:
        return {"ctlr": self.rd_regs["GICR_CTLR"], "waker": self.rd_regs["GICR_WAKER"],
                "propbaser": self.rd_regs["GICR_PROPBASER"], "pendbaser": self.rd_regs["GICR_PENDBASER"],
                "lpis_pending": sorted(self.lpis), "lpi_stats": dict(self.lpi_stats)}
