"""The Memory Tagging Extension's rules (DDI 0487 D10 "The Memory Tagging Extension", the A64 tag instructions
of C6.2 and the pseudocode they call), pure: the harness (harness/mte.py) applies them to its vCPUs.

* `TagStore`: the allocation tags, one 4-bit tag per 16-byte granule of physical (here: IPA) memory, per page
  (a granule never written holds tag 0, as QEMU's tag memory starts zeroed) and the pages that hold a tag.
* The Tag Checked rule (`AArch64.AccessIsTagChecked` and `AArch64.CheckTag`): `tag_checked(...)` with the
  effective TBI and TCMA of the VA's half (`effective_tbi`, `effective_tcma`), allocation tag access enabled
  (`tag_access_enabled`: SCTLR_ELx.ATA/ATA0, HCR_EL2.ATA), PSTATE.TCO, and the Tagged memory attribute
  (MAIR_ELx attribute 0xF0, `TAGGED_ATTR`).
* What a mismatch does (`fault_action`: SCTLR_ELx.TCF/TCF0, 01 synchronous, 10 asynchronous, 11 asymmetric
  = synchronous reads, asynchronous writes, FEAT_MTE3) and which TFSR bit an asynchronous one sets
  (`tfsr_bit`: TF0 for VA[55] = 0, TF1 for VA[55] = 1).
* The tag instructions' encodings (`decode`, C4.1.66 "Load/store memory tags", C4.1.4 "Add/subtract
  (immediate, with tags)", C4.1.95 "Data-processing (2 source)": IRG, GMI, SUBP(S); "Load/store register pair"
  with opc = 01 and L = 0: STGP; DC GVA/GZVA, the SYS #3, C7, C4, #3/#4 cache operations) and the register-only
  ones' results (`irg`, `addg`, `gmi`, `subp`), with the pseudo-random tag generator of IRG (`random_tag`: the
  RGSR_EL1.SEED LFSR, `choose_non_excluded_tag`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .fields import sext

__all__ = ["GRANULE", "TAGGED_ATTR", "TagStore", "TagInsn", "decode", "allocation_tag", "with_tag",
           "effective_tbi", "effective_tcma", "tag_access_enabled", "tcf_of", "tag_checked", "fault_action",
           "tfsr_bit", "choose_non_excluded_tag", "random_tag", "irg", "addg", "gmi", "subp", "sp_unchecked",
           "SCTLR_ATA", "SCTLR_ATA0", "SCTLR_TCF_SHIFT", "SCTLR_TCF0_SHIFT", "HCR_ATA", "HCR_E2H", "HCR_TGE",
           "PSTATE_TCO", "GMID_BS", "TFSR_TF0", "TFSR_TF1", "dc_tag_trap", "SCTLR_DZE", "HCR_TDZ"]

GRANULE = 16                    # LOG2_TAG_GRANULE = 4
TAGGED_ATTR = 0xF0              # MAIR_ELx Attr<n> = 0b11110000: Tagged Normal, Inner/Outer Write-Back RAWA
SCTLR_ATA, SCTLR_ATA0 = 1 << 43, 1 << 42
SCTLR_TCF_SHIFT, SCTLR_TCF0_SHIFT = 40, 38
HCR_ATA, HCR_E2H, HCR_TGE, HCR_TDZ = 1 << 56, 1 << 34, 1 << 27, 1 << 28
SCTLR_DZE = 1 << 14             # DC ZVA, DC GVA, DC GZVA at EL0
PSTATE_TCO = 1 << 25
TFSR_TF0, TFSR_TF1 = 1 << 0, 1 << 1
GMID_BS = 6                     # GMID_EL1.BS: LDGM/STGM move 4 << 6 = 256 bytes of tags (QEMU 7.2's value)
_MASK64 = (1 << 64) - 1
_PAGE = 0x1000


class TagStore:
    """Allocation tags per 16-byte granule of one address space: a 256-byte array per 4 KiB page that ever held
    a tag (absent pages read 0), so a guest tagging all its RAM costs 1/16 of it, not a dict entry per granule."""

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        self.generation = 0                           # bumped whenever a page gets its array

    @property
    def pages(self):
        """Page numbers (addr >> 12) where a tag was ever stored."""
        return self._pages.keys()

    def get(self, addr: int) -> int:
        page = self._pages.get(addr >> 12)
        return 0 if page is None else page[(addr >> 4) & 0xFF]

    def set(self, addr: int, tag: int) -> None:
        page = self._pages.get(addr >> 12)
        if page is None:
            page = self._pages[addr >> 12] = bytearray(_PAGE // GRANULE)
            self.generation += 1
        page[(addr >> 4) & 0xFF] = tag & 0xF

    def set_range(self, addr: int, size: int, tag: int) -> None:
        for a in range(addr & ~(GRANULE - 1), addr + size, GRANULE):
            self.set(a, tag)

    def first_mismatch(self, addr: int, size: int, tag: int) -> int | None:
        """Index of the first granule of [addr, addr + size) whose tag is not `tag`, None if all match."""
        for i, a in enumerate(range(addr & ~(GRANULE - 1), addr + max(size, 1), GRANULE)):
            if self.get(a) != tag:
                return i
        return None


# -- addresses and the check ---------------------------------------------------------------------------------
def allocation_tag(va: int) -> int:
    """The logical (address) tag: VA[59:56]."""
    return (va >> 56) & 0xF


def with_tag(va: int, tag: int) -> int:
    """AArch64.AddressWithAllocationTag: VA[59:56] = tag."""
    return (va & ~(0xF << 56) & _MASK64) | (tag & 0xF) << 56


def _el2_regime(el: int, hcr: int) -> bool:
    """The access is in the EL2&0 regime (FEAT_VHE): EL2 with HCR_EL2.E2H, EL0 with E2H and TGE."""
    both = HCR_E2H | HCR_TGE
    return bool(hcr & HCR_E2H) if el == 2 else el == 0 and hcr & both == both


def effective_tbi(va: int, el: int, tcr_el1: int, tcr_el2: int, hcr: int = 0) -> bool:
    """EffectiveTBI for a data access: TCR_EL1.TBI0/TBI1 [37]/[38] by VA[55] (EL1&0, EL2&0 with E2H), TCR_EL2.TBI
    [20] for the one-range EL2 regime."""
    upper = (va >> 55) & 1
    if el == 2 and not hcr & HCR_E2H:
        return bool(tcr_el2 >> 20 & 1)
    tcr = tcr_el2 if _el2_regime(el, hcr) else tcr_el1
    return bool(tcr >> (38 if upper else 37) & 1)


def effective_tcma(va: int, el: int, tcr_el1: int, tcr_el2: int, hcr: int = 0) -> bool:
    """EffectiveTCMA: TCR_EL1.TCMA0/TCMA1 [57]/[58] by VA[55]; TCR_EL2.TCMA [30] for the one-range EL2 regime."""
    if el == 2 and not hcr & HCR_E2H:
        return bool(tcr_el2 >> 30 & 1)
    tcr = tcr_el2 if _el2_regime(el, hcr) else tcr_el1
    return bool(tcr >> (58 if (va >> 55) & 1 else 57) & 1)


def tag_access_enabled(el: int, sctlr_el1: int, sctlr_el2: int, hcr: int, el2: bool) -> bool:
    """AArch64.AllocationTagAccessIsEnabled (no EL3 on this board: SCR_EL3.ATA is taken as 1). `el2`: EL2 is
    implemented and enabled (the guest started at EL2): HCR_EL2.ATA gates EL1 and EL0 outside the EL2&0
    regime, where SCTLR_EL2.ATA0 governs EL0."""
    host = el2 and _el2_regime(el, hcr)
    if el2 and el < 2 and not host and not hcr & HCR_ATA:
        return False
    if el == 0:
        return bool((sctlr_el2 if host else sctlr_el1) & SCTLR_ATA0)
    return bool((sctlr_el2 if el == 2 else sctlr_el1) & SCTLR_ATA)


def tcf_of(el: int, sctlr_el1: int, sctlr_el2: int, hcr: int = 0, el2: bool = False) -> int:
    """The Tag Check Fault mode at `el`: SCTLR_EL1.TCF [41:40] (EL1), TCF0 [39:38] (EL0; SCTLR_EL2's under
    E2H+TGE), SCTLR_EL2.TCF (EL2)."""
    if el == 0:
        sctlr = sctlr_el2 if el2 and _el2_regime(0, hcr) else sctlr_el1
        return (sctlr >> SCTLR_TCF0_SHIFT) & 3
    return ((sctlr_el2 if el == 2 else sctlr_el1) >> SCTLR_TCF_SHIFT) & 3


def dc_tag_trap(el: int, sctlr_el1: int, sctlr_el2: int, hcr: int, el2: bool) -> int | None:
    """The EL that DC GVA/DC GZVA trap to (EC 0x18), None when allowed. They share DC ZVA's controls (Arm ARM
    C5.3 DC GVA pseudocode; QEMU 7.2 target/arm/helper.c aa64_zva_access): at EL0 SCTLR_EL1.DZE = 0 traps to
    EL1 (SCTLR_EL2.DZE = 0 to EL2 in the EL2&0 regime); HCR_EL2.TDZ = 1 traps EL0 and EL1 to EL2 outside it."""
    if el >= 2:
        return None
    if el == 0 and el2 and _el2_regime(0, hcr):
        return None if sctlr_el2 & SCTLR_DZE else 2
    if el == 0 and not sctlr_el1 & SCTLR_DZE:
        return 1
    return 2 if el2 and hcr & HCR_TDZ else None


def tag_checked(va: int, *, tbi: bool, tcma: bool, ata: bool, tco: bool, tagged: bool,
                unchecked_insn: bool = False) -> bool:
    """AArch64.AccessIsTagChecked and the Tagged attribute CheckTag requires: an access is checked only with
    TBI, allocation tag access enabled, PSTATE.TCO = 0, not an unchecked form (`sp_unchecked`), not a TCMA
    match-all tag (VA[59:55] all 0s or all 1s with TCMA = 1), and to Tagged memory."""
    if not (tbi and ata and tagged) or tco or unchecked_insn:
        return False
    top = (va >> 55) & 0x1F
    return not (tcma and top in (0, 0x1F))


def fault_action(tcf: int, write: bool) -> str | None:
    """What a Tag Check Fault does: "sync", "async" or None (TCF = 00: no effect)."""
    if tcf == 1 or (tcf == 3 and not write):
        return "sync"
    if tcf in (2, 3):
        return "async"
    return None


def tfsr_bit(va: int) -> int:
    """The TFSR_ELx/TFSRE0_EL1 bit an asynchronous fault sets: TF0 (VA[55] = 0) or TF1."""
    return TFSR_TF1 if (va >> 55) & 1 else TFSR_TF0


def sp_unchecked(word: int) -> bool:
    """A load/store with the SP as base and an immediate offset or no offset is Unchecked (D10.4.1); literal
    loads have no base register (PC-relative: Unchecked too). Load/store encodings only (op0 = x1x0)."""
    if (word >> 25) & 0b101 != 0b100:
        return False
    if (word >> 27) & 7 == 3 and not (word >> 24) & 1:          # op0 = xx01 op2 = 0x: load register (literal)
        return True
    register_offset = (word >> 27) & 7 == 7 and not (word >> 24) & 3 and (word >> 21) & 1 \
        and (word >> 10) & 3 == 2
    return (word >> 5) & 31 == 31 and not register_offset


# -- tag generation (IRG, ADDG, SUBG) ------------------------------------------------------------------------
def choose_non_excluded_tag(tag: int, offset: int, exclude: int) -> int:
    """AArch64.ChooseNonExcludedTag: from `tag`, step `offset` non-excluded tags (offset 0: the first
    non-excluded one from `tag`); all excluded: 0."""
    exclude &= 0xFFFF
    if exclude == 0xFFFF:
        return 0
    tag &= 0xF
    if offset == 0:
        while exclude >> tag & 1:
            tag = (tag + 1) & 0xF
        return tag
    for _ in range(offset):
        tag = (tag + 1) & 0xF
        while exclude >> tag & 1:
            tag = (tag + 1) & 0xF
    return tag


def random_tag(seed: int) -> tuple[int, int]:
    """RandomTag with GCR_EL1.RRND = 0: four NextRandomTagBit steps of the RGSR_EL1.SEED LFSR (taps 5, 3, 2,
    0). Returns (tag bits, new seed)."""
    tag = 0
    for i in range(4):
        top = (seed >> 5 ^ seed >> 3 ^ seed >> 2 ^ seed) & 1
        seed = (top << 15 | seed >> 1) & 0xFFFF
        tag |= top << i
    return tag, seed


def irg(xn: int, xm: int, gcr: int, rgsr: int, ata: bool) -> tuple[int, int]:
    """IRG Xd, Xn, Xm: (Xd, new RGSR_EL1). Exclude = GCR_EL1.Exclude | Xm[15:0]; with allocation tag access
    disabled the tag is 0 and RGSR is unchanged. GCR_EL1.RRND = 1 (IMPLEMENTATION DEFINED generator) is served
    by the same LFSR: runs stay deterministic."""
    if not ata:
        return with_tag(xn, 0), rgsr
    offset, seed = random_tag((rgsr >> 8) & 0xFFFF)
    rtag = choose_non_excluded_tag(rgsr & 0xF, offset, (gcr | xm) & 0xFFFF)
    return with_tag(xn, rtag), (rgsr & ~0xFFFF0F & _MASK64) | seed << 8 | rtag


def addg(xn: int, uimm6: int, uimm4: int, sub: bool, gcr: int, ata: bool) -> int:
    """ADDG/SUBG Xd, Xn, #uimm6*16, #uimm4: the address moved, its tag stepped over GCR_EL1's exclusions (0 with
    allocation tag access disabled)."""
    rtag = choose_non_excluded_tag(allocation_tag(xn), uimm4, gcr) if ata else 0
    return with_tag((xn + (-(uimm6 << 4) if sub else uimm6 << 4)) & _MASK64, rtag)


def gmi(xn: int, xm: int) -> int:
    """GMI Xd, Xn, Xm: Xm with the bit of Xn's tag set."""
    return (xm | 1 << allocation_tag(xn)) & _MASK64


def subp(xn: int, xm: int) -> int:
    """SUBP(S): the 56-bit addresses, sign-extended from bit 55, subtracted (64-bit result)."""
    return (sext(xn, 56) - sext(xm, 56)) & _MASK64


# -- decoding ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagInsn:
    """A decoded tag instruction. `op`: irg, gmi, subp, subps, addg, subg, stg, stzg, st2g, stz2g, stgp, ldg,
    stgm, stzgm, ldgm, dcgva, dcgzva (DC GVA/GZVA: `rd` = `rn` = Xt). `rd`/`rn`/`rm`: register numbers (31 =
    SP or XZR as the form says); `imm`: the byte offset (signed, scaled) or ADDG's uimm6*16; `tag_offset`:
    ADDG's uimm4; `index`: None (offset), "pre" or "post"."""
    op: str
    rd: int
    rn: int
    rm: int = 31
    imm: int = 0
    tag_offset: int = 0
    index: str | None = None


_DP2 = {0b000100: "irg", 0b000101: "gmi", 0b000000: "subp"}
_LDST_OPS = {0: ("stzgm", "stg"), 1: ("ldg", "stzg"), 2: ("stgm", "st2g"), 3: ("ldgm", "stz2g")}
_INDEX = {1: "post", 2: None, 3: "pre"}
_STGP = {0x68800000: "post", 0x69000000: None, 0x69800000: "pre"}
_DC = {0xD50B7460: "dcgva", 0xD50B7480: "dcgzva"}


def _decode_ldst_tags(word: int) -> TagInsn | None:
    opc, imm9, op2 = (word >> 22) & 3, (word >> 12) & 0x1FF, (word >> 10) & 3
    rn, rt = (word >> 5) & 31, word & 31
    block, single = _LDST_OPS[opc]
    if op2 == 0:
        if opc == 1:                                   # LDG: signed offset, no writeback
            return TagInsn("ldg", rt, rn, imm=sext(imm9, 9) << 4)
        return TagInsn(block, rt, rn) if imm9 == 0 else None
    return TagInsn(single, rt, rn, imm=sext(imm9, 9) << 4, index=_INDEX[op2])


def decode(word: int) -> TagInsn | None:
    """The tag instruction `word` encodes (A64, FEAT_MTE/FEAT_MTE2), None for any other word."""
    rd, rn, rm = word & 31, (word >> 5) & 31, (word >> 16) & 31
    dc = _DC.get(word & ~31)                            # SYS #3, C7, C4, #3/#4, Xt
    if dc is not None:
        return TagInsn(dc, rd, rd)
    if word & 0xFF200000 == 0xD9200000:                # 11011001 opc 1 imm9 op2 Rn Rt
        return _decode_ldst_tags(word)
    if word & 0xDFE00000 == 0x9AC00000:                # sf=1 0 S 11010110 Rm opcode Rn Rd
        op = _DP2.get((word >> 10) & 0x3F)
        if op is None or (op != "subp" and word >> 29 & 1):
            return None
        return TagInsn("subps" if word >> 29 & 1 else op, rd, rn, rm)
    if word & 0xBFC0C000 == 0x91800000:                # sf=1 op S=0 100011 0 uimm6 op3=00 uimm4 Rn Rd
        return TagInsn("subg" if word >> 30 & 1 else "addg", rd, rn, imm=((word >> 16) & 0x3F) << 4,
                       tag_offset=(word >> 10) & 0xF)
    if word & 0xFFC00000 in _STGP:                     # STGP: 01 101 0 0 idx 0 simm7 Rt2 Rn Rt
        return TagInsn("stgp", word & 31, rn, rm=(word >> 10) & 31, imm=sext((word >> 15) & 0x7F, 7) << 4,
                       index=_STGP[word & 0xFFC00000])
    return None
