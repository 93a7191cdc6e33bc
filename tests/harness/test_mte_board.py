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
    assert "-machine mte=maybe: not modelled (gic-version=, virtualization=, mte=)" in capsys.readouterr().err


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
    (0x3000_0000, 0x9600_0050, 0x3000_0000),          # no memory at the IPA: synchronous external abort, WnR
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
    """guest mte_insns ends with SCTLR_EL1.TCF = 0: its tagged pages are unprotected again; 4 sync faults."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(mte=True)
    vm.load(str(guest_elf("mte_insns")))
    assert m.run(timeout=60).exit_code == 0
    mte = vm.vcpus[0].mte
    assert len(vm.tags.pages) == 8 and mte.faults == 4 and not mte.armed and mte._pages == {}


STZG_X1_X2, STGP_X1_X3_X2 = 0xD9600841, 0x69000C41                     # stzg x1, [x2]; stgp x1, x3, [x2]


@pytest.mark.parametrize("word", [STZG_X1_X2, STGP_X1_X3_X2])
def test_tag_stores_with_data_to_a_device(word):
    """MMU off, the PL011 at 0x0900_0000: the data goes to the device in doublewords, no traceback; at the last
    granule of its window (4 KiB) too."""
    _m, v = _raw([word], x2=0x0900_0000)
    assert v.pc == CODE + 4
    _m, v = _raw([word], x2=0x0900_0FF0)
    assert v.pc == CODE + 4
