"""IOTLB (devmodel/smmuv3/iotlb.py): tags, capacity and replacement, statistics and trace events."""
from __future__ import annotations

import pytest

from devmodel.smmuv3.config import CfgKind, StreamWorld
from devmodel.smmuv3.iotlb import IOTLB, KIND_S1, Entry

from .xlat_env import RAM_BASE, Env, cfg, s1


def _fill(tlb: IOTLB, n: int, tag=None):
    tag = tag or tlb.tag(StreamWorld.NS_EL1, 1, 1, False, KIND_S1, 12)
    for i in range(n):
        tlb.insert(tag, i, Entry(RAM_BASE + i * 4096, 4096, 3, 3, va=(i << 12, (i + 1) << 12, 3, 4096)))
    return tag


@pytest.mark.parametrize("policy", ["fifo", "lru", "random"])
def test_capacity_and_replacement(policy):
    tlb = IOTLB(4, policy, seed=1)
    tag = _fill(tlb, 4)
    if policy == "lru":
        tlb.touch(tag.d[0])                       # 0 becomes most recent: 1 is the victim
    _fill(tlb, 0)
    tlb.insert(tag, 10, Entry(0, 4096, 3, 3))
    assert len(tlb) == 4 and tlb.evictions == 1 and 10 in tag.d
    gone = {0, 1, 2, 3} - set(tag.d)
    assert len(gone) == 1
    if policy == "fifo":
        assert gone == {0}
    elif policy == "lru":
        assert gone == {1}


def test_bad_configuration_rejected():
    with pytest.raises(ValueError, match="policy"):
        IOTLB(4, "mru")
    with pytest.raises(ValueError, match="capacity"):
        IOTLB(0)


def test_lru_policy_through_translate_keeps_hot_entry():
    env = Env(tlb_size=4, policy="lru")
    b = env.builder()
    b.map(0x10_0000, RAM_BASE, 16 * 0x1000, level=3)
    c = cfg(CfgKind.S1, s1(b))
    env.core.translate(c, 0x10_0000)
    for i in range(1, 8):
        env.core.translate(c, 0x10_0000)          # keep page 0 hot
        env.core.translate(c, 0x10_0000 + i * 0x1000)
    assert env.core.translate(c, 0x10_0000).cached


def test_statistics_and_trace():
    env = Env(trace="smmu_iotlb_*,smmu_ptw_done,smmu_translate_fault")
    b = env.builder()
    b.map(0x10_0000, RAM_BASE, 0x1000)
    c = cfg(CfgKind.S1, s1(b, asid=3))
    env.core.translate(c, 0x10_0000)
    env.core.translate(c, 0x10_0008)
    env.core.translate(c, 0x20_0000)
    s = env.core.stats
    assert (s["hits"], s["misses"], s["inserts"], s["faults"], s["entries"]) == (1, 2, 1, 1, 1)
    names = [r.event for r in env.sink.records]
    assert names.count("smmu_iotlb_lookup_miss") == 2 and names.count("smmu_iotlb_lookup_hit") == 1
    ins = env.sink.of("smmu_iotlb_insert")[0]
    assert (ins["asid"], ins["iova"], ins["size"], ins["level"], ins["pa"]) == (3, 0x10_0000, 0x1000, 3, RAM_BASE)
    assert env.sink.of("smmu_translate_fault")[0]["event"] == "F_TRANSLATION"
    from devmodel.smmuv3.commands import decode, encode
    env.core.invalidate(decode(encode("TLBI_NH_ASID", vmid=0, asid=3)))
    env.core.invalidate(decode(encode("TLBI_NH_ASID", vmid=0, asid=3)))
    inv = env.core.stats["invalidations"]["TLBI_NH_ASID"]
    assert inv["ops"] == 2 and inv["removed"] == 1
    assert [r["removed"] for r in env.sink.of("smmu_iotlb_inv")] == [1, 0]


def test_walk_cache_optional_and_counted():
    env = Env()
    b = env.builder()
    b.map(0x10_0000, RAM_BASE, 0x1000)
    env.core.translate(cfg(CfgKind.S1, s1(b)), 0x10_0000)
    assert env.core.stats["walk_cache_entries"] == 0
    env = Env(walk_cache=True)
    b = env.builder()
    b.map(0x10_0000, RAM_BASE, 0x2000)
    reads = []
    read = env.core._read
    env.core._read = lambda a: (reads.append(a), read(a))[1]
    c = cfg(CfgKind.S1, s1(b))
    env.core.translate(c, 0x10_0000)
    env.core.translate(c, 0x10_1000)             # second walk starts at level 3 thanks to the walk cache
    assert len(reads) == 5 and env.core.stats["walk_cache_entries"] == 3
