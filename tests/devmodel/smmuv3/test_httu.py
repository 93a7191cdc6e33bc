"""HTTU through the SMMU (IHI 0070 3.13; CD.HA/HD 5.4, STE.S2HA/S2HD 5.2, IDR0.HTTU 6.3.1): the device's
accesses set AF and dirty state in memory, atomically; an IOTLB entry from a writable-clean descriptor never
grants a write without the update; nested stage-1 updates are stage-2 writes; ATS write requests update at
translation time; the updates follow IDR0.HTTU (Linux ARM_SMMU_FEAT_HA/HD, CTXDESC_CD_0_TCR_HA/HD)."""
from __future__ import annotations

import dataclasses

from devmodel.dmatest import CMD_WRITE64, STATUS_DONE, STATUS_FAULT
from devmodel.pagetable import PERM_R, PERM_W, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType, Fault, FaultClass
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import CDTAB, RAM, RAM_SIZE
from .iopf_env import DATA, FEATURES, VA, IopfBench

AF, AP2, DBM = 1 << 10, 1 << 7, 1 << 51
IDR0_HTTU_SHIFT, IDR0_HTTU_ACCESS, IDR0_HTTU_ACCESS_DIRTY = 6, 1, 2     # Linux arm-smmu-v3.h
CD_0_TCR_HA, CD_0_TCR_HD = 1 << 43, 1 << 42


def test_idr0_httu_and_cd_bits_match_linux() -> None:
    for httu, want in ((0, 0), (1, IDR0_HTTU_ACCESS), (2, IDR0_HTTU_ACCESS_DIRTY)):
        b = IopfBench(dataclasses.replace(FEATURES, httu=httu))
        assert (b.r32(0x00) >> IDR0_HTTU_SHIFT) & 3 == want
    raw = int.from_bytes(CD.encode(CD.Cd(ha=1, hd=1)), "little")
    assert raw & (CD_0_TCR_HA | CD_0_TCR_HD) == CD_0_TCR_HA | CD_0_TCR_HD


def test_cd_ha_hd_follow_idr0_httu() -> None:
    """HA/HD the SMMU does not implement are ignored: with HTTU=0 an AF=0 page faults (F_ACCESS), with HTTU=1 it
    is set but a writable-clean page is not made dirty."""
    cd = CD.Cd(v=1, aa64=1, ha=1, hd=1, t0sz=16, epd1=1)
    assert [(c.ha, c.hd) for c in (CD.s1_config(cd, SmmuFeatures(httu=h)) for h in (0, 1, 2))] == \
        [(False, False), (True, False), (True, True)]
    b = IopfBench(dataclasses.replace(FEATURES, httu=0, stall_model=1))
    b.s1_stream(5, s=0, ha=1, hd=1)
    b.map(VA, DATA, af=False)
    ref = b.pt.walk(VA)
    f = b.smmu.translate(5, None, VA)
    assert isinstance(f, Fault) and f.type == EventType.F_ACCESS and b.bus.read64(ref.addr) == ref.value


def test_read_sets_af_write_sets_dirty_in_memory() -> None:
    b = IopfBench()
    b.s1_stream(5, s=0, ha=1, hd=1)
    b.map(VA, DATA, PERM_R, af=False)
    ref = b.pt.update(VA, set_bits=DBM)
    assert b.smmu.translate(5, None, VA + 8).pa == DATA + 8
    assert b.bus.read64(ref.addr) == ref.value | AF                  # accessed, still clean
    d = b.dma(5)
    d.regs["IOVA"], d.regs["DATA"] = VA + 16, 0xD1
    assert d.run(CMD_WRITE64) == STATUS_DONE and b.bus.read64(DATA + 16) == 0xD1
    assert b.bus.read64(ref.addr) == (ref.value | AF) & ~AP2         # writable-dirty: the CPU sees it
    ups = b.sink.of("smmu_httu_update")
    assert [(u["addr"], u["ok"]) for u in ups] == [(ref.addr, 1), (ref.addr, 1)]
    assert b.smmu.core.stats["httu_updates"] == 2


def clean_page(features: SmmuFeatures = FEATURES) -> tuple[IopfBench, object]:
    """Stream 5 with CD.HA/HD (no stalls) and VA mapped writable-clean (DBM=1, read-only)."""
    b = IopfBench(features)
    b.s1_stream(5, s=0, ha=1, hd=1)
    b.map(VA, DATA, PERM_R)
    return b, b.pt.update(VA, set_bits=DBM)


def test_a_cached_writable_clean_entry_does_not_grant_a_write_without_the_update() -> None:
    b, ref = clean_page()
    assert b.smmu.translate(5, None, VA).pa == DATA                   # IOTLB now holds a read-only-clean entry
    assert b.smmu.translate(5, None, VA).cached
    w = b.smmu.translate(5, None, VA, write=True)
    assert w.pa == DATA and not w.cached and not b.bus.read64(ref.addr) & AP2   # walked again, updated
    assert b.smmu.translate(5, None, VA + 8, write=True).cached       # now a writable entry: no update
    assert b.smmu.core.stats["httu_updates"] == 1


def test_a_stale_writable_clean_entry_after_the_cpu_made_the_page_read_only_faults() -> None:
    """The CPU clears DBM (read-only, no TLBI yet): the write re-walks and finds the page read-only."""
    b, ref = clean_page()
    assert b.smmu.translate(5, None, VA).cached is False
    b.bus.write64(ref.addr, b.bus.read64(ref.addr) & ~DBM)
    f = b.smmu.translate(5, None, VA, write=True)
    assert isinstance(f, Fault) and f.type == EventType.F_PERMISSION
    assert b.bus.read64(ref.addr) & AP2 and not b.bus.read64(ref.addr) & DBM


def test_ha_without_hd_a_write_to_a_writable_clean_page_is_a_permission_fault() -> None:
    b, ref = clean_page(dataclasses.replace(FEATURES, httu=1))
    f = b.smmu.translate(5, None, VA, write=True)
    assert isinstance(f, Fault) and f.type == EventType.F_PERMISSION and b.bus.read64(ref.addr) & AP2


def test_the_device_write_stalls_when_the_page_is_read_only_not_dbm() -> None:
    b = IopfBench()
    b.s1_stream(5, ha=1, hd=1)
    b.map(VA, DATA, PERM_R)
    d = b.dma(5)
    d.regs["IOVA"] = VA
    assert d.run(CMD_WRITE64) == 16                                   # STALLED
    assert b.new_events()[0].type == EventType.F_PERMISSION


def _nested(b: IopfBench, s2perm_of_table: int, s2ha: int = 1, s2hd: int = 1):
    """Nested stream 7: stage 2 maps RAM identically (IPA = PA) in 2 MB blocks, except the page holding the
    stage-1 leaf table of VA, mapped with `s2perm_of_table`; stage 1 = b.pt with CD.HA/HD."""
    s2 = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=2, ias=40)
    s2.map(RAM, RAM, RAM_SIZE, PERM_R | PERM_W)
    b.map(VA, DATA, PERM_R, af=False)
    leaf = b.pt.update(VA, set_bits=DBM)
    table_page = leaf.addr & ~0xFFF
    s2.unmap(table_page, 4096)
    s2.map(table_page, table_page, 4096, s2perm_of_table)
    cd_pa = CDTAB + 7 * 64
    b.bus.write_bytes(cd_pa, CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, ha=1, hd=1, t0sz=16, ips=5, epd1=1, asid=3,
                                             ttb0=b.pt.ttb)))
    b.put_ste(7, S.Ste(v=1, config=S.CONFIG_NESTED, s1contextptr=cd_pa, s2vmid=9, s2t0sz=s2.tsz, s2sl0=s2.sl0,
                       s2tg=0, s2ps=2, s2aa64=1, s2r=1, s2ha=s2ha, s2hd=s2hd, s2ttb=s2.ttb))
    return s2, leaf


def test_nested_stage1_update_is_a_stage2_write() -> None:
    b = IopfBench()
    _s2, leaf = _nested(b, PERM_R)
    f = b.smmu.translate(7, None, VA)
    assert isinstance(f, Fault) and f.type == EventType.F_PERMISSION and f.stage2 and f.cls == FaultClass.TT
    (ev,) = b.new_events()
    assert (ev.s2, ev.class_, ev.tt_read, ev.ipa) == (1, 1, 0, leaf.addr & ~0xFFF)   # TTRnW=0: an update
    assert b.bus.read64(leaf.addr) == leaf.value                      # nothing written
    b2 = IopfBench()
    _s2b, leaf2 = _nested(b2, PERM_R | PERM_W)
    assert b2.smmu.translate(7, None, VA).pa == DATA
    assert b2.bus.read64(leaf2.addr) == leaf2.value | AF


def test_nested_write_updates_both_stages() -> None:
    b = IopfBench()
    s2, leaf = _nested(b, PERM_R | PERM_W)
    s2.unmap(DATA, 4096)
    s2.map(DATA, DATA, 4096, PERM_R)
    s2leaf = s2.update(DATA, set_bits=DBM)                            # stage-2 writable-clean
    assert b.smmu.translate(7, None, VA).pa == DATA                   # read: both entries cached clean
    assert b.smmu.translate(7, None, VA, write=True).pa == DATA
    assert not b.bus.read64(leaf.addr) & AP2 and b.bus.read64(s2leaf.addr) & AP2   # S1 dirty; S2AP[1] set
    b3 = IopfBench()
    s3, _ = _nested(b3, PERM_R | PERM_W, s2hd=0)
    s3.unmap(DATA, 4096)
    s3.map(DATA, DATA, 4096, PERM_R)
    s3.update(DATA, set_bits=DBM)
    f = b3.smmu.translate(7, None, VA, write=True)
    assert isinstance(f, Fault) and f.stage2 and f.type == EventType.F_PERMISSION    # S2HD=0: no update


def test_ats_write_request_updates_dirty_at_translation_time() -> None:
    b = IopfBench()
    b.s1_stream(5, s=0, ha=1, hd=1, eats=1)
    b.map(VA, DATA, PERM_R)
    ref = b.pt.update(VA, set_bits=DBM)
    rd = b.smmu.ats_translate(5, None, VA, nw=True)
    assert rd.r and not rd.w and b.bus.read64(ref.addr) & AP2         # read-only request: still clean
    wr = b.smmu.ats_translate(5, None, VA, nw=False)
    assert wr.r and wr.w and not b.bus.read64(ref.addr) & AP2         # the SMMU will not see the writes


def test_device_write_without_httu_fault_leaves_memory_alone() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=1))
    b.s1_stream(5, s=0)
    b.map(VA, DATA, PERM_R)
    ref = b.pt.update(VA, set_bits=DBM)
    d = b.dma(5)
    d.regs["IOVA"] = VA
    assert d.run(CMD_WRITE64) == STATUS_FAULT and b.bus.read64(ref.addr) == ref.value
