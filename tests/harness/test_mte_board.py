"""harness/mte.py on the board: -machine mte=on/off, the tag instructions' faults on raw code, the tag checks
armed only while they can fault, and nothing of MTE on a VM without it. (guest_fw/tests/mte_insns.c, run under
QEMU too, checks every instruction's results; tests/harness/test_kvm_unit_tests.py the mte-* verdicts.)"""
from __future__ import annotations

from pathlib import Path

import pytest
from unicorn.arm64_const import UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_VBAR_EL1, \
    UC_ARM64_REG_X1, UC_ARM64_REG_X2

from guestbin import guest_elf
from harness.cli import main
from harness.machine import Machine
from harness.mte import ram_chunk

MTE_FLAT = Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e" / "arm" / "mte.flat"
CODE, VEC = 0x4008_0000, 0x4010_0000
SYNC_VECTOR = VEC + 0x200                                 # current EL with SP_ELx
NOP, B_SELF = 0xD503201F, 0x14000000
STG_X1_X2, LDGM_X1_X2, IRG_X1_X2 = 0xD9200841, 0xD9E00041, 0x9ADF1041
PFR1 = 0xD5380421                                          # mrs x1, id_aa64pfr1_el1


@pytest.mark.parametrize("machine", [[], ["-machine", "mte=on,mte=off"]])          # the last one wins
def test_without_mte_the_guest_sees_none(machine, capsys):
    """kvm-unit-tests' mte skips when ID_AA64PFR1_EL1.MTE < 2, as under QEMU without mte=on."""
    assert main(["run", str(MTE_FLAT), "--append", "sync", *machine]) == 77
    assert "SKIP: No MTE support" in capsys.readouterr().out


def test_machine_option_values(capsys):
    assert main(["run", str(MTE_FLAT), "--append", "async", "-machine", "virt,mte=on"]) == 0
    assert "PASS: mte: async: write" in capsys.readouterr().out
    assert main(["run", str(MTE_FLAT), "-machine", "mte=maybe"]) == 125
    assert "Parameter 'mte' expects 'on' or 'off'" in capsys.readouterr().err       # QEMU 7.2's words
    assert main(["run", str(MTE_FLAT), "-machine", "virtualization=2"]) == 125
    assert "Parameter 'virtualization' expects 'on' or 'off'" in capsys.readouterr().err
    assert main(["run", str(MTE_FLAT), "-machine", "its=on"]) == 125
    assert "-machine its=on: not modelled (gic-version=, virtualization=, mte=)" in capsys.readouterr().err


def _raw(words, mte=True, x2=0):
    """One vCPU at EL1, MMU off, running `words` then `b .`; every vector `nop; b .`."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=16 << 20, mte=mte)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in [*words, B_SELF]))
    vm.load_code(VEC, (NOP.to_bytes(4, "little") + B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0") * 16,
                 entry=CODE)
    v = vm.vcpus[0]
    v.power_on(CODE)
    v.uc.reg_write(UC_ARM64_REG_VBAR_EL1, VEC)
    v.uc.reg_write(UC_ARM64_REG_X2, x2)
    m.run(max_insns=200)
    return m, v


def test_id_field_and_instructions_only_with_mte():
    _m, v = _raw([PFR1])
    assert (v.uc.reg_read(UC_ARM64_REG_X1) >> 8) & 0xF == 3
    _m, v = _raw([PFR1], mte=False)
    assert (v.uc.reg_read(UC_ARM64_REG_X1) >> 8) & 0xF == 0
    assert not hasattr(v, "mte") and v.machine.exceptions.undef_emulators == []
    _m, v = _raw([IRG_X1_X2], mte=False)
    assert v.pc == SYNC_VECTOR + 4 and v.uc.reg_read(UC_ARM64_REG_ESR_EL1) == 0x0200_0000     # UNDEFINED
    _m, v = _raw([IRG_X1_X2], x2=0x1234)
    assert v.pc == CODE + 4 and v.uc.reg_read(UC_ARM64_REG_X1) == 0x1234   # SCTLR_EL1.ATA = 0: tag 0


@pytest.mark.parametrize("x2,esr,far", [
    (0x5000_0000, 0x9600_0050, 0x5000_0000),          # no memory at the IPA (above RAM): external abort, WnR
    (0x4020_0008, 0x9600_0061, 0x4020_0008),          # not 16-byte aligned: alignment fault
    (1 << 50, 0x9600_0040, 1 << 50),                  # above PARange with the MMU off: address size fault
])
def test_tag_store_faults_are_data_aborts(x2, esr, far):
    _m, v = _raw([STG_X1_X2], x2=x2)
    assert v.pc == SYNC_VECTOR + 4 and v.uc.reg_read(UC_ARM64_REG_ESR_EL1) == esr
    assert v.uc.reg_read(UC_ARM64_REG_FAR_EL1) == far


def test_untagged_memory_takes_no_tags():
    """MMU off: Device memory, not Tagged: STG writes no tag (but still checks the address), LDGM reads 0."""
    _m, v = _raw([STG_X1_X2, LDGM_X1_X2], x2=0x4020_0000)
    assert v.pc == CODE + 8 and not v.vm.tags.pages and v.uc.reg_read(UC_ARM64_REG_X1) == 0


def test_checks_armed_only_while_they_can_fault():
    """guest mte_insns ends with SCTLR_EL1.TCF = 0: its tagged pages are unprotected again; 5 sync faults."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(mte=True)
    vm.load(str(guest_elf("mte_insns")))
    assert m.run(timeout=60).exit_code == 0
    mte = vm.vcpus[0].mte
    assert len(vm.tags.pages) == 8 and mte.faults == 5 and not mte.armed and mte._pages == {}



def _ram_regions(vm):
    return sorted((b, e) for b, e, _p in vm.vcpus[0].uc.mem_regions() if vm.in_ram(b))


def test_an_mte_vm_maps_its_ram_in_pieces_so_a_page_protect_splits_one_piece():
    """mte.ram_chunk: a page's mem_protect splits only its 2 MiB piece (not the 128 MiB region: ~7 ms)."""
    m = Machine(console=lambda vm, d, s: None)
    plain, tagged = m.add_vm(), m.add_vm(mte=True)
    assert _ram_regions(plain) == [(plain.ram_ipa, plain.ram_ipa + plain.ram.size - 1)]
    pieces = _ram_regions(tagged)
    assert len(pieces) == 64 and all(e - b + 1 == 2 << 20 for b, e in pieces)
    assert pieces[0][0] == tagged.ram_ipa and pieces[-1][1] == tagged.ram_ipa + tagged.ram.size - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(pieces, pieces[1:]))
    assert (ram_chunk(128 << 20), ram_chunk(1 << 30), ram_chunk(3 << 20)) == (2 << 20, 16 << 20, 2 << 20)
    small = m.add_vm(ram_size=3 << 20, mte=True)     # a last piece smaller than the others
    assert [e - b + 1 for b, e in _ram_regions(small)] == [2 << 20, 1 << 20]

STZG_X1_X2, STGP_X1_X3_X2 = 0xD9600841, 0x69000C41                     # stzg x1, [x2]; stgp x1, x3, [x2]


@pytest.mark.parametrize("word", [STZG_X1_X2, STGP_X1_X3_X2])
def test_tag_stores_with_data_to_a_device(word):
    """MMU off, the PL011 at 0x0900_0000: the data goes to the device in doublewords, no traceback; at the last
    granule of its window (4 KiB) too."""
    _m, v = _raw([word], x2=0x0900_0000)
    assert v.pc == CODE + 4
    _m, v = _raw([word], x2=0x0900_0FF0)
    assert v.pc == CODE + 4


# -- EL0 with the MMU on: TCF0, TFSRE0_EL1, the block forms UNDEFINED ------------------------------------------
EL0_CODE, DATA, TABLES = 0x4009_0000, 0x4060_0000, 0x4040_0000
STG_X1_X1, ERET = 0xD9200821, 0xD69F03E0
LDR_X3_X2, IRG_X4_X2, LDGM_X5_X2 = 0xF9400043, 0x9ADF1044, 0xD9E00045
SCTLR_M, SCTLR_ATA, SCTLR_ATA0 = 1, 1 << 43, 1 << 42
TCR = 16 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b101 << 32 | 1 << 37     # 48-bit VA, 4 KiB, TBI0


def test_el0_async_check_sets_tfsre0_and_block_forms_are_undefined():
    from unicorn.arm64_const import UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_SP, UC_ARM64_REG_X3, UC_ARM64_REG_X4
    from devmodel.pagetable import PageAllocator, PageTableBuilder
    from devmodel.vmsa import PERM_R, PERM_W, PERM_X
    from harness.mte import TFSR_EL1, TFSRE0_EL1

    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=32 << 20, mte=True)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in (STG_X1_X1, ERET)))
    vm.load_code(EL0_CODE, b"".join(w.to_bytes(4, "little") for w in (LDR_X3_X2, IRG_X4_X2, LDGM_X5_X2, B_SELF)))
    vm.load_code(VEC, (NOP.to_bytes(4, "little") + B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0") * 16,
                 entry=CODE)
    vm.ipa.write(DATA, 0x1122334455667788, 8)
    pt = PageTableBuilder(vm.ipa, PageAllocator(vm.ipa, TABLES, 0x10_0000), ias=48)
    pt.map(CODE, CODE, 0x1000, PERM_R | PERM_X, user=False)
    pt.map(VEC, VEC, 0x1000, PERM_R | PERM_X, user=False)
    pt.map(EL0_CODE, EL0_CODE, 0x1000, PERM_R | PERM_X, user=True, pxn=True)
    pt.map(DATA, DATA, 0x1000, PERM_R | PERM_W, user=True, attrindx=1)          # MAIR attr1: Tagged
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    uc.cpr_write(3, 0, 10, 2, 0, 0xF0FF)                                  # MAIR_EL1: attr0 Normal, attr1 Tagged
    uc.cpr_write(3, 0, 2, 0, 2, TCR)
    uc.cpr_write(3, 0, 2, 0, 0, pt.ttb)
    sctlr = uc.cpr_read(3, 0, 1, 0, 0) | SCTLR_M | SCTLR_ATA | SCTLR_ATA0 | 2 << 38      # TCF0 = async
    uc.cpr_write(3, 0, 1, 0, 0, sctlr)
    uc.reg_write(UC_ARM64_REG_VBAR_EL1, VEC)
    uc.cpr_write(3, 0, 4, 0, 0, 0)                                        # SPSR_EL1: ERET to EL0t
    uc.reg_write(UC_ARM64_REG_ELR_EL1, EL0_CODE)
    uc.reg_write(UC_ARM64_REG_SP, 0)
    uc.reg_write(UC_ARM64_REG_X1, 3 << 56 | DATA)                         # EL1 tags granule 0 with 3
    uc.reg_write(UC_ARM64_REG_X2, 5 << 56 | DATA)                         # EL0 reads it with tag 5
    m.run(max_insns=100_000)          # (a slice a stop ends early is charged whole: an upper bound)
    assert vm.tags.get(DATA) == 3
    assert uc.reg_read(UC_ARM64_REG_X3) == 0x1122334455667788             # async: the load is performed
    assert v.mte.regs[TFSRE0_EL1] == 1 and v.mte.regs[TFSR_EL1] == 0      # TF0, at EL0
    assert uc.reg_read(UC_ARM64_REG_X4) == DATA          # IRG at EL0: RGSR_EL1 = 0 (seed 0) gives tag 0
    assert v.pc == VEC + 0x400 + 4 and uc.reg_read(UC_ARM64_REG_ESR_EL1) == 0x0200_0000   # LDGM: UNDEFINED
    assert uc.reg_read(UC_ARM64_REG_ELR_EL1) == EL0_CODE + 8


DC_GVA_X2, DC_ZVA_X2, SCTLR_DZE = 0xD50B7462, 0xD50B7422, 1 << 14


def _el0(word, dze):
    """EL1 ERETs to EL0 (MMU off) which runs `word` then `b .`."""
    from unicorn.arm64_const import UC_ARM64_REG_ELR_EL1
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=16 << 20, mte=True)
    vm.load_code(CODE, (0xD69F03E0).to_bytes(4, "little"))                                 # eret
    vm.load_code(EL0_CODE, word.to_bytes(4, "little") + B_SELF.to_bytes(4, "little"))
    vm.load_code(VEC, (NOP.to_bytes(4, "little") + B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0") * 16,
                 entry=CODE)
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    sctlr = uc.cpr_read(3, 0, 1, 0, 0) & ~SCTLR_DZE | (SCTLR_DZE if dze else 0) | SCTLR_ATA0
    uc.cpr_write(3, 0, 1, 0, 0, sctlr)
    uc.reg_write(UC_ARM64_REG_VBAR_EL1, VEC)
    uc.cpr_write(3, 0, 4, 0, 0, 0)                                        # SPSR_EL1: EL0t
    uc.reg_write(UC_ARM64_REG_ELR_EL1, EL0_CODE)
    uc.reg_write(UC_ARM64_REG_X2, 0x4020_0000)
    m.run(max_insns=200)
    return v, uc.reg_read(UC_ARM64_REG_ESR_EL1), uc.reg_read(UC_ARM64_REG_ELR_EL1)


def test_dc_gva_at_el0_traps_as_dc_zva_does():
    """SCTLR_EL1.DZE = 0: DC GVA at EL0 is trapped to EL1 with EC 0x18 (QEMU 7.2 aa64_zva_access; the Arm ARM's
    DC GVA pseudocode), the syndrome Unicorn gives DC ZVA there but for op2; DZE = 1: it executes."""
    v, esr_zva, _ = _el0(DC_ZVA_X2, dze=False)
    assert v.pc == VEC + 0x400 + 4 and esr_zva >> 26 == 0x18                 # Unicorn's own DC ZVA trap
    v, esr, elr = _el0(DC_GVA_X2, dze=False)
    assert v.pc == VEC + 0x400 + 4 and elr == EL0_CODE
    assert esr == (esr_zva & ~(7 << 17)) | 3 << 17                           # op2: ZVA 1, GVA 3
    v, _esr, _elr = _el0(DC_GVA_X2, dze=True)
    assert v.pc == EL0_CODE + 4
