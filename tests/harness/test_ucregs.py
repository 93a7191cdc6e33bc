"""harness/ucregs.py: the direct library calls read and write what the binding's public API does, for core
registers and system registers mixed in one batch, and the arrays they use outlive the object that made them."""
import gc

import pytest
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_X0, UC_ARM64_REG_X30

from harness.ucregs import RegBatch, RegWriter, fast_path_available

TCR_EL1, TTBR1_EL1, SCTLR_EL2 = (3, 0, 2, 0, 2), (3, 0, 2, 0, 1), (3, 4, 1, 0, 0)
REGS = (UC_ARM64_REG_PC, TCR_EL1, UC_ARM64_REG_X0, TTBR1_EL1, UC_ARM64_REG_PSTATE, SCTLR_EL2, UC_ARM64_REG_X30)


@pytest.fixture
def uc():
    u = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    u.reg_write(UC_ARM64_REG_X0, 0x1122_3344_5566_7788)
    u.reg_write(UC_ARM64_REG_X30, 0xFFFF_FFFF_FFFF_FFF0)
    u.reg_write(UC_ARM64_REG_PC, 0x4008_0000)
    u.cpr_write(*TCR_EL1, 0x35_8059_3519)
    u.cpr_write(*TTBR1_EL1, 0x0001_0000_4010_0000)
    return u


def test_fast_path_is_used_with_unicorn_2_1(uc):
    assert fast_path_available(uc)


@pytest.mark.parametrize("fast", [True, False])
def test_batch_reads_what_the_binding_reads(uc, fast):
    expect = tuple(uc.reg_read(r) if isinstance(r, int) else uc.cpr_read(*r) for r in REGS)
    assert expect[0] == 0x4008_0000 and expect[1] == 0x35_8059_3519 and expect[6] == 0xFFFF_FFFF_FFFF_FFF0
    assert RegBatch(uc, REGS, fast=fast).read() == expect
    b = RegBatch(uc, REGS, fast=fast)
    uc.reg_write(UC_ARM64_REG_X0, 7)
    uc.cpr_write(*TTBR1_EL1, 0x4020_0000)
    assert b.read()[2:4] == (7, 0x4020_0000)             # read again: current values, not the first ones


@pytest.mark.parametrize("fast", [True, False])
def test_writer_writes_one_or_several(uc, fast):
    RegWriter(uc, UC_ARM64_REG_SP, fast=fast).write(0x4800_0000)
    RegWriter(uc, (UC_ARM64_REG_X0, UC_ARM64_REG_PC), fast=fast).write((1 << 64) - 1, 0x4000_1000)
    assert uc.reg_read_batch([UC_ARM64_REG_SP, UC_ARM64_REG_X0, UC_ARM64_REG_PC]) == \
        (0x4800_0000, (1 << 64) - 1, 0x4000_1000)


def test_closures_keep_their_buffers(uc):
    read = RegBatch(uc, REGS).read           # the object goes away; the C call must still have valid memory
    write = RegWriter(uc, (UC_ARM64_REG_X0, UC_ARM64_REG_X30)).write
    gc.collect()
    for _ in range(1000):
        write(5, 6)
        assert read()[2] == 5 and read()[6] == 6
