"""harness/aborts.py: the accesses of a load/store (checked against capstone's reading of each word), and the
abort a vCPU with its MMU on takes (permission, translation, access flag, PAN, execute never, alignment),
with the DFSC/IFSC and FAR the Arm ARM gives (D17.2.37, D17.2.40), seen at the guest's vector."""
from __future__ import annotations

import capstone
import pytest
from unicorn import UC_HOOK_CODE
from unicorn.arm64_const import (UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_ELR_EL1,
                                 UC_ARM64_REG_SP, UC_ARM64_REG_VBAR_EL1, UC_ARM64_REG_X1, UC_ARM64_REG_X2)

from devmodel.pagetable import PageAllocator, PageTableBuilder
from devmodel.vmsa import PERM_R, PERM_W, PERM_X
from harness.aborts import decode_access
from harness.machine import Machine

_MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
_MD.detail = True
REGS = {**{f"x{i}": 0x1000 * i for i in range(31)}, **{f"w{i}": 0x1000 * i for i in range(31)}}

# word, capstone text, [(address, size, write)], exclusive, atomic, unprivileged, cache maintenance
DECODES = [
    (0xF8E18043, "swpal x1, x3, [x2]", [(0x2000, 8, True)], False, True, False, False),
    (0x38E10043, "ldaddalb w1, w3, [x2]", [(0x2000, 1, True)], False, True, False, False),
    (0xB9800441, "ldrsw x1, [x2, #4]", [(0x2004, 4, False)], False, False, False, False),
    (0x69400C41, "ldpsw x1, x3, [x2]", [(0x2000, 4, False), (0x2004, 4, False)], False, False, False, False),
    (0xC8240C41, "stxp w4, x1, x3, [x2]", [(0x2000, 8, True), (0x2008, 8, True)], True, False, False, False),
    (0xF8408441, "ldr x1, [x2], #8", [(0x2000, 8, False)], False, False, False, False),   # post-index
    (0xB863D841, "ldr w1, [x2, w3, sxtw #2]", [(0xE000, 4, False)], False, False, False, False),
    (0xD50B7422, "dc zva, x2", [(0x2000, 64, True)], False, False, False, False),
    (0xD50B7E22, "dc civac, x2", [(0x2000, 1, True)], False, False, False, True),
    (0xAD010440, "stp q0, q1, [x2, #0x20]", [(0x2020, 16, True), (0x2030, 16, True)], False, False, False, False),
    (0x78400841, "ldtrh w1, [x2]", [(0x2000, 2, False)], False, False, True, False),
]


@pytest.mark.parametrize("word,asm,acc,excl,atomic,unpriv,cm", DECODES)
def test_decode_access(word, asm, acc, excl, atomic, unpriv, cm):
    i = next(_MD.disasm(word.to_bytes(4, "little"), 0x4000))
    assert f"{i.mnemonic} {i.op_str}" == asm
    d = decode_access(_MD, word, 0x4000, lambda n: REGS.get(n, 0))
    assert [(a.va, a.size, a.write) for a in d.accesses] == acc
    assert (d.exclusive, d.atomic, d.unprivileged, d.cm) == (excl, atomic, unpriv, cm)


def test_no_access_no_decode():
    assert decode_access(_MD, 0x8B030041, 0x4000, lambda n: 0) is None          # add x1, x2, x3
    assert decode_access(_MD, 0xF9800020, 0x4000, lambda n: 0) is None          # prfm: no fault to report


# -- a vCPU with its MMU on -------------------------------------------------------------------------------------
CODE, VEC, TABLES, STACK = 0x4008_0000, 0x4010_0000, 0x4040_0000, 0x4050_0000
RO, RW, USER, XN, NOAF, HOLE = 0x4060_0000, 0x4060_1000, 0x4060_2000, 0x4060_3000, 0x4060_4000, 0x4060_5000
NOP, B_SELF = 0xD503201F, 0x14000000
TCR = 16 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b101 << 32        # T0SZ 16, WBWA, inner shareable, 48-bit PA
SCTLR_M = 1


def _mmu_machine(code_words):
    m = Machine(console=lambda vm, d, s: None, tcg_buffer_size=8 << 20)
    vm = m.add_vm(ram_size=32 << 20)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in code_words))
    vm.load_code(VEC, (NOP.to_bytes(4, "little") + B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0") * 16,
                 entry=CODE)
    pt = PageTableBuilder(vm.ipa, PageAllocator(vm.ipa, TABLES, 0x10_0000), ias=48)
    pt.map(CODE, CODE, 0x1000, PERM_R | PERM_X, user=False)
    pt.map(VEC, VEC, 0x1000, PERM_R | PERM_X, user=False)
    pt.map(STACK - 0x1000, STACK - 0x1000, 0x1000, PERM_R | PERM_W, user=False)
    pt.map(RO, RO, 0x1000, PERM_R, user=False)
    pt.map(RW, RW, 0x1000, PERM_R | PERM_W, user=False)
    pt.map(USER, USER, 0x1000, PERM_R | PERM_W, user=True)
    pt.map(XN, XN, 0x1000, PERM_R, user=False)
    pt.map(NOAF, NOAF, 0x1000, PERM_R | PERM_W, user=False, af=False)
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    uc.cpr_write(3, 0, 10, 2, 0, 0xFF)                                # MAIR_EL1: attr 0 Normal WB
    uc.cpr_write(3, 0, 2, 0, 2, TCR)
    uc.cpr_write(3, 0, 2, 0, 0, pt.ttb)                               # TTBR0_EL1
    uc.cpr_write(3, 0, 1, 0, 0, uc.cpr_read(3, 0, 1, 0, 0) | SCTLR_M)
    uc.reg_write(UC_ARM64_REG_VBAR_EL1, VEC)
    uc.reg_write(UC_ARM64_REG_SP, STACK)
    seen = []
    uc.hook_add(UC_HOOK_CODE, lambda u, a, s, d: seen.append((u.reg_read(UC_ARM64_REG_ESR_EL1),
                                                              u.reg_read(UC_ARM64_REG_ELR_EL1),
                                                              u.reg_read(UC_ARM64_REG_FAR_EL1))), None,
                VEC + 0x200, VEC + 0x200)
    return m, v, seen


LDR_X1_X2, STR_X1_X2, BR_X2 = 0xF9400041, 0xF9000041, 0xD61F0040
MSR_PAN_1 = 0xD500419F                                                 # msr pan, #1
LDXR_X1_X2 = 0xC85F7C41


@pytest.mark.parametrize("words,x2,esr,far_off", [
    ([STR_X1_X2], RO, 0x9600_004F, 0),                   # permission fault level 3, WnR
    ([LDR_X1_X2], HOLE + 8, 0x9600_0007, 8),             # translation fault level 3
    ([LDR_X1_X2], NOAF + 0x10, 0x9600_000B, 0x10),       # access flag fault level 3
    ([MSR_PAN_1, LDR_X1_X2], USER, 0x9600_000F, 0),      # PAN: EL1 reads EL0-accessible memory
    ([LDXR_X1_X2], RW + 4, 0x9600_0021, 4),              # alignment: exclusives must be aligned
    ([BR_X2], XN + 0x40, 0x8600_000F, 0x40),             # execute never: instruction abort level 3
])
def test_mmu_abort_has_the_arm_arm_syndrome_and_far(words, x2, esr, far_off):
    m, v, seen = _mmu_machine(words + [B_SELF])
    v.uc.reg_write(UC_ARM64_REG_X2, x2)
    v.uc.reg_write(UC_ARM64_REG_X1, 0x55)
    out = m.run(max_insns=20_000)
    fault_pc = (x2 if words[-1] == BR_X2 else CODE + 4 * (len(words) - 1))
    base = x2 - far_off
    assert seen and seen[0] == (esr, fault_pc, base + far_off), (out.message, [tuple(map(hex, s)) for s in seen])
