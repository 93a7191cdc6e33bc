"""VMSAv8-64 walks (devmodel/smmuv3/walk.py) through the translation core: every granule and start level,
blocks and pages, TTB1 selection, every fault type, stage 2 with concatenated tables, nested."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from devmodel.bus import BusError
from devmodel.pagetable import (PERM_R, PERM_W, PERM_X, S1_LEAF, S2_LEAF, level_shift, pte_s1, pte_table,
                                start_level)
from devmodel.smmuv3.config import CfgKind, StreamWorld, TransResult
from devmodel.smmuv3.fault import EventType, Fault, FaultClass
from devmodel.smmuv3.walk import Leaf, WalkFault, walk_s1, walk_s2

from .xlat_env import RAM_BASE, Env, cfg, s1, s2

GSHIFT = {4096: 12, 16384: 14, 65536: 16}


def _ias_for_level(granule: int, level: int) -> int:
    """Largest input size (<= 48) whose natural start level is `level`."""
    g = GSHIFT[granule]
    return min(48, g + (4 - level) * (g - 3))


def _cases():
    for gran in (4096, 16384, 65536):
        for level in range(0, 4):
            if gran != 4096 and level == 0 and _ias_for_level(gran, 0) > 48:
                continue
            ias = _ias_for_level(gran, level)
            if start_level(ias, GSHIFT[gran]) != level:
                continue            # e.g. 64K cannot start at level 0 with 48 bits
            yield gran, level, ias


@pytest.mark.parametrize("gran,level,ias", list(_cases()))
def test_s1_each_granule_and_start_level_pages_and_blocks(gran, level, ias):
    env = Env()
    b = env.builder(granule=gran, ias=ias)
    assert b.start == level
    c = cfg(CfgKind.S1, s1(b))
    va_page = (1 << ias) - 4 * gran            # near the top: exercises every index bit of the start level
    b.map(va_page, RAM_BASE + 0x20_0000, gran, PERM_R | PERM_W, level=3)
    r = env.core.translate(c, va_page + 0x18)
    assert isinstance(r, TransResult) and r.pa == RAM_BASE + 0x20_0018 and r.size == gran
    for blk_level in (1, 2):
        if blk_level < level or (blk_level == 1 and gran != 4096):
            continue
        bs = 1 << level_shift(blk_level, GSHIFT[gran])
        if bs > (1 << ias) // 2:
            continue
        va = bs                                 # second block of the space
        b.map(va, RAM_BASE, bs, level=blk_level) if bs <= (64 << 20) else b.map(va, 0x80_0000_0000, bs,
                                                                                 level=blk_level)
        out = RAM_BASE if bs <= (64 << 20) else 0x80_0000_0000
        r = env.core.translate(c, va + bs - 8)
        assert isinstance(r, TransResult), r
        assert (r.pa, r.size) == (out + bs - 8, bs)
    # an address above the input size is a translation fault
    f = env.core.translate(c, 1 << ias)
    assert isinstance(f, Fault) and f.type == EventType.F_TRANSLATION


def test_block_at_illegal_level_is_translation_fault():
    env = Env()
    b = env.builder(granule=65536, ias=48)        # 64K: level 1 block not allowed with 48-bit OA
    b.set_pte(0, 1, pte_s1(0, 1))
    f = env.core.translate(cfg(CfgKind.S1, s1(b)), 0x1234)
    assert isinstance(f, Fault) and f.type == EventType.F_TRANSLATION
    env = Env()
    b = env.builder(granule=4096, ias=48)         # 4K: level 0 block not allowed
    b.set_pte(0, 0, pte_s1(0, 0) & ~2)
    assert env.core.translate(cfg(CfgKind.S1, s1(b)), 0x1234).type == EventType.F_TRANSLATION
    env = Env()
    b = env.builder()
    b.set_pte(0, 3, pte_s1(RAM_BASE, 3) & ~2)     # level-3 descriptor with bit 1 clear: reserved
    assert env.core.translate(cfg(CfgKind.S1, s1(b)), 0x10).type == EventType.F_TRANSLATION


def test_ttb1_selection_by_va_and_epd():
    env = Env()
    lo = env.builder(ias=39)
    hi = env.builder(ias=39, granule=16384)
    lo.map(0x1000, RAM_BASE + 0x1000, 0x1000)
    top = (1 << 64) - (1 << 39)                    # lowest TTB1 address
    hi.map(top + 0x8000, RAM_BASE + 0x8000, 0x4000)
    c = cfg(CfgKind.S1, s1(lo, ttb1=hi))
    assert env.core.translate(c, 0x1010).pa == RAM_BASE + 0x1010
    r = env.core.translate(c, top + 0x8010)
    assert r.pa == RAM_BASE + 0x8010 and r.size == 0x4000
    # a VA in neither range: bits [63:39] neither all 0 nor all 1
    assert env.core.translate(c, 1 << 50).type == EventType.F_TRANSLATION
    assert env.core.translate(c, top - 0x1000).type == EventType.F_TRANSLATION
    # EPD1 stops walks through TTB1
    env2 = Env()
    lo2 = env2.builder(ias=39)
    hi2 = env2.builder(ias=39)
    hi2.map(top, RAM_BASE, 0x1000)
    c2 = cfg(CfgKind.S1, s1(lo2, ttb1=hi2, epd1=True))
    f = env2.core.translate(c2, top + 4)
    assert f.type == EventType.F_TRANSLATION and "EPD1" in f.reason
    # single-range world (EL2, E2H=0): only TTB0, a high VA faults
    c3 = cfg(CfgKind.S1, s1(lo, ttb1=hi), world=StreamWorld.EL2)
    assert env.core.translate(c3, top + 0x8010).type == EventType.F_TRANSLATION
    assert env.core.translate(c3, 0x1010).pa == RAM_BASE + 0x1010


def test_tbi_ignores_top_byte_only_when_enabled():
    env = Env()
    b = env.builder(ias=48)
    b.map(0x5000, RAM_BASE + 0x5000, 0x1000)
    tagged = (0x5A << 56) | 0x5008
    assert env.core.translate(cfg(CfgKind.S1, s1(b)), tagged).type == EventType.F_TRANSLATION
    c = cfg(CfgKind.S1, s1(b, tbi=1), sid=2)
    r = env.core.translate(c, tagged)
    assert r.pa == RAM_BASE + 0x5008 and not r.cached
    r = env.core.translate(c, (0x33 << 56) | 0x5010)        # another tag hits the same IOTLB entry
    assert r.pa == RAM_BASE + 0x5010 and r.cached
    assert env.core.translate(c, (0x33 << 56) | 0x5010, write=True).cached is True


def test_output_address_size_faults():
    env = Env()
    b = env.builder()
    b.map(0x1000, 1 << 40, 0x1000)                 # OA = 1 TB
    assert env.core.translate(cfg(CfgKind.S1, s1(b, ips=48)), 0x1000).pa == 1 << 40
    env2 = Env()
    b2 = env2.builder()
    b2.map(0x1000, 1 << 40, 0x1000)
    f = env2.core.translate(cfg(CfgKind.S1, s1(b2, ips=40)), 0x1000)
    assert f.type == EventType.F_ADDR_SIZE and not f.stage2
    # a table address above IPS is an address size fault too
    env3 = Env()
    b3 = env3.builder()
    b3.set_pte(0, 0, pte_table(1 << 44))
    assert env3.core.translate(cfg(CfgKind.S1, s1(b3, ips=40)), 0).type == EventType.F_ADDR_SIZE
    # descriptor bits [49:48] (OA bits only in LPA2 formats) are RES0 and ignored, as Unicorn's MMU does
    env4 = Env()
    b4 = env4.builder()
    b4.set_pte(0, 3, pte_s1(RAM_BASE, 3) | (3 << 48))
    assert env4.core.translate(cfg(CfgKind.S1, s1(b4)), 8).pa == RAM_BASE + 8


def test_access_flag_fault_unless_affd():
    env = Env()
    b = env.builder()
    b.map(0x1000, RAM_BASE, 0x1000, af=False)
    f = env.core.translate(cfg(CfgKind.S1, s1(b)), 0x1000)
    assert f.type == EventType.F_ACCESS
    assert env.core.stats["entries"] == 0          # faulting walks are not cached
    r = env.core.translate(cfg(CfgKind.S1, s1(b, affd=True), sid=3), 0x1000)
    assert isinstance(r, TransResult) and r.pa == RAM_BASE


def test_walk_external_abort():
    env = Env()
    b = env.builder()
    b.set_pte(0, 0, pte_table(0x10_0000_0000))   # next table in unmapped memory
    f = env.core.translate(cfg(CfgKind.S1, s1(b)), 0x1000)
    assert f.type == EventType.F_WALK_EABT and f.cls == FaultClass.TT and f.ipa == 0x10_0000_0000
    # TTB itself unmapped
    f = env.core.translate(cfg(CfgKind.S1, replace(s1(b), ttb0=0x20_0000_0000), sid=5), 0x1000)
    assert f.type == EventType.F_WALK_EABT and f.ipa == 0x20_0000_0000


@pytest.mark.parametrize("ap,user,priv_ok,user_ok", [
    (0, False, PERM_R | PERM_W, 0), (1, True, PERM_R | PERM_W, PERM_R | PERM_W),
    (2, False, PERM_R, 0), (3, True, PERM_R, PERM_R)])
def test_s1_permissions_ap(ap, user, priv_ok, user_ok):
    env = Env()
    b = env.builder()
    desc = (pte_s1(RAM_BASE, 3, PERM_R | PERM_W, user=True) & ~(3 << 6)) | (ap << 6)
    b.set_pte(0x1000, 3, desc)
    c = cfg(CfgKind.S1, s1(b))
    for priv, ok in ((True, priv_ok), (False, user_ok)):
        for write, need in ((False, PERM_R), (True, PERM_W)):
            r = env.core.translate(c, 0x1000, write=write, priv=priv)
            if ok & need:
                assert isinstance(r, TransResult)
            else:
                assert isinstance(r, Fault) and r.type == EventType.F_PERMISSION and not r.stage2
                assert r.rnw == (not write) and r.pnu == priv


def test_s1_execute_never_and_table_attributes_and_pan():
    env = Env()
    b = env.builder()
    b.map(0x1000, RAM_BASE, 0x1000, PERM_R | PERM_X, user=False)          # EL1 RO executable
    b.map(0x2000, RAM_BASE, 0x1000, PERM_R | PERM_W | PERM_X, user=True)  # EL0-writable: never priv-exec
    b.map(0x3000, RAM_BASE, 0x1000, PERM_R, uxn=True, pxn=False)
    c = cfg(CfgKind.S1, s1(b))
    assert isinstance(env.core.translate(c, 0x1000, exec_=True, priv=True), TransResult)
    # EL0 execution does not need EL0 read access (DDI 0487 AArch64.S1DirectBasePermissions: ux = !(UXN|UXNTable))
    assert isinstance(env.core.translate(c, 0x1000, exec_=True, priv=False), TransResult)
    assert env.core.translate(c, 0x1000, priv=False).type == EventType.F_PERMISSION
    assert env.core.translate(c, 0x2000, exec_=True, priv=True).type == EventType.F_PERMISSION
    assert isinstance(env.core.translate(c, 0x2000, exec_=True, priv=False), TransResult)
    assert env.core.translate(c, 0x3000, exec_=True, priv=False).type == EventType.F_PERMISSION
    assert isinstance(env.core.translate(c, 0x3000, exec_=True, priv=True), TransResult)
    # APTable[1] (bit 62) makes everything below read-only; APTable[0] removes EL0 access
    env2 = Env()
    b2 = env2.builder()
    b2.map(0x40_0000, RAM_BASE, 0x1000, PERM_R | PERM_W, user=True)
    ref = None                 # the level-1 table descriptor on the way to 0x40_0000 gets APTable = 0b11
    table = b2.ttb
    for level in range(0, 2):
        addr = table + 8 * ((0x40_0000 >> level_shift(level, 12)) & 511)
        d = env2.bus.read64(addr)
        ref = addr
        table = d & ((1 << 48) - 1) & ~0xFFF
    env2.bus.write64(ref, env2.bus.read64(ref) | (3 << 61))
    c2 = cfg(CfgKind.S1, s1(b2))
    assert env2.core.translate(c2, 0x40_0000, write=True, priv=True).type == EventType.F_PERMISSION
    assert isinstance(env2.core.translate(c2, 0x40_0000, priv=True), TransResult)
    assert env2.core.translate(c2, 0x40_0000, priv=False).type == EventType.F_PERMISSION
    # PAN: privileged data access to EL0-accessible memory fails
    env3 = Env()
    b3 = env3.builder()
    b3.map(0x1000, RAM_BASE, 0x1000, PERM_R, user=True)
    assert env3.core.translate(cfg(CfgKind.S1, s1(b3, pan=True)), 0x1000, priv=True).type == \
        EventType.F_PERMISSION
    assert isinstance(env3.core.translate(cfg(CfgKind.S1, s1(b3, pan=True), sid=9), 0x1000, priv=False),
                      TransResult)


# -- stage 2 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gran,ias,start", [
    (4096, 40, 1),          # 2 concatenated level-1 tables
    (4096, 42, 1),          # 8 concatenated
    (4096, 48, 0),          # natural 4-level
    (4096, 39, 1), (4096, 30, 2),
    (16384, 40, 2),         # 16K: 40 bits from level 2 = 8 concatenated? (36 bits per level-1 entry span)
    (16384, 47, 1),
    (65536, 42, 2),         # 64K: level 2 with 1 table
    (65536, 46, 2),         # 64K: 16 concatenated level-2 tables
    (65536, 48, 1),
])
def test_s2_start_levels_and_concatenation(gran, ias, start):
    env = Env()
    b = env.builder(stage=2, granule=gran, ias=ias, start=start)
    top = (1 << ias) - gran
    b.map(top, RAM_BASE + 0x10_0000, gran)
    b.map(0, RAM_BASE, gran)
    c = cfg(CfgKind.S2, None, s2(b))
    assert env.core.translate(c, top + 0x10).pa == RAM_BASE + 0x10_0010
    assert env.core.translate(c, 0x10).pa == RAM_BASE + 0x10
    f = env.core.translate(c, 1 << ias)
    assert f.type == EventType.F_TRANSLATION and f.stage2 and f.ipa == 1 << ias


def test_s2_inconsistent_sl0_faults():
    env = Env()
    b = env.builder(stage=2, granule=4096, ias=40, start=1)
    f = env.core.translate(cfg(CfgKind.S2, None, replace(s2(b), sl0=0)), 0)   # level 2: 2^10 tables
    assert f.type == EventType.F_TRANSLATION and f.stage2
    b64 = env.builder(stage=2, granule=65536, ias=42)
    bad = replace(s2(b64), sl0=3)                   # reserved with 64K
    assert env.core.translate(cfg(CfgKind.S2, None, bad, sid=2), 0).type == EventType.F_TRANSLATION


def test_s2_permissions_access_flag_and_sizes():
    env = Env()
    b = env.builder(stage=2, ias=40, start=1)
    b.map(0x1000, RAM_BASE, 0x1000, PERM_R)
    b.map(0x2000, RAM_BASE, 0x1000, PERM_W)
    b.map(0x3000, RAM_BASE, 0x1000, PERM_R | PERM_W, af=False)
    b.map(0x4000, 1 << 42, 0x1000)
    c = cfg(CfgKind.S2, None, s2(b, ps=40))
    assert isinstance(env.core.translate(c, 0x1000), TransResult)
    f = env.core.translate(c, 0x1000, write=True)
    assert f.type == EventType.F_PERMISSION and f.stage2 and f.ipa == 0x1000 and f.cls == FaultClass.IN
    assert env.core.translate(c, 0x2000).type == EventType.F_PERMISSION
    assert env.core.translate(c, 0x3000).type == EventType.F_ACCESS
    assert env.core.translate(c, 0x4000).type == EventType.F_ADDR_SIZE
    assert env.core.translate(c, 0x1000, exec_=True).type == EventType.F_PERMISSION   # XN by default


# -- nested --------------------------------------------------------------------------------------------------

class Nested:
    """A guest whose IPA space [0, 32M) is RAM at RAM_BASE+0x100_0000 shifted (stage 2 maps IPA x -> PA
    RAM_BASE + 16M + x), stage-1 tables built *in IPA space* (written through the stage-2 mapping)."""

    def __init__(self, gran: int = 4096):
        self.env = Env()
        self.s2b = self.env.builder(stage=2, ias=40, start=1)
        self.off = RAM_BASE + (16 << 20)
        self.s2b.map(0, self.off, 16 << 20)
        bus = self.env.bus
        off = self.off

        class IpaMem:
            def read(self, a, size=8):
                return bus.read(a + off, size)

            def write(self, a, v, size=8):
                bus.write(a + off, v, size)

            def write_bytes(self, a, data):
                bus.write_bytes(a + off, data)
        from devmodel.pagetable import PageAllocator, PageTableBuilder
        self.ipamem = IpaMem()
        alloc = PageAllocator(self.ipamem, 8 << 20, 8 << 20)      # guest tables at IPA 8M..16M
        self.s1b = PageTableBuilder(self.ipamem, alloc, granule=gran, ias=48)
        self.cfg = cfg(CfgKind.NESTED, s1(self.s1b, asid=7), s2(self.s2b, vmid=3))


def test_nested_translation_and_table_pages_mapped_elsewhere():
    n = Nested()
    n.s1b.map(0x7000_0000, 0x30_0000, 0x1000)     # VA -> IPA 3M
    r = n.env.core.translate(n.cfg, 0x7000_0010)
    assert isinstance(r, TransResult) and r.pa == n.off + 0x30_0010
    # The stage-1 tables are at IPAs 8M+: a walk that used them as PAs would read zeros at RAM_BASE+8M
    assert n.env.bus.read64(RAM_BASE + (8 << 20)) == 0
    # a stage-1-only config with the same tables (read as PAs) cannot translate
    c1 = cfg(CfgKind.S1, s1(n.s1b, asid=7), sid=9)
    assert isinstance(n.env.core.translate(c1, 0x7000_0010), Fault)


def test_nested_faults_carry_stage_class_and_ipa():
    n = Nested()
    n.s1b.map(0x1000, 0x30_0000, 0x1000)
    n.s1b.map(0x2000, 0x200_0000, 0x1000)          # IPA 32M: outside what stage 2 maps
    n.s1b.map(0x3000, 0x31_0000, 0x1000, PERM_R)
    core = n.env.core
    f = core.translate(n.cfg, 0x2008)
    assert f.type == EventType.F_TRANSLATION and f.stage2 and f.cls == FaultClass.IN and f.ipa == 0x200_0008
    f = core.translate(n.cfg, 0x3000, write=True)  # stage-1 read-only: S1 permission fault
    assert f.type == EventType.F_PERMISSION and not f.stage2
    f = core.translate(n.cfg, 0x5000)              # stage-1 translation fault
    assert f.type == EventType.F_TRANSLATION and not f.stage2
    # unmap the stage-2 page holding the stage-1 level-3 table: S2 fault on a table walk (CLASS=TT)
    l3 = n.s1b.walk(0x1000).addr & ~0xFFF
    n.s2b.unmap(l3, 0x1000)
    core.flush()
    f = core.translate(n.cfg, 0x1000)
    assert f.type == EventType.F_TRANSLATION and f.stage2 and f.cls == FaultClass.TT and f.ipa == \
        n.s1b.walk(0x1000).addr
    # stage-2 read permission removed on the table page: S2 permission fault, CLASS=TT
    n.s2b.map(l3, n.off + l3, 0x1000, PERM_W)
    core.flush()
    f = core.translate(n.cfg, 0x1000)
    assert f.type == EventType.F_PERMISSION and f.stage2 and f.cls == FaultClass.TT
    # translate_s2 for a CD fetch: CLASS=CD
    f = core.translate_s2(n.cfg, 0x300_0000, FaultClass.CD)
    assert isinstance(f, Fault) and f.cls == FaultClass.CD and f.stage2 and f.ipa == 0x300_0000
    assert core.translate_s2(n.cfg, 0x30_0040, FaultClass.CD) == n.off + 0x30_0040


def test_nested_combined_size_is_smallest_stage():
    n = Nested()
    n.s1b.map(0x4000_0000, 0x20_0000, 0x20_0000)   # 2M stage-1 block; stage 2 is 2M blocks too
    r = n.env.core.translate(n.cfg, 0x4000_1234)
    assert r.size == 0x20_0000 and r.pa == n.off + 0x20_1234
    n2 = Nested()
    n2.s2b.unmap(0x20_0000, 0x20_0000)
    n2.s2b.map(0x20_0000, n2.off + 0x20_0000, 0x20_0000, level=3)    # stage 2 in 4K pages
    n2.s1b.map(0x4000_0000, 0x20_0000, 0x20_0000)
    r = n2.env.core.translate(n2.cfg, 0x4000_1234)
    assert r.size == 0x1000 and r.pa == n2.off + 0x20_1234


# -- pure walker API and robustness ----------------------------------------------------------------------------

def test_walkers_are_pure_functions_over_read():
    env = Env()
    b = env.builder()
    b.map(0x1000, RAM_BASE, 0x1000)
    reads = []

    def read(a):
        reads.append(a)
        return env.bus.read64(a)
    leaf = walk_s1(s1(b), 0x1004, read)
    assert isinstance(leaf, Leaf) and leaf.oa == RAM_BASE + 4 and leaf.level == 3 and len(reads) == 4

    def broken(a):
        raise BusError(a, 8)
    wf = walk_s1(s1(b), 0x1004, broken)
    assert isinstance(wf, WalkFault) and wf.type == EventType.F_WALK_EABT
    b2 = env.builder(stage=2, ias=40, start=1)
    b2.map(0, RAM_BASE, 0x1000)
    assert walk_s2(s2(b2), 0x10, env.bus.read64).oa == RAM_BASE + 0x10
    assert walk_s2(s2(b2), 0x10, broken, cls=FaultClass.CD).cls == FaultClass.CD


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=64), st.integers(0, 2), st.integers(16, 48))
def test_garbage_tables_give_faults_never_exceptions(words, gsel, tsz):
    env = Env()
    gran = (4096, 16384, 65536)[gsel]
    # fill a table region with garbage and point TTB0 at it
    base = RAM_BASE + (1 << 20)
    for i, w in enumerate(words * (512 // len(words) + 1)):
        env.bus.write64(base + 8 * (i % 512), w)
        if i >= 512:
            break
    from devmodel.smmuv3.config import S1Cfg
    c = cfg(CfgKind.NESTED if tsz % 2 else CfgKind.S1,
            S1Cfg(ttb0=base, ttb1=base, t0sz=tsz, t1sz=tsz, tg0=gran, tg1=gran, epd0=False, epd1=False, ips=48,
                  asid=1, aset=False, affd=False),
            s2(env.builder(stage=2, ias=40, start=1)))
    for va in (0, words[0], words[-1] & ((1 << 48) - 1), (1 << 64) - 4096):
        r = env.core.translate(c, va, write=bool(va & 1))
        assert isinstance(r, (TransResult, Fault))
        r = env.core.translate(c, va)
        assert isinstance(r, (TransResult, Fault))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([4096, 16384, 65536]), st.integers(25, 48),
       st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=12))
def test_random_s1_maps_match_builder_reference(gran, ias, maps):
    """Property: for random page maps, the walker agrees with the builder's own reference walk."""
    env = Env()
    b = env.builder(granule=gran, ias=ias)
    npages = (1 << ias) // gran
    expect = {}
    for vpn, ppn in maps:
        vpn %= npages
        b.map(vpn * gran, RAM_BASE + ppn * gran, gran, level=3)
        expect[vpn] = RAM_BASE + ppn * gran
    c = cfg(CfgKind.S1, s1(b))
    for vpn, pa in expect.items():
        r = env.core.translate(c, vpn * gran + 8)
        assert r.pa == pa + 8 == b.translate(vpn * gran + 8)
    assert S1_LEAF.get(pte_s1(0, 3), "af") == 1 and S2_LEAF.nbits == 64
