"""The VMSAv8-64 walker (devmodel/vmsa.py): TxSZ bounds per granule, fault values, descriptor location, and the
SMMU adapter's mapping of its faults. The walk itself is covered through the SMMU by
tests/devmodel/smmuv3/test_walk*.py and against Unicorn's MMU by tests/harness/test_walk_agreement.py."""
from __future__ import annotations

from dataclasses import replace

import pytest

from devmodel.bus import Bus
from devmodel.pagetable import PERM_R, PageAllocator, PageTableBuilder, pte_s1, pte_table
from devmodel.smmuv3.config import S1Cfg, S2Cfg
from devmodel.smmuv3.fault import EventType, FaultClass
from devmodel.smmuv3.walk import WalkFault
from devmodel.smmuv3.walk import walk_s1 as smmu_walk_s1
from devmodel.smmuv3.walk import walk_s2 as smmu_walk_s2
from devmodel.vmsa import (FaultKind, Leaf, S1Regime, S2Regime, VmsaFault, max_tsz, start_level, walk_s1, walk_s2,
                           walk_tables)

RAM = 0x4000_0000


def _env(granule: int, ias: int):
    bus = Bus()
    bus.add_ram(RAM, 16 << 20)
    b = PageTableBuilder(bus, PageAllocator(bus, RAM + (8 << 20), 8 << 20), granule=granule, ias=ias)
    return bus, b


def test_max_tsz_per_granule():
    """AArch64.MaxTxSZ / IHI 0070 5.4 CD.T0SZ: with FEAT_TTST (SMMU_IDR3.STT) 48 for 4K and 16K, 47 for 64K
    (a 64K granule resolves 16 bits, so a 16-bit input leaves no level to walk); 39 without."""
    assert [max_tsz(g) for g in (4096, 16384, 65536)] == [48, 48, 47]
    assert {max_tsz(g, ttst=False) for g in (4096, 16384, 65536)} == {39}
    assert start_level(64 - 47, 16) == 3 and start_level(64 - 48, 12) == 3 and start_level(64 - 48, 14) == 3


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_smallest_input_size_walks_one_level_and_the_next_one_faults(granule):
    tsz = max_tsz(granule)
    bus, b = _env(granule, 64 - tsz)
    assert b.start == 3
    va = (1 << (64 - tsz)) - granule                     # the last page of the range
    b.map(va, RAM + granule, granule, level=3)
    leaf = walk_s1(S1Regime(b.ttb, t0sz=tsz, tg0=granule), va + 8, bus.read64)
    assert type(leaf) is Leaf and (leaf.oa, leaf.level, leaf.size) == (RAM + granule + 8, 3, granule)
    f = walk_s1(S1Regime(b.ttb, t0sz=tsz + 1, tg0=granule), 8, bus.read64)
    assert type(f) is VmsaFault and f.kind is FaultKind.TRANSLATION and f.level == 0 and f.desc is None
    assert "unusable" in f.reason


def test_64k_t0sz_48_is_a_translation_fault_through_the_smmu_walk():
    """Formerly a 64K walk with T0SZ=48 started at level 4 and returned an 8-byte leaf."""
    bus, b = _env(65536, 17)
    b.map(0, RAM, 0x10000, level=3)
    cfg = S1Cfg(ttb0=b.ttb, ttb1=0, t0sz=48, t1sz=48, tg0=65536, tg1=65536, epd0=False, epd1=True, ips=48, asid=0,
                aset=False, affd=False)
    f = smmu_walk_s1(cfg, 0, bus.read64)            # the descriptor at index 0 is a valid page descriptor
    assert type(f) is WalkFault and f.type == EventType.F_TRANSLATION and not f.stage2
    s2 = S2Cfg(vmid=1, vttb=b.ttb, t0sz=48, sl0=0, tg=65536, ps=48)
    f2 = smmu_walk_s2(s2, 8, bus.read64)
    assert type(f2) is WalkFault and f2.type == EventType.F_TRANSLATION and f2.stage2 and f2.ipa == 8
    leaf = smmu_walk_s1(replace(cfg, t0sz=47), 8, bus.read64)                # the largest usable value walks
    assert type(leaf) is Leaf and leaf.oa == RAM + 8 and leaf.level == 3


def test_fault_values_name_the_descriptor_and_the_status_code():
    bus, b = _env(4096, 48)
    b.map(0x1000, RAM, 0x1000, af=False)
    b.set_pte(0x4000_0000, 1, pte_table(0x7_0000_0000))          # next table where nothing is mapped
    b.set_pte(0x2000, 3, pte_s1(RAM, 3) & ~2)                      # reserved level-3 encoding
    r = S1Regime(b.ttb)
    af = walk_s1(r, 0x1000, bus.read64)
    ref = b.walk(0x1000)
    assert (af.kind, af.level, af.addr, af.desc, af.fsc) == (FaultKind.ACCESS_FLAG, 3, ref.addr, ref.value, 0b001011)
    ea = walk_s1(r, 0x4000_0000, bus.read64)
    assert (ea.kind, ea.level, ea.addr, ea.desc, ea.fsc) == (FaultKind.EXTERNAL_ABORT, 2, 0x7_0000_0000, None,
                                                              0b010110)
    rsv = walk_s1(r, 0x2000, bus.read64)
    assert (rsv.kind, rsv.level, rsv.fsc) == (FaultKind.TRANSLATION, 3, 0b000111)
    assert walk_s1(S1Regime(b.ttb, ips=32), 0x4000_0000, bus.read64).kind is FaultKind.ADDRESS_SIZE
    smmu = smmu_walk_s1(S1Cfg(ttb0=b.ttb, ttb1=0, t0sz=16, t1sz=16, tg0=4096, tg1=4096, epd0=False, epd1=True,
                              ips=48, asid=0, aset=False, affd=False), 0x4000_0000, bus.read64)
    assert (smmu.type, smmu.cls, smmu.level, smmu.ipa) == (EventType.F_WALK_EABT, FaultClass.TT, 2, 0x7_0000_0000)


def test_walk_tables_locates_descriptors_for_both_stages():
    bus, b = _env(4096, 39)
    b.map(0x20_0000, RAM, 0x20_0000)                               # a 2M block at level 2
    leaf = walk_tables(bus.read64, 0x20_1234, b.ttb, b.start, 39 - 30, 12, af_ok=True)
    assert type(leaf) is Leaf and leaf.level == 2 and leaf.addr == b.walk(0x20_1234).addr
    assert leaf.oa == RAM + 0x1234 and leaf.perm_priv == leaf.perm_user == 0   # no perms asked for
    miss = walk_tables(bus.read64, 0x40_0000, b.ttb, b.start, 39 - 30, 12)
    assert type(miss) is VmsaFault and miss.desc == 0 and miss.addr == b.walk(0x40_0000).addr
    bus2 = Bus()
    bus2.add_ram(RAM, 16 << 20)
    s2 = PageTableBuilder(bus2, PageAllocator(bus2, RAM + (8 << 20), 8 << 20), stage=2, ias=40, start=1)
    s2.map(0x1000, RAM + 0x3000, 0x1000, PERM_R)
    leaf2 = walk_s2(S2Regime(s2.ttb, s2.tsz, s2.sl0), 0x1010, bus2.read64)
    assert type(leaf2) is Leaf and leaf2.oa == RAM + 0x3010 and leaf2.global_ and leaf2.addr == s2.walk(0x1010).addr
    assert s2.translate(0x1010) == RAM + 0x3010 and s2.translate(0x2000) is None


def test_builder_translate_is_none_where_the_architecture_faults():
    bus, b = _env(4096, 48)
    b.set_pte(0x5000, 3, pte_s1(RAM, 3) & ~2)                      # reserved: a translation fault
    b.map(0x6000, RAM, 0x1000, af=False)                           # AF=0: the builder ignores access flags
    assert b.translate(0x5000) is None and b.walk(0x5000).level == 3
    assert b.translate(0x6008) == RAM + 8
