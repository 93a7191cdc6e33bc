"""Interrupt state shared by the GIC models, and the engine that turns it into per-CPU IRQ/FIQ outputs.

* `Irq` is one interrupt's architectural state (IHI 0069 4.1 "Interrupt lifecycle", IHI 0048B 1.4): enable,
  the pending latch and the input level (a level-sensitive interrupt is pending while its line is high or its
  latch is set; an edge-triggered one only through its latch), active, group, 8-bit priority, trigger mode, and
  the CPUs it is offered to. SGIs and PPIs have one `Irq` per CPU (banked); SPIs and LPIs one each.
* `IrqEngine` keeps, per CPU, the set of interrupts *eligible for signalling* (enabled, pending, not active, their
  group enabled at the distributor and at that CPU interface) and a cached highest-priority candidate (lowest
  priority value, then lowest INTID, as QEMU's `irqbetter`). Every state change calls `refresh(irq)`, which
  moves the interrupt between the CPUs' sets and marks those CPUs dirty; `settle()` recomputes the best
  candidate and the outputs of the dirty CPUs only, and calls `on_change(cpu)` for each CPU whose IRQ or FIQ
  output changed. Checking the outputs is O(1) (`irq_out[cpu]`, `fiq_out[cpu]`).

The models (GICv2, GICv3) subclass `IrqEngine` and provide `group_enabled(cpu, group)`,
`signal(cpu, best) -> (irq, fiq)` (PMR, running priority, IRQ vs FIQ routing of the group), `irq(cpu, intid)`,
`spis`, `num_irqs`, `name` and `trace_line`; the engine implements the input lines on them (`set_spi`,
`set_ppi`, `pulse_spi`, `pulse_ppi`).
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..trace import NULL_TRACER, Tracer

__all__ = ["Irq", "IrqEngine", "SPURIOUS", "NO_ACK_GROUP1", "field_get", "field_set"]

SPURIOUS = 1023          # no pending interrupt of sufficient priority (IHI 0069 2.2.1 special INTIDs)
NO_ACK_GROUP1 = 1022     # GICv2: highest pending is Group 1 and GICC_CTLR.AckCtl=0 (IHI 0048B 3.2.5)


class Irq:
    """One interrupt (one CPU's copy for SGIs and PPIs). `owner` is the CPU of a banked interrupt, else None."""

    __slots__ = ("intid", "owner", "enabled", "latch", "level", "active", "edge", "group", "prio", "targets",
                 "cands", "sources", "route")

    def __init__(self, intid: int, owner: int | None = None, *, edge: bool = False,
                 targets: tuple[int, ...] = ()):
        self.intid = intid
        self.owner = owner
        self.enabled = False
        self.latch = False       # pending latch (edge, ISPENDR, SGI generation, LPI)
        self.level = False       # input line (level-sensitive sources)
        self.active = False
        self.edge = edge
        self.group = 0
        self.prio = 0
        self.targets = targets   # CPUs the interrupt is offered to
        self.cands: frozenset[int] = frozenset()   # CPUs whose candidate set holds it
        self.sources = 0         # GICv2 SGIs: bit n = pending from CPU n
        self.route = 0           # GICv3 SPIs: GICD_IROUTER value

    @property
    def pending(self) -> bool:
        return self.latch or (self.level and not self.edge)

    def __repr__(self) -> str:
        flags = "".join(c for c, on in (("E", self.enabled), ("P", self.pending), ("A", self.active)) if on)
        return f"Irq({self.intid}{'' if self.owner is None else f'@cpu{self.owner}'} {flags} g{self.group} " \
               f"p{self.prio:#x})"


class IrqEngine:
    """Candidate sets, cached best interrupt and outputs per CPU; see the module docstring."""

    #: trace event emitted when a CPU's outputs change (fields cpu, irq, fiq); set by the subclass
    line_event = ""
    name = "gic"
    num_irqs = 32
    spis: list[Irq]

    def __init__(self, ncpus: int, *, tracer: Tracer = NULL_TRACER,
                 on_change: Callable[[int], None] | None = None):
        if ncpus < 1:
            raise ValueError(f"a GIC needs at least one CPU, got {ncpus}")
        self.ncpus = ncpus
        self.tracer = tracer
        self.on_change = on_change
        self.cands: list[set[Irq]] = [set() for _ in range(ncpus)]
        self._best: list[Irq | None] = [None] * ncpus
        self._stale: set[int] = set()     # best candidate must be recomputed
        self._dirty: set[int] = set()     # outputs must be recomputed
        self.irq_out = [False] * ncpus
        self.fiq_out = [False] * ncpus

    # -- provided by the model ---------------------------------------------------------------------------
    def group_enabled(self, cpu: int, group: int) -> bool:
        raise NotImplementedError

    def signal(self, cpu: int, best: Irq | None) -> tuple[bool, bool]:
        raise NotImplementedError

    def irq(self, cpu: int, intid: int) -> Irq | None:
        raise NotImplementedError

    # -- bookkeeping --------------------------------------------------------------------------------------
    def eligible(self, irq: Irq, cpu: int) -> bool:
        return irq.enabled and not irq.active and irq.pending and self.group_enabled(cpu, irq.group)

    def refresh(self, irq: Irq) -> None:
        """Re-evaluate where `irq` is a candidate after any change to it (or to what gates it)."""
        if irq.enabled and not irq.active and irq.pending:
            new = frozenset(c for c in irq.targets if self.group_enabled(c, irq.group))
        else:
            new = frozenset()
        old = irq.cands
        if new != old:
            for c in old - new:
                self.cands[c].discard(irq)
            for c in new - old:
                self.cands[c].add(irq)
            irq.cands = new
        touched = old | new
        self._stale |= touched
        self._dirty |= touched

    def refresh_all(self, irqs: Iterable[Irq]) -> None:
        for irq in irqs:
            self.refresh(irq)

    def touch(self, cpu: int) -> None:
        """The CPU interface changed something the outputs depend on (PMR, running priority, enables)."""
        self._dirty.add(cpu)

    def hppi(self, cpu: int) -> Irq | None:
        """Highest-priority eligible interrupt of `cpu` (cached)."""
        if cpu in self._stale:
            self._stale.discard(cpu)
            cands = self.cands[cpu]
            self._best[cpu] = min(cands, key=_rank) if cands else None
        return self._best[cpu]

    def settle(self) -> None:
        """Recompute the outputs of every dirty CPU; then tell `on_change` about those that changed."""
        if not self._dirty:
            return
        changed = []
        for cpu in sorted(self._dirty):
            irq, fiq = self.signal(cpu, self.hppi(cpu))
            if irq != self.irq_out[cpu] or fiq != self.fiq_out[cpu]:
                self.irq_out[cpu] = irq
                self.fiq_out[cpu] = fiq
                changed.append(cpu)
                if self.line_event in self.tracer.enabled:
                    self.tracer.emit(self.line_event, cpu=cpu, irq=int(irq), fiq=int(fiq))
        self._dirty.clear()
        if self.on_change is not None:
            for cpu in changed:
                self.on_change(cpu)

    # -- input lines (the models provide `spis`, `num_irqs`, `name`, `irq(cpu, intid)`, `trace_line`) -------
    def set_spi(self, intid: int, level: bool) -> None:
        """Drive the input line of SPI `intid` (32 <= intid < num_irqs)."""
        if not 32 <= intid < self.num_irqs:
            raise ValueError(f"{self.name}: SPI {intid} out of range 32..{self.num_irqs - 1}")
        self._set_line(self.spis[intid - 32], bool(level), None)

    def set_ppi(self, cpu: int, intid: int, level: bool) -> None:
        """Drive PPI `intid` (16 <= intid < 32) of `cpu`."""
        if not 16 <= intid < 32 or not 0 <= cpu < self.ncpus:
            raise ValueError(f"{self.name}: PPI {intid} of CPU {cpu} does not exist")
        self._set_line(self.irq(cpu, intid), bool(level), cpu)

    def pulse_spi(self, intid: int) -> None:
        """A rising then a falling edge (an edge-triggered source's event)."""
        self.set_spi(intid, True)
        self.set_spi(intid, False)

    def pulse_ppi(self, cpu: int, intid: int) -> None:
        self.set_ppi(cpu, intid, True)
        self.set_ppi(cpu, intid, False)

    def _set_line(self, irq: Irq, level: bool, cpu: int | None) -> None:
        if irq.level == level:
            return
        irq.level = level
        if level and irq.edge:
            irq.latch = True
        self.trace_line(irq.intid, level, cpu)
        self.refresh(irq)
        self.settle()

    def trace_line(self, intid: int, level: bool, cpu: int | None) -> None:
        """Emit the model's line-change event (cpu: the PPI's CPU, None for an SPI)."""

    # -- outputs for the glue ---------------------------------------------------------------------------
    def irq_pending(self, cpu: int) -> bool:
        """True when the CPU interface signals IRQ to `cpu` (PSTATE.I is the CPU's business)."""
        return self.irq_out[cpu]

    def fiq_pending(self, cpu: int) -> bool:
        """True when the CPU interface signals FIQ to `cpu`."""
        return self.fiq_out[cpu]


def _rank(irq: Irq) -> tuple[int, int]:
    return irq.prio, irq.intid


def field_get(irq: Irq, attr: str) -> int:
    """The value an `IrqArray` field shows for `irq` (attr: group, enabled, pending, active, prio, cfg)."""
    if attr == "pending":
        return int(irq.pending)
    if attr == "cfg":
        return 2 if irq.edge else 0      # ICFGR: bit 1 of the field = edge-triggered
    return int(getattr(irq, attr))


def field_set(irq: Irq, attr: str, value: int) -> None:
    """Apply a field write to `irq` with the plain architectural meaning (the caller refreshes the engine):
    "pending" sets or clears the latch only (a level-sensitive interrupt stays pending while its line is high),
    "cfg" changes the trigger mode."""
    if attr == "pending":
        irq.latch = bool(value)
    elif attr == "cfg":
        irq.edge = bool(value & 2)
    elif attr in ("enabled", "active"):
        setattr(irq, attr, bool(value))
    else:
        setattr(irq, attr, value)
