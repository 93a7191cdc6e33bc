"""A hostile guest against MTE (harness/mte.py over devmodel/mte.py), at EL1 with the MMU on: seeded random tag
instructions (every form, random registers, SP, pre/post-index writeback) and ordinary loads/stores through
Tagged mappings of RAM, of the last RAM page, of the PL011 and virtio-mmio (MMIO), of an IPA with nothing
there, and through an untagged mapping, with random TCF/TCF0, TCMA and logical tags. The guest's handler skips
every faulting instruction. Nothing raises in Python, every run reaches the code's final `b .`, and tags exist
only in RAM: MMIO has no tag storage (QEMU 7.2 target/arm/mte_helper.c allocation_tag_mem returns no tag memory
for a page that is not RAM: the tag store is dropped, LDG reads 0)."""
from __future__ import annotations

import random

import pytest
from unicorn import arm64_const as K

from devmodel.pagetable import PageAllocator, PageTableBuilder
from devmodel.vmsa import PERM_R, PERM_W, PERM_X
from harness.machine import DEFAULT_RAM_IPA, Machine

CODE, VEC, TABLES, DATA = 0x4008_0000, 0x4010_0000, 0x4040_0000, 0x4060_0000
RAM_SIZE = 16 << 20
RAM_END = DEFAULT_RAM_IPA + RAM_SIZE
PL011, VIRTIO = 0x0900_0000, 0x0A00_0000
B_SELF = 0x14000000
# handler: mrs x17, elr_el1; add x17, x17, #4; msr elr_el1, x17; eret
SKIP = (0xD5384031, 0x91001231, 0xD5184031, 0xD69F03E0)
TCR = 16 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b101 << 32 | 1 << 37          # 48-bit VA, 4 KiB, TBI0
SCTLR_M, SCTLR_ATA, SCTLR_ATA0 = 1, 1 << 43, 1 << 42
# VA -> IPA, size, MAIR index (1: Tagged)
MAPS = ((DATA, DATA, 0x4000, 1), (0x4070_0000, PL011, 0x1000, 1), (0x4071_0000, 0x5000_0000, 0x1000, 1),
        (0x4072_0000, RAM_END - 0x1000, 0x1000, 1), (0x4073_0000, DATA + 0x4000, 0x1000, 0),
        (0x4074_0000, VIRTIO, 0x1000, 1))
ADDRS = [va + o for va, *_ in MAPS for o in (0, 0x10, 0xFF0, 0xFF8, 0x1FF0, 0x3FF0)] + [0x4075_0000, 0, 1 << 50]
# tag instructions (STG..STZ2G/LDG/block forms, IRG, GMI, SUBP(S), ADDG, SUBG, STGP x3) with random fields
TAG_FORMS = (0xD9200000, 0xD9600000, 0xD9A00000, 0xD9E00000, 0x9AC01000, 0x9AC01400, 0x9AC00000, 0xBAC00000,
             0x91800000, 0xD1800000, 0x68800000, 0x69000000, 0x69800000)
# DC GVA/GZVA, MSR TCO; ordinary accesses: STR/LDR (imm), STP/LDP, STRB, LDR (reg), LDADD, STR q, STP q, LDXR,
# STR/LDR pre/post-index
REG_FORMS = (0xF9000000, 0xF9400000, 0xA9000000, 0xA9400000, 0x39000000, 0xF8606800, 0xF8200000, 0x3D800000,
             0xAD000000, 0xC85F7C00, 0xF8000C00, 0xF8400400)


def _word(r: random.Random) -> int:
    kind = r.randrange(4)
    if kind == 0:
        return r.choice((0xD50B7460, 0xD50B7480)) | r.randrange(32)
    if kind == 1:
        return r.choice(REG_FORMS) | r.randrange(32) << 5 | r.randrange(32)          # Rn, Rt
    if kind == 2 and r.random() < 0.2:
        return 0xD503409F | r.randrange(16) << 8
    return r.choice(TAG_FORMS) | r.getrandbits(22)


def _vm(words, tcr: int, sctlr_bits: int):
    """One vCPU at EL1 running `words` then `b .` with MAPS mapped, MAIR_EL1 attr1 Tagged, the MMU on; every
    vector skips the instruction that took it."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=RAM_SIZE, mte=True)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in [*words, B_SELF]))
    vm.load_code(VEC, b"".join(w.to_bytes(4, "little") for w in SKIP).ljust(0x80, b"\0") * 16, entry=CODE)
    pt = PageTableBuilder(vm.ipa, PageAllocator(vm.ipa, TABLES, 0x10_0000), ias=48)
    pt.map(CODE, CODE, 0x1000, PERM_R | PERM_X, user=False)
    pt.map(VEC, VEC, 0x1000, PERM_R | PERM_X, user=False)
    for va, ipa, size, attr in MAPS:
        pt.map(va, ipa, size, PERM_R | PERM_W, user=True, attrindx=attr)
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    uc.cpr_write(3, 0, 10, 2, 0, 0xF0FF)                                  # MAIR_EL1: attr0 Normal, attr1 Tagged
    uc.cpr_write(3, 0, 2, 0, 2, tcr)
    uc.cpr_write(3, 0, 2, 0, 0, pt.ttb)
    uc.cpr_write(3, 0, 1, 0, 0, uc.cpr_read(3, 0, 1, 0, 0) | SCTLR_M | SCTLR_ATA | sctlr_bits)
    uc.reg_write(K.UC_ARM64_REG_VBAR_EL1, VEC)
    return m, vm, v


def _run(seed: int):
    r = random.Random(seed)
    words = [_word(r) for _ in range(24)]
    m, vm, v = _vm(words, TCR | r.randrange(2) << 57,                     # TCMA0, TCF, TCF0 random
                   SCTLR_ATA0 | r.randrange(4) << 40 | r.randrange(4) << 38)
    uc = v.uc
    uc.reg_write(K.UC_ARM64_REG_SP, r.choice(ADDRS) | r.randrange(16) << 56)
    for i in range(31):
        if i != 17:                                                       # the handler's
            value = (r.choice(ADDRS) + r.choice((0, 8, 16, -16)) | r.randrange(16) << 56) & ((1 << 64) - 1)
            uc.reg_write(getattr(K, f"UC_ARM64_REG_X{i}"), value)
    m.run(max_insns=300_000)
    return vm, v


@pytest.mark.parametrize("seeds", [range(0, 20), range(20, 40)])
def test_random_tag_traffic_never_raises_and_tags_live_in_ram_only(seeds):
    for seed in seeds:
        vm, v = _run(seed)
        assert v.pc == CODE + 24 * 4, f"seed {seed}: stopped at {v.pc:#x}"
        outside = [hex(p << 12) for p in vm.tags.pages if not vm.in_ram(p << 12, 0x1000)]
        assert outside == [], f"seed {seed}: tags stored for {outside}"


STG_X1_X2, LDG_X3_X2 = 0xD9200841, 0xD9600043


@pytest.mark.parametrize("va", [0x4070_0000, 0x4074_0000])
def test_a_tagged_mapping_of_mmio_has_no_tag_storage(va):
    """STG through a Tagged mapping of the PL011 / virtio-mmio: completes (no fault), stores no tag, and LDG
    there reads tag 0 (QEMU 7.2: allocation_tag_mem gives no tag memory for MMIO)."""
    m, vm, v = _vm((STG_X1_X2, LDG_X3_X2), TCR, 0)
    uc = v.uc
    uc.reg_write(K.UC_ARM64_REG_X1, 7 << 56 | va)
    uc.reg_write(K.UC_ARM64_REG_X2, 7 << 56 | va)
    uc.reg_write(K.UC_ARM64_REG_X3, va)
    m.run(max_insns=10_000)
    assert v.pc == CODE + 8 and uc.reg_read(K.UC_ARM64_REG_ESR_EL1) == 0      # no exception taken
    assert list(vm.tags.pages) == []
    assert uc.reg_read(K.UC_ARM64_REG_X3) == va                               # LDG: tag 0
