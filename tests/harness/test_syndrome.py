"""harness/syndrome.py: ESR fields (Arm ARM D17.2.37) and the instruction classes, each word checked against
capstone's reading of it so that a wrong encoding constant cannot pass on both sides."""
from __future__ import annotations

import capstone
import pytest

from harness import syndrome as syn
from harness.sysregs import mrs_word, msr_word

_MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def text(word: int) -> str:
    i = next(_MD.disasm(word.to_bytes(4, "little"), 0x1000))
    return f"{i.mnemonic} {i.op_str}".strip()


PAUTH = {0xDAC10041: "pacia x1, x2", 0xDAC11C83: "autdb x3, x4", 0xDAC123E5: "paciza x5",
         0x9AC23020: "pacga x0, x1, x2",
         0xD503233F: "paciasp", 0xD50323FF: "autibsp", 0xD503211F: "pacia1716", 0xD71F0822: "braa x1, x2",
         0xD63F087F: "blraaz x3", 0xD65F0FFF: "retab", 0xD69F0BFF: "eretaa", 0xF8201441: "ldraa x1, [x2, #8]",
         0xF8FFEC83: "ldrab x3, [x4, #-0x10]!"}
NOT_PAUTH = {0xDAC143E6: "xpaci x6", 0xDAC147E7: "xpacd x7", 0xD50320FF: "xpaclri", 0xD503201F: "nop",
             0x8B030041: "add x1, x2, x3", 0xD61F0020: "br x1", 0xD65F03C0: "ret"}


@pytest.mark.parametrize("word,asm", list(PAUTH.items()) + list(NOT_PAUTH.items()))
def test_pauth_class_is_what_hcr_el2_api_traps(word, asm):
    assert text(word) == asm
    assert syn.is_pauth(word) is (word in PAUTH)


# (word, capstone text, ISV template: SAS, SSE, SRT, SF, AR) - D17.2.37 "ISS encoding for a Data Abort"
LOADS_STORES = [
    (0xF9400041, "ldr x1, [x2]", (3, 0, 1, 1, 0)),
    (0x39401483, "ldrb w3, [x4, #5]", (0, 0, 3, 0, 0)),
    (0x78A768C5, "ldrsh x5, [x6, x7]", (1, 1, 5, 1, 0)),
    (0xB89FC128, "ldursw x8, [x9, #-4]", (2, 1, 8, 1, 0)),
    (0x7900056A, "strh w10, [x11, #2]", (1, 0, 10, 0, 0)),
    (0xB85FF1AC, "ldur w12, [x13, #-1]", (2, 0, 12, 0, 0)),
    (0xF84009EE, "ldtr x14, [x15]", (3, 0, 14, 1, 0)),
    (0x39C00062, "ldrsb w2, [x3]", (0, 1, 2, 0, 0)),
    (0xC8DFFC41, "ldar x1, [x2]", (3, 0, 1, 1, 1)),
    (0x089FFC83, "stlrb w3, [x4]", (0, 0, 3, 0, 1)),
    (0x18000001, "ldr w1, #0x1000", (2, 0, 1, 0, 0)),
    (0xF8408630, "ldr x16, [x17], #8", None),          # writeback: no instruction syndrome
    (0xF8408E72, "ldr x18, [x19, #8]!", None),
    (0xA9400861, "ldp x1, x2, [x3]", None),             # a pair
    (0x3DC00020, "ldr q0, [x1]", None),                 # SIMD&FP register
    (0xC85F7C41, "ldxr x1, [x2]", None),                # exclusive
    (0xF9800020, "prfm pldl1keep, [x1]", None),
]


@pytest.mark.parametrize("word,asm,fields", LOADS_STORES)
def test_data_abort_instruction_syndrome(word, asm, fields):
    assert text(word) == asm
    t = syn.data_abort_template(word)
    if fields is None:
        assert t == 0
    else:
        sas, sse, srt, sf, ar = fields
        assert t == 1 << 24 | sas << 22 | sse << 21 | srt << 16 | sf << 15 | ar << 14


def test_exclusive_loads_set_the_step_ex_bit():
    assert [syn.is_load_exclusive(w) for w in (0xC85F7C41, 0xC87F8861, 0x085F7C41)] == [True] * 3  # ldxr ldaxp ldxrb
    assert text(0xC87F8861) == "ldaxp x1, x2, [x3]" and text(0x085F7C41) == "ldxrb w1, [x2]"
    assert not any(syn.is_load_exclusive(w) for w in (0xC8DFFC41, 0xF9400041, 0xC8037C41))      # ldar, ldr, stxr


def test_sysreg_trap_iss_fields():
    apgakeylo = msr_word((3, 0, 2, 3, 0), 3)
    assert text(apgakeylo) == "msr apgakeylo_el1, x3"
    # Op0 3, Op2 0, Op1 0, CRn 2, Rt 3, CRm 3, Direction 0 (write)
    assert syn.iss_sysreg(apgakeylo) == 3 << 20 | 0 << 17 | 0 << 14 | 2 << 10 | 3 << 5 | 3 << 1 | 0
    ctr = mrs_word((3, 3, 0, 0, 1), 0)
    assert text(ctr) == "mrs x0, ctr_el0" and syn.iss_sysreg(ctr) == 3 << 20 | 1 << 17 | 3 << 14 | 0 | 1
    daifset = 0xD50342DF
    assert text(daifset) == "msr daifset, #2"
    assert syn.iss_sysreg(daifset) == 0 << 20 | 6 << 17 | 3 << 14 | 4 << 10 | 31 << 5 | 2 << 1   # MSR (immediate)
    assert syn.is_system(daifset) and syn.is_system(ctr) and not syn.is_system(0x8B030041)


def test_other_classes():
    assert syn.is_sve(0x04A0E3E1) and text(0x04A0E3E1).startswith("cntw")
    assert not syn.is_sve(0x8B030041)
    assert syn.wfx_kind(0xD503207F) == 0 and syn.wfx_kind(0xD503205F) == 1 and syn.wfx_kind(0xD503201F) is None
    assert syn.iss_wfx(0xD503205F) == 1 << 24 | 0xE << 20 | 1
    assert syn.esr(syn.EC_BRK64, syn.imm16(0xD4224680)) == 0xF2001234 and text(0xD4224680) == "brk #0x1234"
    assert syn.iss_debug(True) == 0x62 and syn.iss_swstep(True, True) == 1 << 24 | 1 << 6 | 0x22
    assert syn.iss_swstep(False, True) == 0x22                   # EX is only meaningful with ISV
    assert syn.lower(syn.EC_DABT_CUR, True) == syn.EC_DABT_LOW and syn.lower(syn.EC_SVC64, True) == syn.EC_SVC64
    assert [syn.is_abort_class(ec) for ec in (0x00, 0x1F, 0x20, 0x22, 0x25, 0x26, 0x27, 0x28, 0x3C)] == \
        [False, False, True, True, True, True, True, False, False]
