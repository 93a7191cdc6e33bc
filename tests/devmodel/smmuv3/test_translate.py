"""TranslationCore: IOTLB behaviour seen through DMA, invalidation commands (IHI 0070 4.4), stale entries,
ranges (NUM/SCALE corner cases, misaligned starts), TTL and Leaf."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from devmodel.pagetable import PERM_R, PERM_W, pte_table
from devmodel.smmuv3.commands import decode, encode
from devmodel.smmuv3.config import CfgKind, StreamWorld, TransResult
from devmodel.smmuv3.fault import EventType, Fault

from .test_walk import Nested
from .xlat_env import RAM_BASE, Cmd, Env, cfg, cpu_range, s1, s2

P1, P2 = RAM_BASE + 0x10_0000, RAM_BASE + 0x80_0000
VA = 0x1234_5000


def cmd(name: str, **kw):
    """A real decoded command (`commands.encode` then `commands.decode`)."""
    return decode(encode(name, **kw))


def s1_env(asid=5, vmid=9, **core_kw):
    env = Env(**core_kw)
    b = env.builder()
    b2 = env.builder(stage=2, ias=40, start=1)
    b2.map(0, 0, 1 << 31)                      # identity stage 2 is not used by the S1 config
    c = cfg(CfgKind.S1, s1(b, asid=asid), s2(b2, vmid=vmid))   # S1-only, entries tagged with S2VMID
    return env, b, c


def dma(env, c, va, write=False):
    r = env.core.translate(c, va, write=write)
    return r.pa if isinstance(r, TransResult) else r


@pytest.mark.parametrize("good,bad", [
    (cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA), [cmd("TLBI_NH_VA", vmid=9, asid=6, addr=VA),
                                                  cmd("TLBI_NH_VA", vmid=8, asid=5, addr=VA),
                                                  cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA + 0x1000)]),
    (cmd("TLBI_NH_VAA", vmid=9, addr=VA), [cmd("TLBI_NH_VAA", vmid=1, addr=VA)]),
    (cmd("TLBI_NH_ASID", vmid=9, asid=5), [cmd("TLBI_NH_ASID", vmid=9, asid=4), cmd("TLBI_NH_ASID", vmid=0, asid=5)]),
    (cmd("TLBI_NH_ALL", vmid=9), [cmd("TLBI_NH_ALL", vmid=10), cmd("TLBI_EL2_ALL")]),
    (cmd("TLBI_S12_VMALL", vmid=9), [cmd("TLBI_S12_VMALL", vmid=3), cmd("TLBI_S2_IPA", vmid=9, addr=VA)]),
    (cmd("TLBI_NSNH_ALL"), [cmd("TLBI_EL3_ALL"), cmd("ATC_INV", sid=1, addr=VA, size=0)]),
])
def test_stale_entry_until_the_right_command(good, bad):
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000)
    assert dma(env, c, VA + 8) == P1 + 8
    b.map(VA, P2, 0x1000)                      # remap without invalidation
    assert dma(env, c, VA + 8) == P1 + 8       # DMA still sees the old page
    for x in bad:
        env.core.invalidate(x)
        assert dma(env, c, VA + 8) == P1 + 8, f"{x.name} must not remove the entry"
    env.core.invalidate(good)
    assert dma(env, c, VA + 8) == P2 + 8


def test_local_stand_in_command_works_too():
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000)
    dma(env, c, VA)
    b.map(VA, P2, 0x1000)
    env.core.invalidate(Cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA))
    assert dma(env, c, VA) == P2


def test_global_entries_survive_asid_invalidation_but_not_va():
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000, global_=True)
    dma(env, c, VA)
    b.map(VA, P2, 0x1000, global_=True)
    env.core.invalidate(cmd("TLBI_NH_ASID", vmid=9, asid=5))
    assert dma(env, c, VA) == P1                # global entries are not ASID-tagged
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=77, addr=VA))   # any ASID hits global entries
    assert dma(env, c, VA) == P2


def test_global_entry_shared_across_asids_only_with_same_aset():
    env = Env()
    b = env.builder()
    b.map(VA, P1, 0x1000, global_=True)
    c1 = cfg(CfgKind.S1, s1(b, asid=1))
    c2 = cfg(CfgKind.S1, s1(b, asid=2), sid=2)
    c3 = cfg(CfgKind.S1, s1(b, asid=3, aset=True), sid=3)
    assert not env.core.translate(c1, VA).cached
    assert env.core.translate(c2, VA).cached    # another ASID, same ASET: the global entry matches
    assert not env.core.translate(c3, VA).cached


def test_stage2_stale_and_s2_ipa():
    env = Env()
    b = env.builder(stage=2, ias=40, start=1)
    b.map(0x20_0000, P1, 0x1000)
    c = cfg(CfgKind.S2, None, s2(b, vmid=4))
    assert dma(env, c, 0x20_0010) == P1 + 0x10
    b.map(0x20_0000, P2, 0x1000)
    for x in (cmd("TLBI_S2_IPA", vmid=5, addr=0x20_0000), cmd("TLBI_NH_ALL", vmid=4),
              cmd("TLBI_NH_VA", vmid=4, asid=0, addr=0x20_0000), cmd("TLBI_S2_IPA", vmid=4, addr=0x30_0000)):
        env.core.invalidate(x)
        assert dma(env, c, 0x20_0010) == P1 + 0x10, x.name
    env.core.invalidate(cmd("TLBI_S2_IPA", vmid=4, addr=0x20_0000))
    assert dma(env, c, 0x20_0010) == P2 + 0x10


def test_s2_ipa_does_not_remove_combined_nested_entries():
    n = Nested()
    n.s1b.map(VA, 0x30_0000, 0x1000)
    core = n.env.core
    assert core.translate(n.cfg, VA).pa == n.off + 0x30_0000
    n.s2b.map(0x30_0000, RAM_BASE + 0x5000, 0x1000)          # stage 2 moves the IPA
    core.invalidate(cmd("TLBI_S2_IPA", vmid=3, addr=0x30_0000))
    assert core.translate(n.cfg, VA).pa == n.off + 0x30_0000  # combined entry still there (allowed)
    core.invalidate(cmd("TLBI_NH_ALL", vmid=3))                # what Linux does for nest parents
    assert core.translate(n.cfg, VA).pa == RAM_BASE + 0x5000


def test_stale_read_only_entry_gives_permission_fault():
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000, PERM_R)
    assert dma(env, c, VA) == P1
    b.map(VA, P1, 0x1000, PERM_R | PERM_W)
    f = env.core.translate(c, VA, write=True)
    assert isinstance(f, Fault) and f.type == EventType.F_PERMISSION and not f.stage2
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA))
    assert dma(env, c, VA, write=True) == P1


def test_el2_worlds():
    env = Env()
    b = env.builder()
    b.map(VA, P1, 0x1000)
    c_el2 = cfg(CfgKind.S1, s1(b, asid=3), world=StreamWorld.EL2)
    c_e2h = cfg(CfgKind.S1, s1(b, asid=3), world=StreamWorld.EL2_E2H, sid=2)
    dma(env, c_el2, VA)
    dma(env, c_e2h, VA)
    b.map(VA, P2, 0x1000)
    env.core.invalidate(cmd("TLBI_NH_ALL", vmid=0))
    env.core.invalidate(cmd("TLBI_EL2_ASID", asid=4))
    assert dma(env, c_el2, VA) == P1 and dma(env, c_e2h, VA) == P1
    env.core.invalidate(cmd("TLBI_EL2_ASID", asid=3))           # EL2-E2H entries of ASID 3 only
    assert dma(env, c_el2, VA) == P1 and dma(env, c_e2h, VA) == P2
    env.core.invalidate(cmd("TLBI_EL2_VA", asid=9, addr=VA))     # EL2 (no ASIDs) entries at VA
    assert dma(env, c_el2, VA) == P2


# -- ranges ------------------------------------------------------------------------------------------------

def _cache_pages(n=64, base=0x10_0000, **core_kw):
    env, b, c = s1_env(**core_kw)
    b.map(base, P1, n * 0x1000, level=3)
    for i in range(n):
        assert dma(env, c, base + i * 0x1000) == P1 + i * 0x1000
    b.map(base, P2, n * 0x1000, level=3)
    return env, c


def _fresh(env, c, n=64, base=0x10_0000):
    return {i for i in range(n) if dma(env, c, base + i * 0x1000) == P2 + i * 0x1000}


@pytest.mark.parametrize("start,num,scale", [
    (3, 2, 1),          # 6 pages from page 3: misaligned start (QEMU used to align it away)
    (0, 0, 0),          # 1 page
    (5, 31, 0),         # 32 pages from page 5
    (7, 0, 4),          # 16 pages from page 7 (not 16-aligned)
    (63, 1, 0),         # runs past the mapping
    (1, 2, 2),          # 12 pages
])
def test_range_invalidation_num_scale_and_misaligned(start, num, scale):
    env, c = _cache_pages()
    base = 0x10_0000
    x = cmd("TLBI_NH_VA", vmid=9, asid=5, addr=base + start * 0x1000, tg=1, num=num, scale=scale)
    env.core.invalidate(x)
    n = (num + 1) << scale
    expect = {i for i in range(start, min(64, start + n))}
    assert _fresh(env, c) == expect
    # and not the CPU formula, which covers (NUM+1)*2^(5*SCALE+1) pages
    assert cpu_range(1, scale, num) // 0x1000 != n


def test_range_huge_scale_covers_everything_and_low_address_bits_ignored():
    env, c = _cache_pages()
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=0x10_0000 + 0x7000, tg=1, num=31, scale=31))
    assert _fresh(env, c) == set(range(7, 64))
    env, c = _cache_pages()
    # TG=16K: the start is aligned down to 16K; strict hints keep 4K-granule entries (TG names another granule)
    r = env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=0x10_0000 + 0x5000, tg=2, num=0, scale=0))
    assert r["kept_by_hint"] == 4 and _fresh(env, c) == set()
    env, c = _cache_pages(strict_hints=False)
    r = env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=0x10_0000 + 0x5000, tg=2, num=0, scale=0))
    assert _fresh(env, c) == {4, 5, 6, 7} and r["over"] == 4
    assert env.core.stats["invalidations"]["TLBI_NH_VA"]["over"] == 4


def test_range_ignored_without_ril():
    class F:
        ril = False
    env, c = _cache_pages(features=F())
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=0x10_0000 + 0x3000, tg=1, num=5, scale=0))
    assert _fresh(env, c) == {3}                # TG/NUM/SCALE are RES0 without RIL: one address


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 63), st.integers(0, 31), st.integers(0, 6))
def test_range_property(start, num, scale):
    env, c = _cache_pages()
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=0x10_0000 + start * 0x1000, tg=1, num=num,
                            scale=scale))
    assert _fresh(env, c) == set(range(start, min(64, start + ((num + 1) << scale))))


def test_ttl_hint_and_blocks():
    env, b, c = s1_env()
    blk = 0x4000_0000
    b.map(blk, P1 & ~0x1F_FFFF, 0x20_0000)                   # one 2M block (level 2)
    out = P1 & ~0x1F_FFFF
    assert dma(env, c, blk + 0x1000) == out + 0x1000        # two pieces of the same block
    assert dma(env, c, blk + 0x10_0000) == out + 0x10_0000
    new = RAM_BASE + 0x20_0000 * 5
    b.map(blk, new, 0x20_0000)
    # TTL=3 (level 3) with TG=4K: the level-2 block need not go (strict: stays)
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=blk + 0x1F_F000, tg=1, ttl=3))
    assert dma(env, c, blk + 0x1000) == out + 0x1000
    # the right TTL, at the *last* page of the block, removes both pieces
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=blk + 0x1F_F000, tg=1, ttl=2))
    assert dma(env, c, blk + 0x1000) == new + 0x1000
    assert dma(env, c, blk + 0x10_0000) == new + 0x10_0000


def test_leaf_keeps_walk_cache_non_leaf_clears_it():
    env, b, c = s1_env(walk_cache=True)
    b.map(VA, P1, 0x1000)
    assert dma(env, c, VA) == P1
    assert env.core.stats["walk_cache_entries"] >= 3
    # build a second level-3 table mapping VA -> P2 and swing the level-2 table descriptor to it
    l2ref = None
    table = b.ttb
    from devmodel.pagetable import level_shift
    for level in range(0, 3):
        addr = table + 8 * ((VA >> level_shift(level, 12)) & 511)
        l2ref = addr
        table = env.bus.read64(addr) & ((1 << 48) - 1) & ~0xFFF
    old_l3 = table
    new_l3 = env.alloc(0x1000)
    env.bus.write_bytes(new_l3, env.bus.read_bytes(old_l3, 0x1000))
    env.bus.write64(new_l3 + 8 * ((VA >> 12) & 511), env.bus.read64(old_l3 + 8 * ((VA >> 12) & 511))
                    - P1 + P2)
    env.bus.write64(l2ref, pte_table(new_l3))
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA, leaf=1))
    assert dma(env, c, VA) == P1                 # the walk cache still points at the old level-3 table
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=9, asid=5, addr=VA, leaf=0))
    assert dma(env, c, VA) == P2


def test_bad_commands_never_raise():
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000)
    dma(env, c, VA)
    for x in (Cmd("TLBI_NH_VA", vmid=-1, asid=1 << 40, addr=-5, tg=7, num=99, scale=99, ttl=9),
              Cmd("CMD_SYNC"), Cmd("UNKNOWN_0xff"), Cmd("TLBI_S2_IPA", addr=1 << 70)):
        env.core.invalidate(x)
    for x in (object(), None):                  # not a command: a caller's bug surfaces
        with pytest.raises(AttributeError):
            env.core.invalidate(x)
    for bad_addr in (-1, 1 << 64, 1 << 80):
        assert isinstance(env.core.translate(c, bad_addr), Fault)


def test_capacity_and_stats_through_translate():
    env, b, c = s1_env(tlb_size=8)
    b.map(0x10_0000, P1, 32 * 0x1000, level=3)
    for i in range(32):
        dma(env, c, 0x10_0000 + i * 0x1000)
    st_ = env.core.stats
    assert st_["entries"] == 8 and st_["evictions"] == 24 and st_["misses"] == 32
    dma(env, c, 0x10_0000 + 31 * 0x1000)
    assert env.core.stats["hits"] == 1


@pytest.mark.parametrize("gran,tg,start,num,scale", [
    (65536, 3, 5, 4, 1),     # 64K: 10 granules from granule 5 (neither 10- nor 16-aligned)
    (16384, 2, 3, 0, 3),     # 16K: 8 granules from granule 3
    (16384, 2, 1, 31, 0),    # 16K: NUM at its maximum, past the end of the mapping
])
def test_range_invalidation_other_granules(gran, tg, start, num, scale):
    """(NUM+1) * 2^SCALE granules of TG from a misaligned start, for the 16K and 64K granules (IHI 0070 4.4.1);
    the address is 4K- but not TG-aligned: its bits below TG are ignored."""
    env = Env()
    b = env.builder(granule=gran)
    c = cfg(CfgKind.S1, s1(b, asid=5), None)
    base, n = 0x4000_0000, 16
    b.map(base, P1, n * gran, level=3)
    assert all(dma(env, c, base + i * gran + 8) == P1 + i * gran + 8 for i in range(n))
    b.map(base, P2, n * gran, level=3)
    env.core.invalidate(cmd("TLBI_NH_VA", vmid=0, asid=5, addr=base + start * gran + 0x1000, tg=tg, num=num,
                            scale=scale))
    fresh = {i for i in range(n) if dma(env, c, base + i * gran + 8) == P2 + i * gran + 8}
    assert fresh == set(range(start, min(n, start + ((num + 1) << scale))))


def test_range_invalidation_s2_ipa_misaligned_start():
    """TLBI_S2_IPA with a range: the same (NUM+1) * 2^SCALE formula over IPAs, misaligned start, one VMID."""
    env = Env()
    b = env.builder(stage=2, ias=40, start=1)
    c = cfg(CfgKind.S2, None, s2(b, vmid=4))
    base, n = 0x20_0000, 32
    b.map(base, P1, n * 0x1000, level=3)
    assert all(dma(env, c, base + i * 0x1000) == P1 + i * 0x1000 for i in range(n))
    b.map(base, P2, n * 0x1000, level=3)
    env.core.invalidate(cmd("TLBI_S2_IPA", vmid=5, addr=base + 3 * 0x1000, tg=1, num=2, scale=1))   # other VMID
    env.core.invalidate(cmd("TLBI_S2_IPA", vmid=4, addr=base + 3 * 0x1000, tg=1, num=2, scale=1))
    fresh = {i for i in range(n) if dma(env, c, base + i * 0x1000) == P2 + i * 0x1000}
    assert fresh == set(range(3, 9))


def test_a_broken_configuration_or_command_is_a_bug_that_raises():
    """No silent fallbacks: a TransCfg the device could not have built, or a command with a field that is not
    an integer, raises (before, the first became a recorded C_BAD_STE and the second a 'malformed' count)."""
    env, b, c = s1_env()
    b.map(VA, P1, 0x1000)
    broken = replace(c, s1=replace(c.s1, tbi=None))
    with pytest.raises(TypeError):
        env.core.translate(broken, VA)
    with pytest.raises(TypeError):
        env.core.invalidate(Cmd("TLBI_NH_ALL", vmid=None))
    assert "malformed:TLBI_NH_ALL" not in env.core.iotlb.invalidations
    assert dma(env, c, VA) == P1                  # the core still works for well-formed input
