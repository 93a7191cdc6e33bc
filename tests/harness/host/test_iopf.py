"""Host I/O page faults (harness/host/iopf.py, sva.py, pcie.py and the driver's iopf side), checked against
Linux: `arm_smmu_handle_event` (a stall record -> an iopf fault: grpid = STAG, LAST_PAGE, perm from RnW/InD/PnU,
PASID from SSV/SSID), `arm_smmu_priq_thread` / the iopf queue's grouping by PRG index until Last
(`iommu_report_device_fault`, `report_partial_fault`), `arm_smmu_page_response` (CMD_RESUME Resp RETRY 1 /
ABORT 2 with the STAG; CMD_PRI_RESP Resp SUCC 2 / DENY 0 / FAIL 1; no CMD_SYNC after either), the SVA handler
(`iommu_sva_handle_iopf`), and the ATS order of `arm_smmu_attach_prepare` / `_commit` / `arm_smmu_enable_ats` /
`arm_smmu_atc_inv_domain` (ATC_INV after TLBI + CMD_SYNC; `arm_smmu_atc_inv_to_cmd`'s Size encoding)."""
from __future__ import annotations

import errno

import pytest

from devmodel.dmatest import (CMD_COPY, PCIE_ATS_EN, PCIE_PRI_EN, STATUS_DONE, STATUS_FAULT, STATUS_PRI_ERR,
                              STATUS_PRI_WAIT, STATUS_STALLED)
from devmodel.pagetable import PERM_R
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3.regs import SmmuFeatures
from harness.host.iopf import (IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
                               IOMMU_FAULT_PERM_PRIV, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
                               IOMMU_PAGE_RESP_INVALID, IopfFault, IopfQueue)
from harness.host.pcie import DmaTestFunction
from harness.host.smmu_driver import SmmuDriverError, atc_inv_cmd
from harness.host.sva import HostMm
from smmu_env import Board

SID = 0x20
FEATURES = SmmuFeatures(stall_model=0, ats=True, pri=True, priqs=6, httu=2)
VA = 0x4_0000


def sva_board(*, stall: bool = True, pri: bool = False, **drv_kw):
    """A board whose device SID (stall-capable, a PCIe function with ATS/PRI) is attached to an SVA domain over a
    process with one VMA of 8 RW pages at VA and one read-only page after it."""
    b = Board(FEATURES, **drv_kw)
    dev = b.dmadev(SID)
    m = b.driver.probe_device(SID, pcie=DmaTestFunction(dev), can_stall=stall)
    b.driver.enable_iopf(m)
    mm = HostMm(b.bus, b.mem)
    mm.mmap(VA, 8 * 4096)
    mm.mmap(VA + 8 * 4096, 4096, PERM_R)
    d = b.driver.alloc_sva(mm, stall=stall, ats=pri)
    b.driver.attach(m, d)
    return b, b.driver, dev, mm, d


def cmds_since(b, n: int) -> list[str]:
    return [r["opcode"] for r in b.events("hostsmmu_cmd")[n:]]


def copy(dev, src: int, dst: int, n: int) -> int:
    dev.write(0x10, src, 8)
    dev.write(0x28, dst, 8)
    dev.write(0x18, n, 4)
    dev.write(0x1C, CMD_COPY, 4)
    return dev.read(0x04, 4)


# -- stalls ---------------------------------------------------------------------------------------------------
def test_stall_record_becomes_an_iopf_fault_as_linux_builds_it():
    b, drv, dev, mm, d = sva_board()
    dev.write(0x0C, 7 | 1 << 31, 4)                         # SSV, SSID 7 (the CD table has one CD: S1DSS)
    dev.write(0x0C, 0, 4)
    dev.write(0x40, 1, 4)                                   # a privileged access
    assert b.dma_write(SID, VA + 0x18, 0xAB)[0] == STATUS_STALLED
    (g,) = drv.iopf.groups
    (f,) = g.faults
    ev = next(e for e in b.smmu.events if e.stall)
    assert (f.source, f.grpid, f.addr, f.sid) == ("stall", ev.stag, VA + 0x18, SID)
    assert f.flags == IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE                 # no SSV: no PASID_VALID
    assert f.perm == IOMMU_FAULT_PERM_WRITE | IOMMU_FAULT_PERM_PRIV       # RnW=0, PnU=1, InD=0
    assert g.domain is d and drv.stats["iopf_faults"] == 1 and drv.host_events == []


def test_sva_handler_maps_the_page_and_resumes_without_a_sync():
    b, drv, dev, mm, d = sva_board()
    assert b.dma_write(SID, VA + 0x18, 0xAB)[0] == STATUS_STALLED
    assert mm.read64(VA + 0x18) is None                     # not populated before the workqueue ran
    n = len(b.events("hostsmmu_cmd"))
    assert drv.iopf.flush() == 1
    assert dev.read(0x04, 4) == STATUS_DONE and mm.read64(VA + 0x18) == 0xAB
    assert cmds_since(b, n) == ["RESUME"]                   # Linux: no CMD_SYNC after CMD_RESUME
    resume = [r for r in b.events("smmuv3_cmdq_opcode") if r["opcode"] == "RESUME"]
    assert len(resume) == 1 and b.events("hostsmmu_page_response")[-1]["code"] == 1     # RETRY
    assert (drv.stats["resumes"], drv.stats["page_responses"], mm.stats["pages_populated"]) == (1, 1, 1)
    assert b.smmu.stats["stall_retry"] == 1 and not drv.cmdq_errors


@pytest.mark.parametrize("addr, why", [(0x100_0000, "no VMA"), (VA + 8 * 4096, "read-only VMA")])
def test_sva_handler_refuses_what_the_process_does_not_allow(addr, why):
    b, drv, dev, mm, d = sva_board()
    assert b.dma_write(SID, addr, 1)[0] == STATUS_STALLED
    drv.iopf.flush()
    assert dev.read(0x04, 4) == STATUS_FAULT, why
    assert b.events("hostsmmu_page_response")[-1]["code"] == 2           # CMDQ_RESUME_0_RESP_ABORT
    assert b.smmu.stats["stall_abort"] == 1 and mm.stats["fault_invalid"] == 1


def test_stall_of_a_master_with_iopf_but_no_handler_is_aborted_at_once():
    b = Board(FEATURES)
    dev = b.dmadev(SID)
    m = b.driver.probe_device(SID, can_stall=True)
    b.driver.enable_iopf(m)
    d = b.driver.alloc_s1("dma", stall=True)                # a DMA domain: no iopf_handler
    b.driver.attach(m, d)
    assert b.dma_read(SID, 0x5000)[0] == STATUS_FAULT      # iopf_error_response: RESUME abort
    assert b.driver.iopf.stats["no_handler"] == 1 and b.driver.stats["resumes"] == 1


def test_enable_iopf_needs_a_way_to_fault():
    b = Board(FEATURES)
    m = b.driver.probe_device(SID)                          # not dma-can-stall, no PCIe function
    with pytest.raises(SmmuDriverError) as e:
        b.driver.enable_iopf(m)
    assert e.value.errno == errno.EOPNOTSUPP
    plain = Board(SmmuFeatures())                           # STALL_MODEL 0b01, no PRI
    with pytest.raises(SmmuDriverError):
        plain.driver.enable_iopf(plain.driver.probe_device(SID, can_stall=True))


def test_work_queue_bound_refuses_with_failure():
    b, drv, dev, mm, d = sva_board()
    drv.iopf.max_work = 0
    assert b.dma_read(SID, VA)[0] == STATUS_FAULT           # handler refused: IOMMU_PAGE_RESP_FAILURE -> abort
    assert drv.iopf.stats["work_overflow"] == 1 and drv.iopf.stats["handler_refused"] == 1


# -- PRI ------------------------------------------------------------------------------------------------------
def test_pri_requests_grouped_by_prg_index_and_answered_after_last():
    b, drv, dev, mm, d = sva_board(stall=False, pri=True)
    assert dev.read(0x44, 4) == PCIE_ATS_EN | PCIE_PRI_EN and dev.read(0x4C, 4) == 32   # pci_enable_ats/_pri
    assert copy(dev, VA, VA + 0x4000, 0x3000) == STATUS_PRI_WAIT
    (g,) = drv.iopf.groups                                  # the three source pages: one group
    assert [f.addr for f in g.faults] == [VA, VA + 0x1000, VA + 0x2000]
    assert [f.last for f in g.faults] == [False, False, True] and {f.grpid for f in g.faults} == {g.last.grpid}
    assert all(f.source == "pri" and f.perm == IOMMU_FAULT_PERM_READ for f in g.faults)
    n = len(b.events("hostsmmu_cmd"))
    drv.iopf.flush()                                        # reads answered; the writes make a second group
    assert cmds_since(b, n)[0] == "PRI_RESP"
    pr = b.events("hostsmmu_page_response")[0]
    assert (pr["how"], pr["grpid"], pr["code"]) == ("pri_resp", g.last.grpid, 2)       # PRI_RESP_SUCC
    drv.iopf.flush()
    assert dev.read(0x04, 4) == STATUS_DONE and len(drv.iopf.groups) == 2
    assert drv.stats["pri_resps"] == 2 and drv.stats["iopf_faults"] == 6 and len(drv.page_requests) == 6


def test_pri_denied_outside_the_vma():
    b, drv, dev, mm, d = sva_board(stall=False, pri=True)
    assert copy(dev, 0x100_0000, VA, 0x1000) == STATUS_PRI_WAIT
    drv.iopf.flush()
    assert dev.read(0x04, 4) == STATUS_PRI_ERR
    assert b.events("hostsmmu_page_response")[-1]["code"] == 0                         # PRI_RESP_DENY


def test_iopf_queue_groups_interleaved_prgs_separately():
    sent = []
    q = IopfQueue(lambda master, fault, code: sent.append((fault.grpid, code)))

    class M:
        sid, pasid_domains = 1, {}

        class domain:                                       # noqa: N801 - a domain object with a handler
            iopf_handler = staticmethod(lambda group: 0)
    last = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
    for flags, grp, addr in ((0, 1, 0x1000), (0, 2, 0x8000), (0, 1, 0x2000), (last, 1, 0x3000)):
        q.report(M, IopfFault(flags, grp, IOMMU_FAULT_PERM_READ, addr, source="pri"))
    (g,) = q.groups
    assert [f.addr for f in g.faults] == [0x1000, 0x2000, 0x3000] and [f.grpid for f in q.partial[1]] == [2]
    q.respond(g, IOMMU_PAGE_RESP_INVALID)
    assert not q.respond(g, 0) and q.stats["response_repeated"] == 1 and sent == [(1, IOMMU_PAGE_RESP_INVALID)]
    q.max_partial = 1                                       # bounded: the oldest partial fault goes
    q.report(M, IopfFault(0, 3, IOMMU_FAULT_PERM_READ, 0x9000, source="pri"))
    assert [f.grpid for f in q.partial[1]] == [3] and q.stats["partial_dropped"] == 1
    pasid = IopfFault(last | IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, 4, IOMMU_FAULT_PERM_READ, 0, pasid=5)
    assert pasid.pasid_valid and q.report(M, pasid).domain is M.domain     # no PASID domain: the master's


def test_priq_overflow_is_acknowledged_and_counted():
    b = Board(FEATURES, msi_doorbell=False, connect_irq=False, priq_log2=1)   # nobody takes the PRIQ IRQ
    drv = b.driver
    dev = b.dmadev(SID)
    m = drv.probe_device(SID, pcie=DmaTestFunction(dev))
    drv.enable_iopf(m)
    mm = HostMm(b.bus, b.mem)
    mm.mmap(VA, 8 * 4096)
    drv.attach(m, drv.alloc_sva(mm, ats=True))
    # 4 requests, 2 slots, nobody draining: the Last request is lost, the SMMU answers the group Success itself,
    # the function asks again into the full queue ... until it gives up (devmodel/dmatest.py PRI_ROUNDS)
    assert copy(dev, VA, VA + 0x4000, 0x4000) == STATUS_PRI_ERR
    assert b.smmu.stats["priq_overflow"] >= 1
    drv.drain_priq()
    assert drv.stats["priq_overflows"] == 1 and b.events("hostsmmu_priq_overflow")
    prod, cons = b.smmu.read(0x100C8, 4), b.smmu.read(0x100CC, 4)
    assert prod >> 31 == cons >> 31                          # OVACKFLG follows OVFLG (queue_sync_cons_ovf)


# -- ATS ------------------------------------------------------------------------------------------------------
def test_atc_inv_size_encoding_is_linuxs():
    def fields(raw):
        c = C.decode(raw)
        return c.addr, c.size, c.ssv
    assert fields(atc_inv_cmd(1, None, 0x1000, 0x1000)) == (0x1000, 0, 0)
    assert fields(atc_inv_cmd(1, None, 0x1000, 0x2000)) == (0x0, 2, 0)      # pages 1..2: span 4 pages at 0
    assert fields(atc_inv_cmd(1, 3, 0x7000, 0x2000)) == (0x0, 4, 1)         # pages 7..8 differ in bit 3
    assert fields(atc_inv_cmd(1, None, 0, 0)) == (0, 52, 0)                 # ATC_INV_SIZE_ALL


def test_ats_enabled_after_the_ste_and_disabled_before_it():
    b = Board(FEATURES)
    dev = b.dmadev(SID)
    fn = DmaTestFunction(dev)
    drv = b.driver
    m = drv.probe_device(SID, pcie=fn)
    n = len(b.sink.records)
    drv.attach(m, drv.alloc_s1("ats", ats=True))
    order = [(r.event, r.fields.get("opcode") or r.fields.get("what")) for r in b.sink.records[n:]
             if r.event in ("hostsmmu_ste", "hostsmmu_cmd", "hostsmmu_ats")]
    ste = order.index(("hostsmmu_ste", None))
    assert order.index(("hostsmmu_cmd", "ATC_INV")) > ste and order[-1] == ("hostsmmu_ats", "enable")
    inv = [r for r in b.events("hostsmmu_cmd") if r["opcode"] == "ATC_INV"]
    assert drv.read_ste(m).eats == 1 and fn.ats_enabled and m.ats_enabled and len(inv) == 1
    n = len(b.sink.records)
    drv.attach(m, drv.alloc_s1("plain"))                    # ATS off: at the function first, then the STE
    seq = [r.event for r in b.sink.records[n:] if r.event in ("hostsmmu_ste", "hostsmmu_ats")]
    assert seq[:2] == ["hostsmmu_ats", "hostsmmu_ste"] and not fn.ats_enabled and drv.read_ste(m).eats == 0
    assert [r["what"] for r in b.events("hostsmmu_ats")][-2:] == ["disable", "atc_inv_all"]


def test_unmap_invalidates_the_atc_after_the_tlb():
    b = Board(FEATURES)
    dev = b.dmadev(SID)
    drv = b.driver
    m = drv.probe_device(SID, pcie=DmaTestFunction(dev))
    d = drv.alloc_s1("ats", ats=True)
    drv.attach(m, d)
    page = b.mem.alloc(4096)
    b.bus.write64(page, 0x1111)
    drv.map(d, 0x8000, page, 4096)
    assert b.dma_read(SID, 0x8000)[:2] == (STATUS_DONE, 0x1111) and dev.read(0x58, 4) == 1    # ATC entry
    n = len(b.events("hostsmmu_cmd"))
    syncs = len(b.events("hostsmmu_sync"))
    drv.unmap(d, 0x8000, 4096)
    assert cmds_since(b, n) == ["TLBI_NH_VA", "ATC_INV"] and len(b.events("hostsmmu_sync")) == syncs + 2
    assert dev.read(0x58, 4) == 0 and drv.stats["atc_invs"] == 2           # enable + this unmap
    assert b.dma_read(SID, 0x8000)[0] != STATUS_DONE


def test_process_munmap_invalidates_tlb_then_atc():
    b, drv, dev, mm, d = sva_board(stall=False, pri=True)
    mm.write64(VA, 0x77)
    assert b.dma_read(SID, VA)[:2] == (STATUS_DONE, 0x77)
    n = len(b.events("hostsmmu_cmd"))
    mm.munmap(VA, 4096)
    assert cmds_since(b, n) == ["TLBI_NH_VA", "ATC_INV"] and dev.read(0x58, 4) == 0
    assert b.dma_read(SID, VA)[0] == STATUS_PRI_WAIT        # gone from the process: a new page request
