"""devmodel/pagetable.py: descriptor layouts (checked against Linux io-pgtable-arm.c masks) and the builder."""
from __future__ import annotations

import pytest

from devmodel.pagetable import (PERM_R, PERM_W, PERM_X, S1_LEAF, S1_TABLE, S2_LEAF, pte_s1, pte_s2, pte_table,
                                s2_sl0, s2_start_level, start_level)

from .xlat_env import RAM_BASE, Env

# Linux drivers/iommu/io-pgtable-arm.c
ARM_LPAE_PTE_TYPE_TABLE, ARM_LPAE_PTE_TYPE_PAGE, ARM_LPAE_PTE_TYPE_BLOCK = 3, 3, 1
ARM_LPAE_PTE_NSTABLE, ARM_LPAE_PTE_XN, ARM_LPAE_PTE_AF, ARM_LPAE_PTE_NG = 1 << 63, 3 << 53, 1 << 10, 1 << 11
ARM_LPAE_PTE_AP_UNPRIV, ARM_LPAE_PTE_AP_RDONLY = 1 << 6, 2 << 6
ARM_LPAE_PTE_HAP_READ, ARM_LPAE_PTE_HAP_WRITE = 1 << 6, 2 << 6
ARM_LPAE_PTE_SH_IS = 3 << 8


def test_layouts_match_linux_masks():
    assert S1_LEAF.by_name["af"].mask == ARM_LPAE_PTE_AF
    assert S1_LEAF.by_name["ng"].mask == ARM_LPAE_PTE_NG
    assert S1_LEAF.by_name["ap"].mask == ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_AP_RDONLY
    assert S1_LEAF.by_name["pxn"].mask | S1_LEAF.by_name["uxn"].mask == ARM_LPAE_PTE_XN
    assert S2_LEAF.by_name["s2ap"].mask == ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE
    assert S2_LEAF.by_name["xn"].mask == ARM_LPAE_PTE_XN
    assert S1_TABLE.by_name["nstable"].mask == ARM_LPAE_PTE_NSTABLE
    # the same PTE Linux builds for a non-global, RW, EL0 page with IS shareability
    linux = ARM_LPAE_PTE_TYPE_PAGE | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_NG | ARM_LPAE_PTE_AP_UNPRIV | \
        ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_XN | 0x4000_1000
    assert pte_s1(0x4000_1000, 3, PERM_R | PERM_W) == linux
    assert pte_s1(0x4000_0000, 2, PERM_R | PERM_W) & 3 == ARM_LPAE_PTE_TYPE_BLOCK
    assert pte_s2(0x1000, 3, PERM_R | PERM_W) & (3 << 6) == ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE
    assert pte_table(0x8000) == 0x8000 | ARM_LPAE_PTE_TYPE_TABLE


def test_start_levels():
    assert [start_level(ias, 12) for ias in (48, 39, 30, 21)] == [0, 1, 2, 3]
    assert [start_level(ias, 16) for ias in (48, 42, 29)] == [1, 2, 3]
    assert start_level(47, 14) == 1 and start_level(48, 14) == 0
    for g in (12, 14, 16):
        for lvl in range(0 if g == 12 else 1, 4):
            assert s2_start_level(s2_sl0(lvl, g), g) == lvl


def test_builder_map_split_unmap_update():
    env = Env()
    b = env.builder()
    b.map(0x4000_0000, RAM_BASE, 0x40_0000)             # two 2M blocks
    assert b.walk(0x4000_0000).level == 2
    assert b.translate(0x4030_0010) == RAM_BASE + 0x30_0010
    b.map(0x4000_1000, RAM_BASE + 0x100_0000, 0x1000, PERM_R)   # splits the first block
    assert b.walk(0x4000_1000).level == 3
    assert b.translate(0x4000_1008) == RAM_BASE + 0x100_0008
    assert b.translate(0x4000_2008) == RAM_BASE + 0x2008         # rest of the split block kept
    assert b.translate(0x4020_0000) == RAM_BASE + 0x20_0000
    b.unmap(0x4000_0000, 0x1000)
    assert b.translate(0x4000_0000) is None and b.translate(0x4000_3000) == RAM_BASE + 0x3000
    ref = b.update(0x4000_3000, clear_bits=1 << 10)
    assert not ref.value & (1 << 10)
    with pytest.raises(ValueError):
        b.map(0x123, 0, 0x1000)
    with pytest.raises(ValueError):
        b.map(1 << 48, 0, 0x1000)


def test_builder_stage2_concatenation():
    env = Env()
    b = env.builder(stage=2, ias=40, start=1)
    assert b.root_size == 2 * 4096 and b.sl0 == 1
    with pytest.raises(ValueError, match="concatenated"):
        env.builder(stage=2, ias=44, start=1)             # 32 tables: more than 16
    with pytest.raises(ValueError):
        env.builder(stage=1, ias=40, start=1)             # stage 1 cannot concatenate
    b.map(0xFF_FFFF_F000, RAM_BASE, 0x1000, PERM_R | PERM_X)
    assert b.translate(0xFF_FFFF_F010) == RAM_BASE + 0x10
