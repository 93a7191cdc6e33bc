"""A vCPU's translation cache for the harness's own accesses by virtual address (semihosting parameter blocks
and strings, the instruction word at a PC): VA page -> IPA page, so a call does not walk the guest's stage-1
tables in Python every time.

Exactness. An entry can never be stale, whatever the guest does and whether or not anything reports its
TLBIs:

* the cache is tagged with the translation registers of the regime in force (EL1&0: SCTLR_EL1, TCR_EL1,
  TTBR0_EL1, TTBR1_EL1; EL2: SCTLR_EL2, TCR_EL2, TTBR0_EL2), which the caller reads once per call and passes
  to `use()`: any change (MMU on/off, a new ASID or table base, another granule or size) empties it;
* each entry keeps the descriptors its walk read, (address, value) for every level; a hit re-reads them and
  walks again if any differs. A walk is a function of those registers and those descriptor values alone
  (harness/vmem.py, devmodel/vmsa.py), so a hit gives exactly what a walk would give at that moment: the
  cache only saves the decoding work. (A real TLB may keep an old translation until a TLBI, Arm ARM D8.16
  "break-before-make"; answering with the current tables is one of the behaviours the architecture allows.)

Only successful walks are cached (a TLB holds no invalid entries); with the MMU off the VA is the IPA and
nothing is cached. At most `MAX_ENTRIES` pages are kept (the cache empties when full). ID_AA64MMFR0-2 are
read once per vCPU: they are fixed by the CPU model.
"""
from __future__ import annotations

from typing import Callable

from devmodel.bus import BusError

from .vmem import TranslationRegs, translate

__all__ = ["VaCache", "PAGE_SHIFT", "MAX_ENTRIES"]

PAGE_SHIFT = 12
_OFFSET = (1 << PAGE_SHIFT) - 1
_MASK64 = (1 << 64) - 1
MAX_ENTRIES = 256


class VaCache:
    """`use(el, sctlr, tcr, ttbr0, ttbr1)` once per call with the registers read; then `ipa(va)` (BusError
    when the VA does not translate). `read64(ipa)` reads a descriptor; `mmfr` = ID_AA64MMFR0..2_EL1."""

    def __init__(self, read64: Callable[[int], int], mmfr: tuple[int, int, int]):
        self.read64 = read64
        self.mmfr = mmfr
        self.key: tuple[int, int, int, int, int] | None = None
        self.regs: TranslationRegs | None = None
        self.mmu_on = False
        self.pa_limit = 1 << 48
        self.pages: dict[int, tuple[int, tuple[tuple[int, int], ...]]] = {}
        self.walks = self.hits = 0

    def use(self, el: int, sctlr: int, tcr: int, ttbr0: int, ttbr1: int) -> None:
        """The translation regime in force: `el` 1 (EL1&0, also for EL0) or 2, and its registers."""
        key = (el, sctlr, tcr, ttbr0, ttbr1)
        if key != self.key:
            self.key = key
            self.pages.clear()
            self.regs = TranslationRegs(el, sctlr, tcr, ttbr0, ttbr1, *self.mmfr)
            self.mmu_on = self.regs.mmu_on
            self.pa_limit = 1 << self.regs.pa_bits

    def invalidate(self) -> None:
        """Forget everything (the next `use` re-reads nothing: it is also correct without calling this)."""
        self.key = None
        self.pages.clear()

    def ipa(self, va: int) -> int:
        """The IPA `va` translates to now; BusError (with the walk's fault) when it does not."""
        va &= _MASK64
        if not self.mmu_on:
            if va >= self.pa_limit:
                raise BusError(va, 1, "VA above the PA range with the MMU off (address size fault)")
            return va
        page = va >> PAGE_SHIFT
        e = self.pages.get(page)
        if e is not None:
            base, descs = e
            read64 = self.read64
            for addr, value in descs:
                if read64(addr) != value:
                    break
            else:
                self.hits += 1
                return base | (va & _OFFSET)
        return self._walk(va, page)

    def _walk(self, va: int, page: int) -> int:
        read64, seen = self.read64, []

        def recording(addr: int) -> int:
            value = read64(addr)
            seen.append((addr, value))
            return value
        self.walks += 1
        w = translate(self.regs, va, recording)
        if not w.ok:
            raise BusError(va, 1, f"VA not mapped ({w.detail})")
        if len(self.pages) >= MAX_ENTRIES:
            self.pages.clear()
        self.pages[page] = (w.ipa & ~_OFFSET, tuple(seen))
        return w.ipa
