"""One circular queue class for the command queue and the event queue (IHI 0070 3.5).

A queue lives in memory at `*_BASE.ADDR` with 2^LOG2SIZE entries (LOG2SIZE capped by IDR1.CMDQS/EVENTQS;
the base aligned down to the queue size, or 32 bytes). PROD and CONS are index + wrap bit: the queue is empty
when both are equal, full when the indices are equal and the wrap bits differ. Pointer bits above the wrap bit
are ignored (treated as zero), so any register value gives a well-defined queue state.

The queue reads its base and pointers from the register file each time (software may rewrite them while the
queue is disabled) and writes back only the pointer the SMMU owns (CONS for the CMDQ, PROD for the EVTQ).

Not modelled: the PRI queue (same class would serve it), ECMDQ.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..regs import RegisterFile

__all__ = ["Queue", "QueueState"]


@dataclass(frozen=True, slots=True)
class QueueState:
    base: int
    log2size: int
    prod: int          # index | wrap << log2size
    cons: int

    @property
    def entries(self) -> int:
        return 1 << self.log2size

    def idx(self, p: int) -> int:
        return p & (self.entries - 1)

    def wrap(self, p: int) -> int:
        return (p >> self.log2size) & 1

    @property
    def empty(self) -> bool:
        return self.prod == self.cons

    @property
    def full(self) -> bool:
        return self.idx(self.prod) == self.idx(self.cons) and self.wrap(self.prod) != self.wrap(self.cons)

    def next(self, p: int) -> int:
        return (p + 1) & ((self.entries << 1) - 1)


class Queue:
    """A queue described by register names: `Queue(regs, "CMDQ", entry_size=16, max_log2=19, owner="CONS")`."""

    def __init__(self, regs: RegisterFile, name: str, entry_size: int, max_log2: int, owner: str):
        if owner not in ("PROD", "CONS"):
            raise ValueError(f"{name}: owner must be PROD or CONS, not {owner!r}")
        self.regs = regs
        self.name = name
        self.entry_size = entry_size
        self.max_log2 = max_log2
        self.owner = owner
        self._base, self._prod, self._cons = f"{name}_BASE", f"{name}_PROD", f"{name}_CONS"
        self._pfield = "WR"
        self._cfield = "RD"

    def state(self) -> QueueState:
        r = self.regs
        log2 = min(r.get_field(self._base, "LOG2SIZE"), self.max_log2)
        size = max((1 << log2) * self.entry_size, 32)
        base = r.get_field(self._base, "ADDR") & ~(size - 1)
        mask = (2 << log2) - 1
        return QueueState(base, log2, r.get_field(self._prod, self._pfield) & mask,
                          r.get_field(self._cons, self._cfield) & mask)

    def slot(self, st: QueueState, p: int) -> int:
        return st.base + st.idx(p) * self.entry_size

    def set_prod(self, p: int) -> None:
        self.regs.set_field(self._prod, self._pfield, p)

    def set_cons(self, p: int) -> None:
        self.regs.set_field(self._cons, self._cfield, p)
