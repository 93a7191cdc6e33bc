"""Every register of the model (IHI 0070 chapter 6): reset value and access type (what a write of all-ones
leaves behind while nothing locks the register, and that the lock the spec describes makes it read-only).

Field masks are written here from Linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h (ARM_SMMU_* offsets,
STRTAB_BASE_ADDR_MASK GENMASK_ULL(51, 6), STRTAB_BASE_RA (1UL << 62), STRTAB_BASE_CFG_FMT GENMASK(17, 16),
STRTAB_BASE_CFG_LOG2SIZE GENMASK(5, 0), Q_BASE_ADDR_MASK GENMASK_ULL(51, 5), Q_BASE_RWA (1UL << 62),
Q_BASE_LOG2SIZE GENMASK(4, 0), MSI_CFG0_ADDR_MASK GENMASK_ULL(51, 2), MSI_CFG2_SH GENMASK(5, 4),
MSI_CFG2_MEMATTR GENMASK(3, 0), CR1_{TABLE,QUEUE}_{SH,OC,IC} GENMASK(11, 0) together, IRQ_CTRL_EVTQ_IRQEN
(1 << 2), IRQ_CTRL_GERROR_IRQEN (1 << 0), Q_OVERFLOW_FLAG (1U << 31), CMDQ_CONS_ERR GENMASK(30, 24)) and
IHI 0070 6.3 (STRTAB_BASE_CFG.SPLIT [10:6], queue index fields [19:0], STATUSR/IDR2/IDR4 read-only)."""
from __future__ import annotations

import pytest

from devmodel.smmuv3.regs import SmmuFeatures

from .bench import Bench

ONES = {4: 0xFFFF_FFFF, 8: 2**64 - 1}

# name: (offset, size, reset with the default SmmuFeatures, value read back after writing all-ones)
REGS = {
    "IDR2":            (0x08, 4, 0, 0),                                 # RO (BA_VATOS: no VATOS)
    "IDR4":            (0x10, 4, 0, 0),                                 # RO, IMPLEMENTATION DEFINED
    "IIDR":            (0x18, 4, 0x43B, 0x43B),                         # RO, Arm implementer code
    "AIDR":            (0x1C, 4, 0x02, 0x02),                           # RO, SMMUv3.2
    "CR0ACK":          (0x24, 4, 0, 0),                                 # RO (CR0 writes set it)
    "CR1":             (0x28, 4, 0, 0xFFF),                             # RW while SMMUEN=0
    "CR2":             (0x2C, 4, 0, 0b011),                             # E2H|RECINVSID; PTM RES0 (BTM=0)
    "STATUSR":         (0x40, 4, 0, 0),                                 # RO
    "IRQ_CTRL":        (0x50, 4, 0, 0b101),                             # PRIQ_IRQEN RES0 without PRI
    "IRQ_CTRLACK":     (0x54, 4, 0, 0),                                 # RO
    "GERROR":          (0x60, 4, 0, 0),                                 # RO
    "GERROR_IRQ_CFG0": (0x68, 8, 0, 0x000F_FFFF_FFFF_FFFC),
    "GERROR_IRQ_CFG1": (0x70, 4, 0, 0xFFFF_FFFF),
    "GERROR_IRQ_CFG2": (0x74, 4, 0, 0x3F),
    "STRTAB_BASE":     (0x80, 8, 0, 0x000F_FFFF_FFFF_FFC0 | 1 << 62),
    "STRTAB_BASE_CFG": (0x88, 4, 0, 0x3_07FF),
    "CMDQ_BASE":       (0x90, 8, 0, 0x000F_FFFF_FFFF_FFE0 | 1 << 62 | 0x1F),
    "CMDQ_PROD":       (0x98, 4, 0, 0xF_FFFF),                          # CMDQEN=0: not consumed
    "CMDQ_CONS":       (0x9C, 4, 0, 0x7F0F_FFFF),                       # RD + ERR, RW while CMDQEN=0
    "EVTQ_BASE":       (0xA0, 8, 0, 0x000F_FFFF_FFFF_FFE0 | 1 << 62 | 0x1F),
    "EVTQ_IRQ_CFG0":   (0xB0, 8, 0, 0x000F_FFFF_FFFF_FFFC),
    "EVTQ_IRQ_CFG1":   (0xB8, 4, 0, 0xFFFF_FFFF),
    "EVTQ_IRQ_CFG2":   (0xBC, 4, 0, 0x3F),
    "EVTQ_PROD":       (0x100A8, 4, 0, 0x800F_FFFF),                    # WR + OVFLG, RW while EVTQEN=0
    "EVTQ_CONS":       (0x100AC, 4, 0, 0x800F_FFFF),                    # RD + OVACKFLG
}


@pytest.mark.parametrize("name", REGS)
def test_reset_value_and_access(name: str) -> None:
    off, size, reset, ones = REGS[name]
    b = Bench()
    assert b.smmu.read(off, size) == reset, name
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == ones, name
    if size == 8:                                   # and the same through the 32-bit halves
        c = Bench()
        c.w32(off, 0xFFFF_FFFF)
        c.w32(off + 4, 0xFFFF_FFFF)
        assert c.r64(off) == ones and c.r32(off + 4) == ones >> 32, name


def test_other_features_change_resets_and_access() -> None:
    b = Bench(SmmuFeatures(btm=True, hyp=False, msi=False, st_level_2=False))
    assert b.r32(0x2C) == 0b100                     # CR2.PTM resets to 1 (documented pick), E2H RES0
    b.w32(0x2C, 0xFFFF_FFFF)
    assert b.r32(0x2C) == 0b110
    b.w32(0x88, 0xFFFF_FFFF)
    assert b.r32(0x88) == 0x7FF                     # FMT RES0 without 2-level stream tables
    for off, size in ((0x68, 8), (0x70, 4), (0x74, 4), (0xB0, 8), (0xB8, 4), (0xBC, 4)):
        b.smmu.write(off, ONES[size], size)         # MSI configuration registers RES0 without IDR0.MSI
        assert b.smmu.read(off, size) == 0
    assert Bench(SmmuFeatures(gbpa_abort=True)).r32(0x44) == 1 << 20 | 1 << 12
    assert Bench(SmmuFeatures(iidr=0x1234_543B, aidr=0x01)).r32(0x18) == 0x1234_543B


# register -> (lock register value to write, its offset): IHI 0070 6.3 "RO when ..." rules
LOCKS = [
    ("CR1", 0x20, 0b0001), ("CR2", 0x20, 0b0001), ("STRTAB_BASE", 0x20, 0b0001),
    ("STRTAB_BASE_CFG", 0x20, 0b0001), ("CMDQ_BASE", 0x20, 0b1000), ("CMDQ_CONS", 0x20, 0b1000),
    ("EVTQ_BASE", 0x20, 0b0100), ("EVTQ_PROD", 0x20, 0b0100),
    ("GERROR_IRQ_CFG0", 0x50, 0b001), ("GERROR_IRQ_CFG1", 0x50, 0b001), ("GERROR_IRQ_CFG2", 0x50, 0b001),
    ("EVTQ_IRQ_CFG0", 0x50, 0b100), ("EVTQ_IRQ_CFG1", 0x50, 0b100), ("EVTQ_IRQ_CFG2", 0x50, 0b100),
]


@pytest.mark.parametrize("name,lock_off,lock_val", LOCKS, ids=[x[0] for x in LOCKS])
def test_registers_are_read_only_while_locked(name: str, lock_off: int, lock_val: int) -> None:
    off, size, _, ones = REGS[name]
    b = Bench()
    b.w32(lock_off, lock_val)
    before = b.smmu.read(off, size)
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == before, name
    b.w32(lock_off, 0)                              # unlocked again: writable
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == ones, name


def test_always_writable_queue_pointers() -> None:
    """EVTQ_CONS belongs to software: writable while the event queue is enabled (OVACKFLG included)."""
    b = Bench().setup()
    b.w32(0x100AC, 1 << 31)
    assert b.r32(0x100AC) == 1 << 31
    b.w32(0x100AC, 0)
    assert b.r32(0x100AC) == 0


# with IDR0.PRI=1 (and ATS): the PRI queue registers (Linux ARM_SMMU_PRIQ_BASE 0xc0, PRIQ_PROD/CONS 0xc8/0xcc on
# page 1, PRIQ_IRQ_CFG0/1/2 0xd0/0xd8/0xdc; Q_BASE_*, MSI_CFG*, Q_OVERFLOW_FLAG as above), CR0.PRIQEN (1 << 1)
# and IRQ_CTRL.PRIQ_IRQEN (1 << 1), CR0.ATSCHK (1 << 4) with ATS
PRI = SmmuFeatures(ats=True, pri=True)
PRI_REGS = {
    "PRIQ_BASE":       (0xC0, 8, 0, 0x000F_FFFF_FFFF_FFE0 | 1 << 62 | 0x1F),
    "PRIQ_IRQ_CFG0":   (0xD0, 8, 0, 0x000F_FFFF_FFFF_FFFC),
    "PRIQ_IRQ_CFG1":   (0xD8, 4, 0, 0xFFFF_FFFF),
    "PRIQ_IRQ_CFG2":   (0xDC, 4, 0, 0x3F),
    "PRIQ_PROD":       (0x100C8, 4, 0, 0x800F_FFFF),
    "PRIQ_CONS":       (0x100CC, 4, 0, 0x800F_FFFF),
    "IRQ_CTRL":        (0x50, 4, 0, 0b111),
}


@pytest.mark.parametrize("name", PRI_REGS)
def test_pri_registers_reset_value_and_access(name: str) -> None:
    off, size, reset, ones = PRI_REGS[name]
    b = Bench(PRI)
    assert b.smmu.read(off, size) == reset, name
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == ones, name
    assert Bench().smmu.read(off, size) == 0                          # without PRI: RAZ (IRQ_CTRL: reset)


@pytest.mark.parametrize("name,lock_off,lock_val", [("PRIQ_BASE", 0x20, 0b10), ("PRIQ_PROD", 0x20, 0b10),
                                                    ("PRIQ_IRQ_CFG0", 0x50, 0b010), ("PRIQ_IRQ_CFG1", 0x50, 0b010),
                                                    ("PRIQ_IRQ_CFG2", 0x50, 0b010)])
def test_pri_registers_are_read_only_while_locked(name: str, lock_off: int, lock_val: int) -> None:
    off, size, _, ones = PRI_REGS[name]
    b = Bench(PRI)
    b.w32(lock_off, lock_val)
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == 0, name
    b.w32(lock_off, 0)
    b.smmu.write(off, ONES[size], size)
    assert b.smmu.read(off, size) == ones, name


def test_cr0_priqen_and_atschk_with_pri_and_ats() -> None:
    b = Bench(PRI)
    b.w32(0x20, 0xFFFF_FFFF)
    assert b.r32(0x20) == b.r32(0x24) == 0b11111      # SMMUEN PRIQEN EVTQEN CMDQEN ATSCHK
    b.w32(0x100CC, 1 << 31)                             # PRIQ_CONS is software's: writable while enabled
    assert b.r32(0x100CC) == 1 << 31
