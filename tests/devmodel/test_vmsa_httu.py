"""Hardware updates of descriptors in the walker (devmodel/vmsa.py `Httu`; DDI 0487 D8.5, FEAT_HAFDBS; IHI 0070
3.13): AF set on use, writable-clean -> writable-dirty on a permitted write, the compare-and-swap against a
concurrent change, and what is never updated (HA=0, HD without HA, writes the dirty descriptor would still
refuse), plus `Bus.cas64`."""
from __future__ import annotations

import pytest

from devmodel.bus import Bus, BusError
from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.vmsa import FaultKind, Httu, Leaf, S1Regime, S2Regime, VmsaFault, walk_s1, walk_s2

RAM = 0x4000_0000
AF, AP2, DBM = 1 << 10, 1 << 7, 1 << 51      # descriptor bits: AF, AP[2] (stage 1) / S2AP[1] (stage 2), DBM


def env(stage: int = 1):
    bus = Bus()
    bus.add_ram(RAM, 16 << 20)
    b = PageTableBuilder(bus, PageAllocator(bus, RAM + (8 << 20), 8 << 20), stage=stage,
                         ias=48 if stage == 1 else 40)
    return bus, b


def httu(bus: Bus, ha: bool = True, hd: bool = True, log: list | None = None) -> Httu:
    def cas(pa: int, old: int, new: int) -> int:
        if log is not None:
            log.append((pa, old, new))
        return bus.cas64(pa, old, new)
    return Httu(ha, hd, cas)


def s1(b: PageTableBuilder, **kw) -> S1Regime:
    return S1Regime(b.ttb, t0sz=b.tsz, epd1=True, **kw)


def test_cas64_swaps_only_on_a_match_and_never_on_mmio() -> None:
    bus = Bus()
    bus.add_ram(RAM, 4096)
    bus.write64(RAM, 5)
    assert bus.cas64(RAM, 4, 9) == 5 and bus.read64(RAM) == 5
    assert bus.cas64(RAM, 5, 9) == 5 and bus.read64(RAM) == 9
    with pytest.raises(BusError):
        bus.cas64(RAM + 4096, 0, 1)


def test_af_is_set_on_use_with_ha_and_faults_without() -> None:
    bus, b = env()
    b.map(0x1000, RAM, 0x1000, af=False)
    ref = b.walk(0x1000)
    f = walk_s1(s1(b), 0x1000, bus.read64, httu=httu(bus, ha=False, hd=False))
    assert type(f) is VmsaFault and f.kind is FaultKind.ACCESS_FLAG and bus.read64(ref.addr) == ref.value
    view = walk_s1(s1(b, ha=True), 0x1000, bus.read64)              # HA without an updater: a view, no write
    assert type(view) is Leaf and bus.read64(ref.addr) == ref.value
    leaf = walk_s1(s1(b, ha=True), 0x1000, bus.read64, httu=httu(bus))
    assert type(leaf) is Leaf and bus.read64(ref.addr) == ref.value | AF and leaf.desc & AF


def test_affd_never_updates() -> None:
    bus, b = env()
    b.map(0x1000, RAM, 0x1000, af=False)
    ref = b.walk(0x1000)
    log: list = []
    assert type(walk_s1(s1(b, affd=True), 0x1000, bus.read64, httu=httu(bus, ha=False, log=log))) is Leaf
    assert log == [] and bus.read64(ref.addr) == ref.value


def test_writable_clean_becomes_dirty_on_a_write_only() -> None:
    bus, b = env()
    b.map(0x2000, RAM, 0x1000, PERM_R)
    ref = b.update(0x2000, set_bits=DBM)                            # writable-clean: DBM=1, AP[2]=1
    rd = walk_s1(s1(b, ha=True), 0x2000, bus.read64, httu=httu(bus))
    assert rd.dbm and not rd.perm_priv & PERM_W and bus.read64(ref.addr) & AP2   # a read leaves it clean
    wr = walk_s1(s1(b, ha=True), 0x2000, bus.read64, httu=httu(bus), write=True, priv=True)
    assert not wr.dbm and wr.perm_priv & PERM_W and wr.perm_user & PERM_W
    assert bus.read64(ref.addr) == (ref.value | AF) & ~AP2          # writable-dirty


def test_ha_without_hd_never_sets_dirty_and_hd_without_ha_updates_nothing() -> None:
    bus, b = env()
    b.map(0x2000, RAM, 0x1000, PERM_R, af=False)
    ref = b.update(0x2000, set_bits=DBM)
    wr = walk_s1(s1(b, ha=True), 0x2000, bus.read64, httu=httu(bus, hd=False), write=True)
    assert not wr.dbm and not wr.perm_user & PERM_W and bus.read64(ref.addr) == ref.value | AF
    bus.write64(ref.addr, ref.value)
    log: list = []
    f = walk_s1(s1(b), 0x2000, bus.read64, httu=httu(bus, ha=False, hd=True, log=log), write=True)
    assert type(f) is VmsaFault and f.kind is FaultKind.ACCESS_FLAG and log == []


def test_a_write_the_dirty_descriptor_would_refuse_updates_nothing() -> None:
    """APTable[1]=1 (read-only below the table) and an EL1-only page written at EL0: no dirty update."""
    bus, b = env()
    b.map(0x3000, RAM, 0x1000, PERM_R, user=False)
    ref = b.update(0x3000, set_bits=DBM)
    wr = walk_s1(s1(b, ha=True), 0x3000, bus.read64, httu=httu(bus), write=True, priv=False)
    assert not wr.perm_user & PERM_W and bus.read64(ref.addr) & AP2              # EL0 may not write it anyway
    bus.write64(b.ttb, bus.read64(b.ttb) | (2 << 61))               # APTable[1]=1 in the level-0 entry
    wr = walk_s1(s1(b, ha=True), 0x3000, bus.read64, httu=httu(bus), write=True, priv=True)
    assert not wr.perm_priv & PERM_W and bus.read64(ref.addr) & AP2


def test_stage2_dirty_sets_s2ap_write() -> None:
    bus, b = env(stage=2)
    b.map(0x4000, RAM, 0x1000, PERM_R)
    ref = b.update(0x4000, set_bits=DBM)                            # S2AP[1]=0 + DBM: writable-clean
    reg = S2Regime(b.ttb, b.tsz, b.sl0, ha=True)
    rd = walk_s2(reg, 0x4000, bus.read64, httu=httu(bus))
    assert rd.dbm and not rd.perm_priv & PERM_W
    wr = walk_s2(reg, 0x4000, bus.read64, httu=httu(bus), write=True)
    assert wr.perm_priv & PERM_W and bus.read64(ref.addr) & AP2 and not wr.dbm


def test_a_concurrent_change_is_never_overwritten_and_the_walk_sees_it() -> None:
    """The CPU makes the page read-only (DBM=0) between the SMMU's read and its update: the compare-and-swap
    fails, the walk starts again, finds a read-only page and updates nothing."""
    bus, b = env()
    b.map(0x5000, RAM, 0x1000, PERM_R)
    ref = b.update(0x5000, set_bits=DBM)
    raced = []

    def cas(pa: int, old: int, new: int) -> int:
        if not raced:
            raced.append(pa)
            bus.write64(pa, old & ~DBM)                               # the CPU's store lands first
        return bus.cas64(pa, old, new)
    wr = walk_s1(s1(b, ha=True), 0x5000, bus.read64, httu=Httu(True, True, cas), write=True, priv=True)
    assert raced == [ref.addr] and type(wr) is Leaf and not wr.perm_priv & PERM_W
    assert bus.read64(ref.addr) == (ref.value & ~DBM) | AF           # the CPU's change kept, AF set


def test_a_descriptor_that_keeps_changing_faults_instead_of_looping() -> None:
    bus, b = env()
    b.map(0x6000, RAM, 0x1000, af=False)

    def cas(pa: int, old: int, new: int) -> int:
        bus.write64(pa, old ^ (1 << 55))                            # software bit flips every time
        return bus.cas64(pa, old, new)
    f = walk_s1(s1(b, ha=True), 0x6000, bus.read64, httu=Httu(True, True, cas))
    assert type(f) is VmsaFault and f.kind is FaultKind.TRANSLATION and "changed" in f.reason
