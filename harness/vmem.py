"""A vCPU's view of memory by virtual address: a VMSAv8-64 stage-1 walk of the guest's own page tables.

Unicorn's `mem_read` takes physical addresses (IPAs here), so the harness walks the guest's tables itself where
it must read guest memory by VA: semihosting parameter blocks, the instruction word at a faulting PC, the
disassembly in a death line. These are slow paths; the CPU itself translates in Unicorn.

Walk per Arm ARM D8.2 (VMSAv8-64 translation): granule from TCR_ELx.TG0/TG1 (4K, 16K, 64K), input size
64 - TnSZ, TTBR0 for addresses whose top bits are 0 and TTBR1 for 1 (EL1&0 only; TBI honoured), start level
from the input size and the granule, table/block/page descriptors, output address bits [47:granule].

Not modelled: permissions and access flags (a mapped page is readable here), 52-bit addresses (FEAT_LPA/LPA2),
E2H (the EL2&0 regime), stage 2 (vCPUs run without stage 2: their IPA space is the Unicorn address space),
contiguous-bit hints (they do not change the translation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Walk", "walk_s1", "TranslationRegs"]

_OA_MASK = (1 << 48) - 1


@dataclass(frozen=True)
class TranslationRegs:
    el: int            # regime: 1 (EL1&0) or 2 (EL2)
    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int = 0

    @property
    def mmu_on(self) -> bool:
        return bool(self.sctlr & 1)


@dataclass(frozen=True)
class Walk:
    ok: bool
    ipa: int | None = None
    level: int = 0          # level of the descriptor that ended the walk
    fault: str = ""         # "", "translation", "address size"

    @property
    def fsc(self) -> int:
        """DFSC/IFSC for a failed walk: translation fault level n = 0b0001nn; address size 0b0000nn."""
        base = 0b000100 if self.fault == "translation" else 0b000000
        return base | (self.level & 3)


def _granule_bits(tg: int, ttbr1: bool) -> int:
    if ttbr1:   # TCR.TG1: 01 16K, 10 4K, 11 64K
        return {1: 14, 2: 12, 3: 16}.get(tg, 12)
    return {0: 12, 1: 16, 2: 14}.get(tg, 12)     # TCR.TG0: 00 4K, 01 64K, 10 16K


def walk_s1(regs: TranslationRegs, va: int, read64: Callable[[int], int]) -> Walk:
    """Translate `va`; `read64(ipa)` reads a descriptor (raises on unmapped memory -> address size fault)."""
    va &= (1 << 64) - 1
    if not regs.mmu_on:
        return Walk(True, va)
    tcr = regs.tcr
    if regs.el == 2:
        upper = False
        tsz, tg, epd, tbi = tcr & 0x3F, (tcr >> 14) & 3, 0, (tcr >> 20) & 1
        ttbr = regs.ttbr0
    else:
        upper = bool(va >> 55 & 1)
        if upper:
            tsz, tg, epd, tbi = (tcr >> 16) & 0x3F, (tcr >> 30) & 3, (tcr >> 23) & 1, (tcr >> 38) & 1
            ttbr = regs.ttbr1
        else:
            tsz, tg, epd, tbi = tcr & 0x3F, (tcr >> 14) & 3, (tcr >> 7) & 1, (tcr >> 37) & 1
            ttbr = regs.ttbr0
    gbits = _granule_bits(tg, upper and regs.el == 1)
    tsz = max(tsz, 12 if gbits == 16 else 16)   # clamp like hardware does to the minimum supported size
    insize = 64 - tsz
    top = 56 if tbi else 64
    hi = (va & ((1 << top) - 1)) >> insize
    want = ((1 << (top - insize)) - 1) if upper else 0
    if epd or hi != want:
        return Walk(False, level=0, fault="translation")
    stride = gbits - 3
    level = 4 - -(-(insize - gbits) // stride)      # 4 - ceil((insize - gbits) / stride)
    table = ttbr & _OA_MASK & ~1
    while True:
        shift = gbits + stride * (3 - level)
        idx_bits = min(stride, insize - shift)
        idx = (va >> shift) & ((1 << idx_bits) - 1)
        try:
            desc = read64(table + 8 * idx)
        except Exception:
            return Walk(False, level=level, fault="address size")
        if not desc & 1:
            return Walk(False, level=level, fault="translation")
        oa = desc & _OA_MASK & ~((1 << gbits) - 1)
        if level == 3:
            if not desc & 2:
                return Walk(False, level=level, fault="translation")
            return Walk(True, oa | (va & ((1 << gbits) - 1)), level)
        if desc & 2:                                  # table descriptor
            table = oa
            level += 1
            continue
        block = (1 << shift) - 1                      # block descriptor
        return Walk(True, (desc & _OA_MASK & ~block) | (va & block), level)
