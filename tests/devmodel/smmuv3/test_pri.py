"""PRI (IHI 0070 chapter 8, 3.9; PRIQ registers 6.3; CMD_PRI_RESP 4.5; PCIe Page Request Interface): the PRI queue
registers and entry layout against Linux, page request groups from the DMA test device, CMD_PRI_RESP response
codes back to it, the SMMU's own answers for requests it cannot queue, overflow, interrupts and aborts."""
from __future__ import annotations

import dataclasses

import pytest

from devmodel.dmatest import (CMD_COPY, CMD_READ64, PCIE_ATS_EN, PCIE_PRI_EN, PCIE_PRI_RESET, PRI_RF, PRI_STOPPED,
                              PRI_UPRGI, STATUS_ATS_ERR, STATUS_DONE, STATUS_PRI_ERR, STATUS_PRI_WAIT)
from devmodel.pagetable import PERM_R, PERM_W
from devmodel.smmuv3 import ats as A
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import CMDQ_CONS, CR0, GERROR, IRQ_CTRL, MSI
from .iopf_env import DATA, FEATURES, PRIQ, PRIQ_BASE, PRIQ_CONS, PRIQ_IRQ_CFG0, PRIQ_IRQ_CFG1, PRIQ_PROD, VA, IopfBench

# Linux arm-smmu-v3.h
PRIQ_0_SID, PRIQ_0_SSID = (1 << 32) - 1, ((1 << 52) - 1) & ~((1 << 32) - 1)
PRIQ_0_PERM_PRIV, PRIQ_0_PERM_EXEC, PRIQ_0_PERM_READ, PRIQ_0_PERM_WRITE = 1 << 58, 1 << 59, 1 << 60, 1 << 61
PRIQ_0_PRG_LAST, PRIQ_0_SSID_V = 1 << 62, 1 << 63
PRIQ_1_PRG_IDX, PRIQ_1_ADDR_MASK = (1 << 9) - 1, ((1 << 64) - 1) & ~0xFFF
PRI_RESP_DENY, PRI_RESP_FAIL, PRI_RESP_SUCC = 0, 1, 2
CR0_PRIQEN, IRQ_CTRL_PRIQ_IRQEN, GERROR_PRIQ_ABT_ERR = 1 << 1, 1 << 1, 1 << 3
IDR0_PRI, IDR1_PRIQS_SHIFT = 1 << 16, 11


@pytest.mark.parametrize("field,value,word,mask", [
    ("sid", 2**32 - 1, 0, PRIQ_0_SID), ("ssid", 2**20 - 1, 0, PRIQ_0_SSID), ("priv", 1, 0, PRIQ_0_PERM_PRIV),
    ("exec", 1, 0, PRIQ_0_PERM_EXEC), ("read", 1, 0, PRIQ_0_PERM_READ), ("write", 1, 0, PRIQ_0_PERM_WRITE),
    ("last", 1, 0, PRIQ_0_PRG_LAST), ("ssv", 1, 0, PRIQ_0_SSID_V), ("prg_index", 511, 1, PRIQ_1_PRG_IDX),
    ("addr", PRIQ_1_ADDR_MASK, 1, PRIQ_1_ADDR_MASK),
])
def test_priq_entry_layout_matches_linux(field: str, value: int, word: int, mask: int) -> None:
    raw = A.encode_pri(A.PageRequest(**{field: value}))
    assert len(raw) == 16 and int.from_bytes(raw[8 * word:8 * word + 8], "little") == mask


def test_priq_registers_match_linux_and_follow_idr0_pri() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, priqs=7), enable_priq=False)
    assert b.r32(0x00) & IDR0_PRI and (b.r32(0x04) >> IDR1_PRIQS_SHIFT) & 0x1F == 7
    b.w64(PRIQ_BASE, PRIQ | 3)
    assert b.r64(PRIQ_BASE) == PRIQ | 3 and b.r32(PRIQ_PROD) == b.r32(PRIQ_CONS) == 0
    assert b.smmu.read(0xC8, 4) == b.r32(PRIQ_PROD)                   # page-0 alias (PAGE0_REGS_ONLY)
    b.w32(CR0, b.r32(CR0) | CR0_PRIQEN)
    b.w64(PRIQ_BASE, 0)                                                # RO while PRIQEN=1
    assert b.r64(PRIQ_BASE) == PRIQ | 3
    b.w32(IRQ_CTRL, IRQ_CTRL_PRIQ_IRQEN)
    assert b.r32(0x54) & IRQ_CTRL_PRIQ_IRQEN
    no = IopfBench(SmmuFeatures())
    no.w64(PRIQ_BASE, PRIQ | 3)
    assert not no.r32(0x00) & IDR0_PRI and no.r64(PRIQ_BASE) == 0      # no PRI: RAZ/WI
    with pytest.raises(ValueError, match="PRI needs ATS"):
        SmmuFeatures(pri=True, ats=False)


def pri_bench(**kw) -> tuple[IopfBench, object]:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=1), **kw)
    b.s1_stream(5, s=0, eats=1)
    d = b.dma(5)
    d.write(0x44, PCIE_ATS_EN | PCIE_PRI_EN, 4)
    d.write(0x4C, 8, 4)                                                # PRI_ALLOC
    return b, d


def test_page_request_group_from_a_copy_then_success_completes_it() -> None:
    b, d = pri_bench()
    d.regs["IOVA"], d.regs["DST"], d.regs["LEN"] = VA + 0x800, VA + 0x10_0000, 0x2000
    assert d.run(CMD_COPY) == STATUS_PRI_WAIT
    reqs = b.new_page_requests()
    assert [(r.addr, r.read, r.write, r.last) for r in reqs] == [(VA, 1, 0, 0), (VA + 0x1000, 1, 0, 0),
                                                                 (VA + 0x2000, 1, 0, 1)]
    grp = reqs[0].prg_index
    assert {r.prg_index for r in reqs} == {grp} and all(r.sid == 5 and not r.ssv for r in reqs)
    assert d.read(0x54, 4) == grp and b.new_events() == []             # PRI, not events
    for i in range(3):
        b.map(VA + i * 0x1000, DATA + i * 0x1000, PERM_R)
    b.bus.write_bytes(DATA + 0x800, bytes(range(256)) * 32)
    b.cmd("PRI_RESP", sid=5, grpid=grp, resp=PRI_RESP_SUCC)
    assert d.read(0x04, 4) == STATUS_PRI_WAIT                          # now the writes: a second group
    (w,) = b.new_page_requests()[:1]
    assert (w.addr, w.read, w.write) == (VA + 0x10_0000, 0, 1)
    b.map(VA + 0x10_0000, DATA + 0x10_0000, PERM_R | PERM_W, size=0x2000)
    b.cmd("PRI_RESP", sid=5, grpid=w.prg_index, resp=PRI_RESP_SUCC)
    assert d.read(0x04, 4) == STATUS_DONE
    assert b.bus.read_bytes(DATA + 0x10_0000, 0x2000) == b.bus.read_bytes(DATA + 0x800, 0x2000)
    assert b.sync() == 0 and d.read(0x48, 4) & PRI_STOPPED == 0


def test_invalid_request_and_response_failure() -> None:
    b, d = pri_bench()
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_PRI_WAIT
    b.cmd("PRI_RESP", sid=5, grpid=b.new_page_requests()[0].prg_index, resp=PRI_RESP_DENY)
    assert d.read(0x04, 4) == STATUS_PRI_ERR and not d.read(0x48, 4) & PRI_RF
    assert d.run(CMD_READ64) == STATUS_PRI_WAIT
    b.cmd("PRI_RESP", sid=5, grpid=b.new_page_requests()[0].prg_index, resp=PRI_RESP_FAIL)
    assert d.read(0x04, 4) == STATUS_PRI_ERR and d.read(0x48, 4) & PRI_RF
    assert d.run(CMD_READ64) == STATUS_ATS_ERR                          # PRI stopped after Response Failure
    d.write(0x44, PCIE_ATS_EN | PCIE_PRI_EN | PCIE_PRI_RESET, 4)
    assert d.read(0x48, 4) == 0 and d.read(0x44, 4) == PCIE_ATS_EN | PCIE_PRI_EN
    assert d.run(CMD_READ64) == STATUS_PRI_WAIT


def test_response_for_an_unknown_group_sets_uprgi_and_resp_0b11_is_illegal() -> None:
    b, d = pri_bench()
    b.cmd("PRI_RESP", sid=5, grpid=77, resp=PRI_RESP_SUCC)
    assert d.read(0x48, 4) & PRI_UPRGI and b.sync() == 0
    b.cmd("PRI_RESP", sid=5, grpid=1, resp=3)
    assert (b.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL
    nopri = IopfBench(dataclasses.replace(FEATURES, pri=False))
    nopri.cmd("PRI_RESP", sid=5, grpid=1, resp=PRI_RESP_SUCC)
    assert (nopri.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL


def test_priq_overflow_loses_requests_and_answers_the_last_with_success() -> None:
    """A 2-entry queue and a 3-page group: the third (Last) request is lost, OVFLG toggles, and the SMMU answers
    the group with Success so the device asks again; still no room, and after PRI_ROUNDS groups it gives up."""
    b, d = pri_bench(priq_log2=1)
    d.regs["IOVA"], d.regs["LEN"], d.regs["DST"] = VA, 0x3000, VA + 0x10_0000
    assert d.run(CMD_COPY) == STATUS_PRI_ERR
    assert b.r32(PRIQ_PROD) >> 31 == 1 and b.smmu.stats["priq_overflow"] == 1 + 3 * 3   # 4 groups of 3
    auto = [r for r in b.sink.of("smmuv3_pri_resp") if r["auto"]]
    assert [r["code"] for r in auto] == ["SUCCESS"] * 4
    assert len(b.new_page_requests(log2=1)) == 2                       # the two that fit (consumed: room)
    assert b.r32(PRIQ_CONS) >> 31 == 1                                 # software acknowledged the overflow


def test_requests_the_smmu_does_not_accept_are_answered_invalid() -> None:
    b, d = pri_bench(enable_priq=False)                                # PRIQEN=0
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_PRI_ERR
    assert [r["outcome"] for r in b.sink.of("smmuv3_pri_request")] == ["refused"]
    assert b.sink.of("smmuv3_pri_resp")[0]["code"] == "INVALID_REQUEST"


def test_priq_interrupt_msi_and_write_abort() -> None:
    b, d = pri_bench()
    b.w64(PRIQ_IRQ_CFG0, MSI)
    b.w32(PRIQ_IRQ_CFG1, 0x42)
    b.w32(IRQ_CTRL, IRQ_CTRL_PRIQ_IRQEN)
    d.regs["IOVA"] = VA
    d.run(CMD_READ64)
    assert b.bus.read32(MSI) == 0x42 and b.smmu.stats["msi_priq"] == 1
    b.w32(IRQ_CTRL, 0)
    b.w32(IRQ_CTRL, IRQ_CTRL_PRIQ_IRQEN)
    b.w64(PRIQ_IRQ_CFG0, 0)                                             # wired
    b.w32(CR0, b.r32(CR0) & ~CR0_PRIQEN)
    b.w64(PRIQ_BASE, 0x7_0000_0000 | 4)                                # outside memory
    b.w32(CR0, b.r32(CR0) | CR0_PRIQEN)
    d.reset()
    d.write(0x44, PCIE_ATS_EN | PCIE_PRI_EN, 4)
    d.write(0x4C, 8, 4)
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_PRI_ERR                         # lost on write, auto-Success, retried
    assert b.r32(GERROR) & GERROR_PRIQ_ABT_ERR and b.smmu.stats["pri_aborted"] == 4


def test_pri_allocation_limits_the_group() -> None:
    b, d = pri_bench()
    d.write(0x4C, 2, 4)
    d.regs["IOVA"], d.regs["LEN"], d.regs["DST"] = VA, 0x4000, VA + 0x10_0000
    assert d.run(CMD_COPY) == STATUS_PRI_WAIT
    reqs = b.new_page_requests()
    assert [r.last for r in reqs] == [0, 1]
    d.write(0x4C, 0, 4)
    b.map(VA, DATA, size=0x2000)
    b.cmd("PRI_RESP", sid=5, grpid=reqs[0].prg_index, resp=PRI_RESP_SUCC)
    assert d.read(0x04, 4) == STATUS_PRI_ERR                           # no allocation left for the next pages


def test_pri_requests_carry_pasid_and_permissions() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=1))
    from devmodel.smmuv3 import cd as CD
    from devmodel.smmuv3 import ste as S
    from .bench import CDTAB
    b.bus.write_bytes(CDTAB + 3 * 64, CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, t0sz=16, ips=5, epd1=1, asid=9,
                                                      ttb0=b.pt.ttb)))
    b.put_ste(5, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB, s1cdmax=2, eats=1))
    d = b.dma(5)
    d.write(0x44, PCIE_ATS_EN | PCIE_PRI_EN, 4)
    d.write(0x4C, 8, 4)
    d.regs["SSID"], d.regs["ATTR"] = (1 << 31) | 3, 1                  # SSV, SSID 3; privileged
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_PRI_WAIT
    (r,) = b.new_page_requests()
    assert (r.ssv, r.ssid, r.priv, r.read, r.last) == (1, 3, 1, 1, 1)
    b.map(VA, DATA)
    b.cmd("PRI_RESP", sid=5, ssv=1, ssid=3, grpid=r.prg_index, resp=PRI_RESP_SUCC)
    assert d.read(0x04, 4) == STATUS_DONE


def test_priq_prod_read_hook_may_write_page_requests_first() -> None:
    """`SmmuHooks.priq_prod_read`, as `evtq_prod_read`: observers run before a PRIQ_PROD read (page 1 and its
    page-0 alias) returns, and what they queue is in the value read; other reads do not call them."""
    b, _d = pri_bench()
    calls: list[int] = []

    def request() -> None:
        calls.append(1)
        b.smmu.page_request(A.PageRequest(sid=5, prg_index=len(calls), last=1, read=1, addr=VA))

    b.smmu.hooks.priq_prod_read.append(request)
    assert b.r32(PRIQ_PROD) & 0xFF == 1 and len(calls) == 1
    assert b.smmu.read(0xC8, 4) & 0xFF == 2 and len(calls) == 2
    b.r32(PRIQ_CONS)
    assert len(calls) == 2 and [r.prg_index for r in b.smmu.page_requests] == [1, 2]
