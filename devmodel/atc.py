"""An Address Translation Cache: a PCIe function's own cache of ATS Translation Completions (PCIe ATS; IHI 0070
3.9.1). Pure bookkeeping; the function (`dmatest.py`) asks the SMMU on a miss and invalidates on the SMMU's ATS
Invalidate Requests (CMD_ATC_INV).

An entry is one completion: the naturally aligned untranslated range [base, base + size), its translated base,
the permissions granted (R, W, X) for the privilege it was requested at, its SubstreamID (PASID; None without
one) and Global. Lookups match SubstreamID, privilege and address. Invalidation follows the PCIe rules as Linux
`arm_smmu_atc_inv_to_cmd` describes them: without a PASID it removes every entry of the range, of any PASID; with
one, that PASID's entries, and, when Global Invalidate is set, global entries of every PASID. Capacity is in
entries, replaced oldest first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AtcEntry", "Atc"]


@dataclass(slots=True)
class AtcEntry:
    ssid: int | None
    base: int          # untranslated base
    size: int
    out: int           # translated base
    r: bool
    w: bool
    x: bool
    priv: bool
    global_: bool

    def covers(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size

    def allows(self, write: bool, exec_: bool) -> bool:
        return self.w if write else (self.x if exec_ else self.r)

    def translate(self, addr: int) -> int:
        return self.out + (addr - self.base)


class Atc:
    def __init__(self, capacity: int = 32):
        if capacity < 1:
            raise ValueError(f"ATC capacity {capacity} must be >= 1")
        self.capacity = capacity
        self.entries: list[AtcEntry] = []
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ssid: int | None, addr: int, priv: bool) -> AtcEntry | None:
        for e in self.entries:
            if e.ssid == ssid and e.priv == priv and e.covers(addr):
                self.hits += 1
                return e
        self.misses += 1
        return None

    def insert(self, ssid: int | None, addr: int, comp: Any) -> AtcEntry:
        """Cache completion `comp` (an `AtsCompletion` with status SUCCESS) of a request for `addr` made with
        `ssid`; an entry of the same SubstreamID and privilege that overlaps it is replaced."""
        base = addr & ~(comp.size - 1)
        e = AtcEntry(ssid, base, comp.size, comp.addr, comp.r, comp.w, comp.x, comp.priv, comp.global_)
        self.entries = [o for o in self.entries
                        if not (o.ssid == ssid and o.priv == e.priv and o.base < e.base + e.size
                                and e.base < o.base + o.size)]
        if len(self.entries) >= self.capacity:
            self.entries.pop(0)
            self.evictions += 1
        self.entries.append(e)
        return e

    def invalidate(self, ssid: int | None, lo: int, hi: int, global_: bool = False) -> int:
        """Remove the entries an Invalidate Request for [lo, hi) of `ssid` covers; returns how many."""
        def hit(e: AtcEntry) -> bool:
            if not (e.base < hi and lo < e.base + e.size):
                return False
            return ssid is None or e.ssid == ssid or (global_ and e.global_)
        before = len(self.entries)
        self.entries = [e for e in self.entries if not hit(e)]
        return before - len(self.entries)

    def flush(self) -> int:
        n = len(self.entries)
        self.entries.clear()
        return n
