"""devmodel.mte: the tag instructions' decoding against an independent decoder (capstone 5) and words GNU as
assembled, the tag generator against the values QEMU 7.2 gave guest_fw/tests/mte_insns.c, and the Tag Checked
rule, fault modes and enables of DDI 0487 D10 case by case."""
from __future__ import annotations

import capstone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel import mte
from devmodel.mte import (HCR_ATA, HCR_E2H, HCR_TGE, SCTLR_ATA, SCTLR_ATA0, TagInsn, TagStore, addg,
                          choose_non_excluded_tag, decode, effective_tbi, effective_tcma, fault_action, gmi, irg,
                          sp_unchecked, subp, tag_access_enabled, tag_checked, tcf_of, tfsr_bit, with_tag)

_MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
_MTE = {"irg", "gmi", "subp", "subps", "cmpp", "addg", "subg", "stg", "stzg", "st2g", "stz2g", "stgp", "ldg",
        "stgm", "stzgm", "ldgm"}

# aarch64-linux-gnu-as -march=armv8.5-a+memtag, checked with its objdump
WORDS = [
    (0x9AC31041, "irg x1, x2, x3", TagInsn("irg", 1, 2, 3)),
    (0x9ADF13FF, "irg sp, sp", TagInsn("irg", 31, 31, 31)),
    (0x9AC614A4, "gmi x4, x5, x6", TagInsn("gmi", 4, 5, 6)),
    (0x9AC90107, "subp x7, x8, x9", TagInsn("subp", 7, 8, 9)),
    (0xBACC016A, "subps x10, x11, x12", TagInsn("subps", 10, 11, 12)),
    (0xBAC2003F, "cmpp x1, x2", TagInsn("subps", 31, 1, 2)),
    (0x91BF3C41, "addg x1, x2, #1008, #15", TagInsn("addg", 1, 2, imm=1008, tag_offset=15)),
    (0xD18107FF, "subg sp, sp, #16, #1", TagInsn("subg", 31, 31, imm=16, tag_offset=1)),
    (0xD9200841, "stg x1, [x2]", TagInsn("stg", 1, 2, index=None)),
    (0xD9300841, "stg x1, [x2, #-4096]", TagInsn("stg", 1, 2, imm=-4096)),
    (0xD92FFC41, "stg x1, [x2, #4080]!", TagInsn("stg", 1, 2, imm=4080, index="pre")),
    (0xD92017E1, "stg x1, [sp], #16", TagInsn("stg", 1, 31, imm=16, index="post")),
    (0xD9602841, "stzg x1, [x2, #32]", TagInsn("stzg", 1, 2, imm=32)),
    (0xD9BFE441, "st2g x1, [x2], #-32", TagInsn("st2g", 1, 2, imm=-32, index="post")),
    (0xD9E01C41, "stz2g x1, [x2, #16]!", TagInsn("stz2g", 1, 2, imm=16, index="pre")),
    (0xD97FF041, "ldg x1, [x2, #-16]", TagInsn("ldg", 1, 2, imm=-16)),
    (0x69200861, "stgp x1, x2, [x3, #-1024]", TagInsn("stgp", 1, 3, 2, imm=-1024)),
    (0x689F8861, "stgp x1, x2, [x3], #1008", TagInsn("stgp", 1, 3, 2, imm=1008, index="post")),
    (0x69810BE1, "stgp x1, x2, [sp, #32]!", TagInsn("stgp", 1, 31, 2, imm=32, index="pre")),
    (0xD9E00041, "ldgm x1, [x2]", TagInsn("ldgm", 1, 2)),
    (0xD9A00041, "stgm x1, [x2]", TagInsn("stgm", 1, 2)),
    (0xD9200041, "stzgm x1, [x2]", TagInsn("stzgm", 1, 2)),
    (0xD50B7463, "dc gva, x3", TagInsn("dcgva", 3, 3)),
    (0xD50B7484, "dc gzva, x4", TagInsn("dcgzva", 4, 4)),
]


@pytest.mark.parametrize("word,asm,want", WORDS, ids=[w[1] for w in WORDS])
def test_decode_assembled_words(word, asm, want):
    assert decode(word) == want


@pytest.mark.parametrize("word", [0x8B030041, 0xD503201F, 0xF9400041, 0x9AC30841, 0xD9201041, 0xD9A01041,
                                  0xD50B7423])
def test_other_words_are_not_tag_instructions(word):
    # add, nop, ldr, udiv, STZGM and STGM with imm9 != 0 (unallocated), DC ZVA
    assert decode(word) is None


# Every family but STGP, which capstone 5.0 does not decode (GNU objdump does: WORDS above)
FAMILIES = [(0xD9200000, 0x00DFFFFF), (0x9AC00000, 0x201FFFFF), (0x91800000, 0x403FFFFF)]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FAMILIES), st.integers(0, (1 << 32) - 1))
def test_decode_agrees_with_capstone(family, bits):
    word = family[0] | (bits & family[1])
    insn = next(_MD.disasm(word.to_bytes(4, "little"), 0), None)
    mnemonic = insn.mnemonic if insn is not None else None
    d = decode(word)
    assert (d is not None) == (mnemonic in _MTE), (hex(word), mnemonic, d)
    if d is not None:
        assert d.op == ("subps" if mnemonic == "cmpp" else mnemonic)
        assert d.rn == (word >> 5) & 31 and d.rd == word & 31


# -- tag generation ------------------------------------------------------------------------------------------
def test_irg_sequence_as_qemu():
    """guest_fw/tests/mte_insns.c under QEMU 7.2: RGSR_EL1 = SEED 0x1234, TAG 3, GCR_EL1 = 0."""
    a, rgsr, tags = 0x0500000040001230, 0x1234 << 8 | 3, []
    for _ in range(4):
        r, rgsr = irg(a, 0, 0, rgsr, True)
        tags.append(r >> 56)
    assert tags == [1, 7, 11, 13]
    r, rgsr = irg(a, 0xFFF7, 0, rgsr, True)
    assert r == 0x0300000040001230
    r, rgsr = irg(a, 0xFFFF, 0, rgsr, True)
    assert r == 0x40001230 and rgsr == 0xDB2400


def test_irg_without_tag_access_is_tag_0_and_keeps_rgsr():
    assert irg(0x0F00_0000_0000_1000, 0, 0, 0x5503, False) == (0x1000, 0x5503)


def test_choose_non_excluded_tag():
    assert choose_non_excluded_tag(5, 0, 0) == 5
    assert choose_non_excluded_tag(5, 0, 1 << 5 | 1 << 6) == 7
    assert choose_non_excluded_tag(15, 1, 0) == 0                  # wraps
    assert choose_non_excluded_tag(5, 2, 1 << 6) == 8              # steps over the excluded 6
    assert choose_non_excluded_tag(5, 3, 0xFFFF) == 0              # all excluded


def test_addg_subg_gmi_subp_as_qemu():
    a = 0x0500000040001230
    assert addg(a, 2, 1, False, 1 << 6, True) == 0x0700000040001250      # tag 5 + 1 skips the excluded 6
    assert addg(a, 63, 15, True, 1 << 6, True) == 0x0500000040000E40     # 15 steps from 5, 6 excluded
    assert addg(a, 63, 15, True, 0, True) == 0x0400000040000E40
    assert addg(a, 2, 1, False, 0, False) == 0x0000000040001250          # tag access disabled: tag 0
    assert gmi(a, 0x8001) == 0x8021
    assert subp(0x0F00000000000010, 0x0A00000000000030) == (1 << 64) - 0x20
    assert subp(0x0100800000000000, 0x0200000000000001) == 0x00007FFFFFFFFFFF   # the tags ignored
    assert subp(0x0F80000000000000, 0) == 0xFF80000000000000                    # sign-extended from bit 55


# -- the check -------------------------------------------------------------------------------------------------
def test_tag_store_is_per_granule_and_per_page():
    s = TagStore()
    s.set_range(0x4000_0010, 0x20, 3)
    assert [s.get(0x4000_0000 + 16 * i) for i in range(4)] == [0, 3, 3, 0]
    assert s.pages == {0x40000} and s.generation == 1
    assert s.first_mismatch(0x4000_0018, 16, 3) is None                # granules 1 and 2
    assert s.first_mismatch(0x4000_0018, 32, 3) == 2                    # granule 3 holds 0
    s.set(0x4000_0010, 0x13)                                          # 4 bits kept
    assert s.get(0x4000_0010) == 3 and s.generation == 1
    s.set(0x4000_1FF0, 5)
    assert s.get(0x4000_1FF0) == 5 and s.get(0x4000_0FF0) == 0 and set(s.pages) == {0x40000, 0x40001}
    assert s.generation == 2


CHECKED = dict(tbi=True, tcma=False, ata=True, tco=False, tagged=True)


@pytest.mark.parametrize("change,va,checked", [
    ({}, 0x0200_0000_4000_0000, True),
    ({"tbi": False}, 0x0200_0000_4000_0000, False),
    ({"ata": False}, 0x0200_0000_4000_0000, False),
    ({"tco": True}, 0x0200_0000_4000_0000, False),
    ({"tagged": False}, 0x0200_0000_4000_0000, False),
    ({"unchecked_insn": True}, 0x0200_0000_4000_0000, False),
    ({"tcma": True}, 0x0000_0000_4000_0000, False),          # VA[59:55] = 00000: match-all
    ({"tcma": True}, 0xFF80_0000_0000_0000, False),          # 11111
    ({"tcma": True}, 0x0080_0000_4000_0000, True),           # 00001: checked
    ({"tcma": True}, 0x0100_0000_4000_0000, True),
])
def test_tag_checked(change, va, checked):
    assert tag_checked(va, **{**CHECKED, **change}) is checked


@pytest.mark.parametrize("tcf,write,action", [
    (0, False, None), (0, True, None), (1, False, "sync"), (1, True, "sync"), (2, False, "async"),
    (2, True, "async"), (3, False, "sync"), (3, True, "async")])
def test_fault_action(tcf, write, action):
    assert fault_action(tcf, write) == action


def test_tfsr_bit_by_va_55():
    assert tfsr_bit(0x0200_0000_4000_0000) == mte.TFSR_TF0 and tfsr_bit(0xFF80_0000_0000_0000) == mte.TFSR_TF1


def test_tbi_and_tcma_by_regime():
    tcr1 = 1 << 37 | 1 << 57                                  # TBI0, TCMA0
    assert effective_tbi(0x1000, 1, tcr1, 0) and not effective_tbi(1 << 55, 1, tcr1, 0)
    assert effective_tcma(0x1000, 0, tcr1, 0) and not effective_tcma(1 << 55, 0, tcr1, 0)
    tcr2 = 1 << 20 | 1 << 30                                  # TCR_EL2 (E2H = 0): TBI [20], TCMA [30]
    assert effective_tbi(1 << 55, 2, 0, tcr2) and effective_tcma(0x1000, 2, 0, tcr2)
    assert effective_tbi(0x1000, 2, 0, 1 << 37, HCR_E2H) and not effective_tbi(0x1000, 2, 0, tcr2, HCR_E2H)


def test_allocation_tag_access_and_tcf_by_el():
    s1 = SCTLR_ATA | 2 << mte.SCTLR_TCF_SHIFT | 1 << mte.SCTLR_TCF0_SHIFT
    assert tag_access_enabled(1, s1, 0, 0, False) and not tag_access_enabled(0, s1, 0, 0, False)
    assert tag_access_enabled(0, SCTLR_ATA0, 0, 0, False)
    assert not tag_access_enabled(1, s1, 0, 0, True)                         # EL2 with HCR_EL2.ATA = 0
    assert tag_access_enabled(1, s1, 0, HCR_ATA, True)
    assert tag_access_enabled(0, 0, SCTLR_ATA0, HCR_E2H | HCR_TGE, True)    # EL2&0: SCTLR_EL2.ATA0
    assert tag_access_enabled(2, 0, SCTLR_ATA, 0, True) and not tag_access_enabled(2, SCTLR_ATA, 0, 0, True)
    assert (tcf_of(1, s1, 0), tcf_of(0, s1, 0), tcf_of(2, s1, 3 << mte.SCTLR_TCF_SHIFT)) == (2, 1, 3)
    assert tcf_of(0, s1, 2 << mte.SCTLR_TCF0_SHIFT, HCR_E2H | HCR_TGE, True) == 2


@pytest.mark.parametrize("word,unchecked", [
    (0xF94003E1, True),        # ldr x1, [sp]
    (0xF90013E1, True),        # str x1, [sp, #32]
    (0xA9BF7BFD, True),        # stp x29, x30, [sp, #-16]!
    (0xF8626BE1, False),       # ldr x1, [sp, x2]: register offset
    (0x58000041, True),        # ldr x1, <literal>
    (0xF9400041, False),       # ldr x1, [x2]
    (0x8B030041, False),       # add: not a load/store
])
def test_sp_and_literal_forms_are_unchecked(word, unchecked):
    assert sp_unchecked(word) is unchecked


def test_with_tag():
    assert with_tag(0xFFFF_0000_0000_1000, 3) == 0xF3FF_0000_0000_1000


def test_dc_tag_trap_by_el_and_controls():
    from devmodel.mte import HCR_TDZ, SCTLR_DZE, dc_tag_trap
    host = HCR_E2H | HCR_TGE
    assert dc_tag_trap(0, 0, 0, 0, False) == 1 and dc_tag_trap(0, SCTLR_DZE, 0, 0, False) is None
    assert dc_tag_trap(1, 0, 0, 0, False) is None and dc_tag_trap(2, 0, 0, HCR_TDZ, True) is None
    assert dc_tag_trap(1, 0, 0, HCR_TDZ, True) == 2 and dc_tag_trap(0, SCTLR_DZE, 0, HCR_TDZ, True) == 2
    assert dc_tag_trap(0, 0, 0, HCR_TDZ, True) == 1                           # DZE before TDZ
    assert dc_tag_trap(0, SCTLR_DZE, 0, host, True) == 2                     # EL2&0: SCTLR_EL2.DZE
    assert dc_tag_trap(0, 0, SCTLR_DZE, host | HCR_TDZ, True) is None
