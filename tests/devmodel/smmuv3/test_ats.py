"""ATS through the SMMU (IHI 0070 3.9.1; STE.EATS 5.2; CR0.ATSCHK 6.3.9; F_BAD_ATS_TREQ / F_TRANS_FORBIDDEN 7.3;
CMD_ATC_INV 4.5 and CMD_SYNC's CERROR_ATC_INV_SYNC): Translation Completions for each configuration, translated
transactions, and the DMA test device as a PCIe function with an ATC that CMD_ATC_INV keeps coherent."""
from __future__ import annotations

import dataclasses

import pytest

from devmodel.dmatest import CMD_READ64, PCIE_ATS_EN, STATUS_ATS_ERR, STATUS_DONE, STATUS_FAULT
from devmodel.pagetable import PERM_R, PERM_W, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.ats import ATC_INV_SIZE_ALL, AtsStatus, atc_inv_range
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import CDTAB, CMDQ_CONS, CR0, GERROR, RAM, RAM_SIZE, S2_OK
from .iopf_env import DATA, FEATURES, VA, IopfBench

CR0_ATSCHK = 1 << 4                       # Linux CR0_ATSCHK
EATS_ABT, EATS_TRANS, EATS_S1CHK = 0, 1, 2  # Linux STRTAB_STE_1_EATS_*


def ats_bench(**kw) -> IopfBench:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=1))
    b.s1_stream(5, s=0, eats=EATS_TRANS, **kw)
    return b


def test_atc_inv_size_encoding_follows_linux() -> None:
    """Linux arm_smmu_atc_inv_to_cmd: pages [7; 10] need the span [0; 15] (Size=4, Address aligned down)."""
    inv = lambda **kw: atc_inv_range(C.decode(C.encode("ATC_INV", **kw)))   # noqa: E731
    assert inv(addr=7 * 4096, size=4) == (0, 16 * 4096)
    assert inv(addr=0x12_3456_7000, size=0) == (0x12_3456_7000, 0x12_3456_8000)
    assert inv(addr=0x12_3456_7000, size=9) == (0x12_3440_0000, 0x12_3460_0000)     # 2 MiB, aligned
    assert inv(addr=0x1000, size=ATC_INV_SIZE_ALL) == (0, 1 << 64) == inv(size=63)


def test_completion_statuses() -> None:
    assert IopfBench(SmmuFeatures()).smmu.ats_translate(5, None, VA).status is AtsStatus.UR   # IDR0.ATS=0
    b = ats_bench()
    b.w32(CR0, b.r32(CR0) & ~1)
    assert b.smmu.ats_translate(5, None, VA).status is AtsStatus.UR                    # SMMUEN=0
    b = ats_bench()
    b.put_ste(6, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB + 5 * 64, eats=EATS_ABT))
    c = b.smmu.ats_translate(6, None, VA, nw=False, priv=True)
    assert c.status is AtsStatus.UR
    (ev,) = b.new_events()
    assert (ev.type, ev.sid, ev.input_addr, ev.rnw, ev.pnu) == (EventType.F_BAD_ATS_TREQ, 6, VA, 0, 1)
    b.put_ste(8, S.Ste(v=0))
    assert b.smmu.ats_translate(8, None, VA).status is AtsStatus.CA
    assert b.new_events()[0].type == EventType.C_BAD_STE
    b.put_ste(9, S.Ste(v=1, config=S.CONFIG_ABORT, eats=EATS_TRANS))
    assert b.smmu.ats_translate(9, None, VA).status is AtsStatus.CA and b.new_events() == []
    b.put_ste(10, S.Ste(v=1, config=S.CONFIG_BYPASS, eats=EATS_TRANS))
    c = b.smmu.ats_translate(10, None, 0x1234_5678)
    assert (c.status, c.addr, c.size, c.r, c.w) == (AtsStatus.SUCCESS, 0x1234_5000, 4096, True, False)


def test_full_ats_stage1_completion_fields() -> None:
    b = ats_bench()
    b.map(VA, DATA, PERM_R | PERM_W)
    b.map(VA + 0x20_0000, RAM + 0x20_0000, PERM_R, size=0x20_0000, level=2, global_=True)
    c = b.smmu.ats_translate(5, None, VA + 0x123, nw=True)
    assert (c.status, c.addr, c.size, c.r, c.w, c.global_) == (AtsStatus.SUCCESS, DATA, 4096, True, False, False)
    assert b.smmu.ats_translate(5, None, VA, nw=False).w                    # write asked: W granted
    blk = b.smmu.ats_translate(5, None, VA + 0x20_0000 + 0x5000, nw=False)
    assert (blk.addr, blk.size, blk.r, blk.w, blk.global_) == (RAM + 0x20_0000, 0x20_0000, True, False, True)


def test_translation_faults_are_no_access_not_events_and_never_stall() -> None:
    b = IopfBench()                                      # stall model 0 and CD.S=1
    b.s1_stream(5, s=1, eats=EATS_TRANS)
    c = b.smmu.ats_translate(5, None, VA + 0x4000)
    assert c.status is AtsStatus.SUCCESS and not (c.r or c.w) and "invalid" in c.reason
    assert b.new_events() == [] and not b.smmu.stalls.outstanding()


def test_stage2_only_and_nested_full_and_split_ats() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=1))
    s2 = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=2, ias=40)
    s2.map(0x8000, DATA, 4096, PERM_R | PERM_W)
    b.put_ste(7, S.Ste(**{**S2_OK, "s2ttb": s2.ttb, "s2t0sz": s2.tsz, "s2sl0": s2.sl0, "eats": EATS_TRANS}))
    c = b.smmu.ats_translate(7, None, 0x8010, nw=False)
    assert (c.addr, c.size, c.r, c.w) == (DATA, 4096, True, True)       # IPA -> PA
    # nested: stage 2 maps RAM at IPA = PA + 1 GiB; stage-1 tables and the CD are in IPA space
    n2 = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=2, ias=40)
    n2.map(RAM + (1 << 30), RAM, RAM_SIZE, PERM_R | PERM_W)
    s1 = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=1, ias=48)
    s1.map(VA, DATA + (1 << 30), 4096, PERM_R | PERM_W)                  # VA -> IPA
    _ipa_tables(b, s1, 1 << 30)
    cd_ipa = CDTAB + 11 * 64 + (1 << 30)
    b.bus.write_bytes(cd_ipa - (1 << 30), CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, t0sz=16, ips=5, epd1=1, asid=4,
                                                          ttb0=s1.ttb + (1 << 30))))
    nested = dict(v=1, config=S.CONFIG_NESTED, s1contextptr=cd_ipa, s2vmid=4, s2t0sz=n2.tsz, s2sl0=n2.sl0, s2tg=0,
                  s2ps=2, s2aa64=1, s2r=1, s2ttb=n2.ttb)
    b.put_ste(11, S.Ste(**nested, eats=EATS_TRANS))
    b.put_ste(12, S.Ste(**nested, eats=EATS_S1CHK))
    full = b.smmu.ats_translate(11, None, VA + 8)
    split = b.smmu.ats_translate(12, None, VA + 8)
    assert (full.status, full.addr) == (AtsStatus.SUCCESS, DATA)        # VA -> PA
    assert (split.status, split.addr) == (AtsStatus.SUCCESS, DATA + (1 << 30))   # VA -> IPA
    # translated transactions: split-stage goes through stage 2 (safe mode)
    b.w32(CR0, b.r32(CR0) & ~1)
    b.w32(CR0, b.r32(CR0) | CR0_ATSCHK | 1)
    assert b.smmu.translated(12, split.addr + 8).pa == DATA + 8
    assert b.smmu.translated(11, full.addr + 8).pa == DATA + 8           # full ATS: passes


def _ipa_tables(b: IopfBench, s1: PageTableBuilder, off: int) -> None:
    """Rewrite a stage-1 builder's table descriptors so that they hold IPAs (= PA + off)."""
    for t in s1.tables:
        for i in range(512):
            d = b.bus.read64(t + 8 * i)
            if d & 3 == 3 and (d & 0xFFFF_FFFF_F000) in s1.tables:
                b.bus.write64(t + 8 * i, d + off)


def test_translated_transactions_follow_atschk_and_eats() -> None:
    b = ats_bench()
    b.put_ste(6, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB + 5 * 64, eats=EATS_ABT))
    assert b.smmu.translated(6, DATA).pa == DATA                          # fast mode: unchecked
    b.w32(CR0, b.r32(CR0) & ~1)
    b.w32(CR0, b.r32(CR0) | CR0_ATSCHK | 1)
    assert b.smmu.translated(5, DATA, write=True).pa == DATA              # EATS=1: allowed
    f = b.smmu.translated(6, DATA)
    assert f.type == EventType.F_TRANS_FORBIDDEN and b.new_events()[0].type == EventType.F_TRANS_FORBIDDEN
    b.w32(CR0, b.r32(CR0) & ~1)                                           # SMMUEN=0: GBPA (bypass)
    assert b.smmu.translated(6, DATA).pa == DATA


def test_device_uses_its_atc_and_atc_inv_keeps_it_coherent() -> None:
    b = ats_bench()
    b.map(VA, DATA)
    b.bus.write64(DATA, 0xA)
    d = b.dma(5)
    d.write(0x44, PCIE_ATS_EN, 4)
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_DONE and d.regs["DATA"] == 0xA and d.read(0x58, 4) == 1
    assert d.run(CMD_READ64) == STATUS_DONE and d.atc.hits == 1 and b.smmu.stats["ats_success"] == 1
    b.pt.unmap(VA, 4096)
    b.map(VA, DATA + 0x1000)                                              # software remaps the page...
    b.bus.write64(DATA + 0x1000, 0xB)
    b.cmd("TLBI_NH_VA", asid=1, addr=VA, leaf=1)                          # ...and invalidates the SMMU TLB only
    assert b.sync() == 0
    assert d.run(CMD_READ64) == STATUS_DONE and d.regs["DATA"] == 0xA     # stale: through the device's ATC
    b.cmd("ATC_INV", sid=5, addr=VA, size=0)
    assert b.sync() == 0 and d.read(0x5C, 4) == 1 and d.read(0x58, 4) == 0
    assert d.run(CMD_READ64) == STATUS_DONE and d.regs["DATA"] == 0xB
    inv = b.sink.of("smmuv3_atc_inv")
    assert [(r["sid"], r["lo"], r["hi"], r["endpoint"], r["ok"]) for r in inv] == [(5, VA, VA + 4096, 1, 1)]


def test_atc_inv_that_does_not_complete_fails_the_next_sync() -> None:
    b = ats_bench()
    d = b.dma(5)
    d.atc_inv_fails = True
    b.submit(C.encode("ATC_INV", sid=5, size=ATC_INV_SIZE_ALL), C.encode("CMD_SYNC"))
    cons = b.r32(CMDQ_CONS)
    assert (cons >> 24) & 0x7F == C.CERROR_ATC_INV_SYNC and b.r32(GERROR) & 1
    assert cons & 0x1F == (b.prod - 1) & 0x1F                          # CONS stays at the CMD_SYNC
    b.cmd("ATC_INV", sid=99, size=0)                                     # no endpoint: nothing to wait for


def test_device_ats_errors() -> None:
    b = ats_bench()
    d = b.dma(5)
    d.write(0x44, PCIE_ATS_EN, 4)
    d.regs["IOVA"] = VA                                                   # unmapped, no PRI
    assert d.run(CMD_READ64) == STATUS_ATS_ERR
    b.put_ste(6, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB + 5 * 64, eats=EATS_ABT))
    d6 = b.dma(6)
    d6.write(0x44, PCIE_ATS_EN, 4)
    d6.regs["IOVA"] = VA
    assert d6.run(CMD_READ64) == STATUS_ATS_ERR                          # UR
    b.map(VA, DATA)
    b.w32(CR0, b.r32(CR0) & ~1)
    b.w32(CR0, b.r32(CR0) | CR0_ATSCHK | 1)
    b.cmd("CFGI_STE", sid=5)
    b.put_ste(5, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB + 5 * 64, eats=EATS_TRANS))
    assert d.run(CMD_READ64) == STATUS_DONE
    b.put_ste(5, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB + 5 * 64, eats=EATS_ABT))
    b.cmd("CFGI_STE", sid=5)                                              # ATS turned off, the ATC kept
    assert d.run(CMD_READ64) == STATUS_FAULT and d.regs["FAULT_TYPE"] == EventType.F_TRANS_FORBIDDEN


@pytest.mark.parametrize("ssv,global_,removed", [(0, 0, 3), (1, 0, 1), (1, 1, 2)])
def test_atc_inv_ssid_and_global(ssv: int, global_: int, removed: int) -> None:
    """Without SSV every PASID's entries of the range go; with SSV that PASID's, plus global ones with Global."""
    b = ats_bench()
    d = b.dma(5)
    for ssid, glob in ((1, False), (2, False), (3, True)):
        comp = dataclasses.replace(b.smmu.ats_translate(5, None, VA), r=True, size=4096, global_=glob)
        d.atc.insert(ssid, VA, comp)
    b.cmd("ATC_INV", sid=5, addr=VA, size=0, ssv=ssv, ssid=1, global_=global_)
    assert b.sync() == 0 and 3 - len(d.atc) == removed
