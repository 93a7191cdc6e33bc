"""A vCPU's view of memory by virtual address: its stage-1 registers decoded for the project's walker
(`devmodel/vmsa.py`), which then reads the guest's own tables.

Unicorn's `mem_read` takes physical addresses (IPAs here), so the harness walks the guest's tables itself where
it must read guest memory by VA: semihosting parameter blocks, the instruction word at a faulting PC, the
disassembly in a death line, and the fault status code (DFSC/IFSC) of an abort. These are slow paths; the CPU
itself translates in Unicorn. This module only decodes registers (DDI 0487 D17.2):

* TCR_EL1: T0SZ [5:0], EPD0 7, TG0 [15:14] (0b00 4K, 0b01 64K, 0b10 16K), T1SZ [21:16], EPD1 23, TG1 [31:30]
  (0b01 16K, 0b10 4K, 0b11 64K: not TG0's encoding), IPS [34:32], TBI0 37, TBI1 38, HA 39; two VA ranges.
* TCR_EL2 (E2H=0): T0SZ, TG0 as above, PS [18:16], TBI 20, HA 21; one VA range (TTBR0_EL2).
* TTBRn_ELx: BADDR [47:1] (ASID [63:48] and CnP [0] are not part of the address); SCTLR_ELx: M 0, WXN 19.
* ID_AA64MMFR0_EL1.PARange [3:0] caps the output size (DDI 0487 D8.1: a TCR IPS/PS above it behaves as
  PARange); ID_AA64MMFR1_EL1.HAFDBS [3:0] says whether TCR.HA is implemented; ID_AA64MMFR2_EL1.ST [31:28]
  (FEAT_TTST) sets the largest TxSZ (`vmsa.max_tsz`). Reserved TGn values read as 4K (as QEMU does).

A TxSZ outside [16, max_tsz] is clamped to the nearest bound: the Arm ARM lets an implementation either do that
or fault (AArch64.MaxTxSZ and its notes), and Unicorn's CPUs (all four models, `max` included: no FEAT_TTST, no
FEAT_LVA) clamp to [16, 39], which tests/harness/test_walk_agreement.py checks. The SMMU's walks fault instead (an
out-of-range CD.TxSZ is ILLEGAL, IHI 0070 5.4).

A successful walk carries the leaf's permissions (`perm_priv`, `perm_user`: devmodel.vmsa PERM_*, without PAN)
and descriptor, from which the exception code tells permission and alignment faults apart; the walk itself
does not check them (a mapped page is readable here; access flags are checked, as the CPU does).

Not modelled: 52-bit addresses (FEAT_LPA/LPA2/LVA), E2H (the EL2&0 regime), stage 2 (vCPUs run without stage 2:
their IPA space is the Unicorn address space), contiguous-bit hints (they do not change the translation).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from devmodel.record import Frozen, assign

if TYPE_CHECKING:
    from devmodel.vmsa import FaultKind, S1Regime
# devmodel.vmsa (the walker) is imported where a walk needs it, not here: a run whose guest keeps the MMU off
# never imports it (start-up, tests/harness/test_startup_imports.py).

__all__ = ["Walk", "TranslationRegs", "regime_of", "translate"]

_BADDR = ((1 << 48) - 1) & ~1
_PARANGE = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
_TG0 = {0: 4096, 1: 65536, 2: 16384}           # TCR_ELx.TG0; 0b11 reserved (4K)
_TG1 = {1: 16384, 2: 4096, 3: 65536}           # TCR_EL1.TG1; 0b00 reserved (4K)
_FAULT_NAMES = {"TRANSLATION": "translation", "ADDRESS_SIZE": "address size",      # by FaultKind name
                "ACCESS_FLAG": "access flag", "EXTERNAL_ABORT": "external abort on walk"}
_PERM_ALL = 7      # devmodel.vmsa PERM_R | PERM_W | PERM_X (a test checks): the MMU off permits everything


class TranslationRegs(Frozen):
    """The registers a stage-1 walk of the vCPU depends on (raw values as Unicorn gives them)."""
    __slots__ = ("el", "sctlr", "tcr", "ttbr0", "ttbr1", "mmfr0", "mmfr1", "mmfr2")
    el: int            # regime: 1 (EL1&0) or 2 (EL2)
    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int
    mmfr0: int         # ID_AA64MMFR0_EL1 (default: 48-bit PARange)
    mmfr1: int         # ID_AA64MMFR1_EL1
    mmfr2: int         # ID_AA64MMFR2_EL1

    def __init__(self, el: int, sctlr: int, tcr: int, ttbr0: int, ttbr1: int = 0, mmfr0: int = 5, mmfr1: int = 0,
                 mmfr2: int = 0) -> None:
        assign(self, "el", el)
        assign(self, "sctlr", sctlr)
        assign(self, "tcr", tcr)
        assign(self, "ttbr0", ttbr0)
        assign(self, "ttbr1", ttbr1)
        assign(self, "mmfr0", mmfr0)
        assign(self, "mmfr1", mmfr1)
        assign(self, "mmfr2", mmfr2)

    @property
    def mmu_on(self) -> bool:
        return bool(self.sctlr & 1)

    @property
    def pa_bits(self) -> int:
        return min(_PARANGE.get(self.mmfr0 & 0xF, 48), 48)


class Walk(Frozen):
    __slots__ = ("ok", "ipa", "level", "fault", "kind", "perm_priv", "perm_user", "desc")
    ok: bool
    ipa: int | None
    level: int              # level of the descriptor that ended the walk
    fault: str              # "", "translation", "address size", "access flag", "external abort on walk"
    kind: FaultKind | None
    perm_priv: int          # devmodel.vmsa PERM_* of the leaf (MMU off: everything)
    perm_user: int
    desc: int | None        # the leaf descriptor (None with the MMU off)

    def __init__(self, ok: bool, ipa: int | None = None, level: int = 0, fault: str = "",
                 kind: FaultKind | None = None, perm_priv: int = _PERM_ALL, perm_user: int = _PERM_ALL,
                 desc: int | None = None) -> None:
        assign(self, "ok", ok)
        assign(self, "ipa", ipa)
        assign(self, "level", level)
        assign(self, "fault", fault)
        assign(self, "kind", kind)
        assign(self, "perm_priv", perm_priv)
        assign(self, "perm_user", perm_user)
        assign(self, "desc", desc)

    @property
    def fsc(self) -> int:
        """DFSC/IFSC of a failed walk (ESR_ELx.ISS[5:0]): 0b0000nn address size, 0b0001nn translation,
        0b0010nn access flag, 0b0101nn synchronous external abort on a walk, nn = level."""
        from devmodel.vmsa import FaultKind
        return (int(self.kind) if self.kind is not None else int(FaultKind.TRANSLATION)) | (self.level & 3)

    @property
    def detail(self) -> str:
        """'translation fault level 1', 'synchronous external abort on the walk, level 2' (for death lines)."""
        from devmodel.vmsa import FaultKind
        if self.kind is FaultKind.EXTERNAL_ABORT:
            return f"synchronous external abort on the walk, level {self.level}"
        return f"{self.fault} fault level {self.level}"


def _clamp(tsz: int, granule: int, ttst: bool) -> int:
    from devmodel.vmsa import MIN_TSZ, max_tsz
    return min(max(tsz, MIN_TSZ), max_tsz(granule, ttst))


def regime_of(regs: TranslationRegs) -> tuple[S1Regime, bool]:
    """The stage-1 regime the registers describe, and whether it has two VA ranges (EL1&0) or one (EL2)."""
    from devmodel.vmsa import S1Regime
    tcr = regs.tcr
    ttst = bool(regs.mmfr2 >> 28 & 0xF)
    hafdbs = bool(regs.mmfr1 & 0xF)
    wxn = bool(regs.sctlr >> 19 & 1)
    if regs.el == 2:
        tg0 = _TG0.get(tcr >> 14 & 3, 4096)
        ips = min(_PARANGE.get(tcr >> 16 & 7, 48), regs.pa_bits)
        return S1Regime(ttb0=regs.ttbr0 & _BADDR, t0sz=_clamp(tcr & 0x3F, tg0, ttst), tg0=tg0, ips=ips,
                        tbi=tcr >> 20 & 1, ha=hafdbs and bool(tcr >> 21 & 1), wxn=wxn), False
    tg0 = _TG0.get(tcr >> 14 & 3, 4096)
    tg1 = _TG1.get(tcr >> 30 & 3, 4096)
    ips = min(_PARANGE.get(tcr >> 32 & 7, 48), regs.pa_bits)
    return S1Regime(ttb0=regs.ttbr0 & _BADDR, ttb1=regs.ttbr1 & _BADDR, t0sz=_clamp(tcr & 0x3F, tg0, ttst),
                    t1sz=_clamp(tcr >> 16 & 0x3F, tg1, ttst), tg0=tg0, tg1=tg1, epd0=bool(tcr >> 7 & 1),
                    epd1=bool(tcr >> 23 & 1), ips=ips, tbi=tcr >> 37 & 3, ha=hafdbs and bool(tcr >> 39 & 1),
                    wxn=wxn), True


def translate(regs: TranslationRegs, va: int, read64: Callable[[int], int]) -> Walk:
    """Translate `va` as the vCPU's stage 1 does; `read64(ipa)` reads a descriptor (BusError where there is no
    memory: a synchronous external abort on the walk). With the MMU off the VA is the IPA (an address above
    PARange is an address size fault at level 0, DDI 0487 D8.2)."""
    va &= (1 << 64) - 1
    if not regs.mmu_on:
        if va >> regs.pa_bits:
            from devmodel.vmsa import FaultKind
            return Walk(False, level=0, fault=_FAULT_NAMES["ADDRESS_SIZE"], kind=FaultKind.ADDRESS_SIZE)
        return Walk(True, va)
    from devmodel.vmsa import Leaf, walk_s1
    regime, two_ranges = regime_of(regs)
    r = walk_s1(regime, va, read64, two_ranges=two_ranges)
    if type(r) is Leaf:
        return Walk(True, r.oa, r.level, perm_priv=r.perm_priv, perm_user=r.perm_user, desc=r.desc)
    return Walk(False, level=r.level, fault=_FAULT_NAMES[r.kind.name], kind=r.kind)
