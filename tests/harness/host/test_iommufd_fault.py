"""iommufd fault objects (harness/host/iommufd.py `FaultQueue`), checked against Linux
drivers/iommu/iommufd/eventq.c and include/uapi/linux/iommufd.h: IOMMU_FAULT_QUEUE_ALLOC, IOMMU_HWPT_FAULT_ID_VALID
(1 << 2) on a nested HWPT, `struct iommu_hwpt_pgfault` (40 bytes: flags, dev_id, pasid, grpid, perm, __reserved,
addr, length, cookie) read whole groups at a time, `struct iommu_hwpt_page_response` (cookie, code; SUCCESS 0 /
INVALID 1, else EINVAL; an unknown cookie EINVAL; ESPIPE for a size that is not a multiple of the record), the
automatic Invalid responses when a device leaves the HWPT, and the bounds that keep a guest from flooding the
host. The physical response is the driver's (CMD_RESUME / CMD_PRI_RESP)."""
from __future__ import annotations

import errno

import pytest

from devmodel.dmatest import STATUS_DONE, STATUS_FAULT, STATUS_PRI_ERR, STATUS_PRI_WAIT, STATUS_STALLED
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures
from harness.host.iommufd import (IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_HWPT_FAULT_ID_VALID,
                                  IOMMU_PGFAULT_FLAGS_LAST_PAGE, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
                                  HwptPageResponse, HwptPgfault, IommufdError)
from harness.host.iopf import (IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
                               IopfFault)
from harness.host.pcie import DmaTestFunction
from smmu_env import IOVA, RAM_IPA, Board, nest_parent, vste

FEATURES = SmmuFeatures(stall_model=0, ats=True, pri=True, priqs=6, httu=2)
SID, VSID = 0x30, 0x8


def fault_setup(b, g, sid=SID, vsid=VSID, *, pri=False, fault=True, max_groups=256, can_stall=True, pcie=True):
    """The nested flow with a fault object; the guest's stage 1 maps nothing at IOVA (every access faults).
    Stall: CD.S=1; PRI: vSTE.EATS=0b01 and the function's PRI. Returns (dev_id, fault_id, queue, tables, dma)."""
    ic = b.ictx
    dma = b.dmadev(sid)
    dev = ic.open_device(sid, pcie=DmaTestFunction(dma) if pcie else None, can_stall=can_stall)
    ic.kvm_dev_vfio_file_add(g.kvm_vm, dev)
    dev_id = ic.bind(dev)
    _, viommu = nest_parent(ic, g, dev_id, vsid)
    fault_id, q = ic.fault_queue_alloc(max_groups=max_groups) if fault else (0, None)
    t = g.s1_tables()
    cd = g.write_cd(t, asid=5, s=0 if pri else 1)
    words = vste(cd, eats=1 if pri else 0)
    nested = ic.hwpt_alloc(dev_id, viommu, flags=IOMMU_HWPT_FAULT_ID_VALID if fault else 0,
                           data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=words, fault_id=fault_id)
    ic.device_attach(dev_id, nested)
    return dev_id, fault_id, q, t, dma, nested


@pytest.fixture
def board():
    b = Board(FEATURES, policy="shared")
    g = b.guest("g")
    g.run_once(b)
    return b, g


def test_uapi_layouts():
    r = HwptPgfault(flags=3, dev_id=2, pasid=7, grpid=0x1FF, perm=6, addr=0x1234_5000, length=0, cookie=9)
    raw = r.to_bytes()
    assert len(raw) == HwptPgfault.SIZE == 40 and raw[20:24] == bytes(4)             # __reserved
    assert int.from_bytes(raw[24:32], "little") == 0x1234_5000 and raw[36:40] == (9).to_bytes(4, "little")
    assert HwptPgfault.from_bytes(raw) == r
    assert HwptPageResponse(5, 1).to_bytes() == bytes([5, 0, 0, 0, 1, 0, 0, 0])
    assert IOMMU_HWPT_FAULT_ID_VALID == 1 << 2 and (IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID) == (0, 1)


def test_stall_reaches_the_fault_fd_and_the_response_resumes_it(board):
    b, g = board
    dev_id, fault_id, q, t, dma, _ = fault_setup(b, g)
    assert b.driver.masters[SID].iopf                                # attach enabled I/O page faults
    assert b.dma_write(SID, IOVA + 8, 0xAB)[0] == STATUS_STALLED
    assert q.readable
    (r,) = q.read()
    stall = next(e for e in b.smmu.events if e.stall)
    assert (r.flags, r.dev_id, r.grpid, r.perm, r.addr, r.length) == \
        (IOMMU_PGFAULT_FLAGS_LAST_PAGE, dev_id, stall.stag, IOMMU_FAULT_PERM_WRITE, IOVA + 8, 0)
    assert not q.readable and q.read() == []
    t.map(IOVA, RAM_IPA + 0x10_0000, 0x1000)                          # the guest maps the page
    assert q.write([HwptPageResponse(r.cookie, IOMMUFD_PAGE_RESP_SUCCESS)]) == 1
    assert dma.read(0x04, 4) == STATUS_DONE and g.ipa.read64(RAM_IPA + 0x10_0008) == 0xAB
    assert b.driver.stats["resumes"] == 1 and not b.driver.host_events
    with pytest.raises(IommufdError) as e:                            # answered: the cookie is gone
        q.write([HwptPageResponse(r.cookie, IOMMUFD_PAGE_RESP_SUCCESS)])
    assert e.value.errno == errno.EINVAL


def test_invalid_response_aborts(board):
    b, g = board
    _, _, q, _, dma, _ = fault_setup(b, g)
    assert b.dma_read(SID, IOVA)[0] == STATUS_STALLED
    (r,) = q.read()
    assert q.write([HwptPageResponse(r.cookie, IOMMUFD_PAGE_RESP_INVALID)]) == 1
    assert dma.read(0x04, 4) == STATUS_FAULT and b.smmu.stats["stall_abort"] == 1


def test_pri_group_is_read_whole_and_answered_once(board):
    b, g = board
    dev_id, _, q, t, dma, _ = fault_setup(b, g, pri=True)
    assert dma.read(0x44, 4) == 3                                     # host: ATS at attach, PRI with iopf
    dma.write(0x10, IOVA, 8)
    dma.write(0x28, IOVA + 0x8000, 8)
    dma.write(0x18, 0x3000, 4)
    dma.write(0x1C, 3, 4)
    assert dma.read(0x04, 4) == STATUS_PRI_WAIT
    assert q.read(max_records=2) == []                                # a read never splits a group
    recs = q.read_bytes(3 * HwptPgfault.SIZE)
    rs = [HwptPgfault.from_bytes(recs[i:i + 40]) for i in range(0, 120, 40)]
    assert [r.addr for r in rs] == [IOVA, IOVA + 0x1000, IOVA + 0x2000]
    assert [r.last for r in rs] == [False, False, True] and len({(r.cookie, r.grpid) for r in rs}) == 1
    assert all(r.perm == IOMMU_FAULT_PERM_READ and r.dev_id == dev_id for r in rs)
    t.map(IOVA, RAM_IPA + 0x10_0000, 0x3000)
    assert q.write_bytes(HwptPageResponse(rs[0].cookie, IOMMUFD_PAGE_RESP_INVALID).to_bytes()) == 8
    assert dma.read(0x04, 4) == STATUS_PRI_ERR and b.driver.stats["pri_resps"] == 1
    assert b.events("hostsmmu_page_response")[-1]["code"] == 0       # INVALID -> PRI_RESP_DENY


def test_bad_reads_and_writes(board):
    b, g = board
    _, _, q, _, dma, _ = fault_setup(b, g)
    assert b.dma_read(SID, IOVA)[0] == STATUS_STALLED
    for bad in (lambda: q.read_bytes(39), lambda: q.write_bytes(bytes(7))):
        with pytest.raises(IommufdError) as e:
            bad()
        assert e.value.errno == errno.ESPIPE
    (r,) = q.read()
    with pytest.raises(IommufdError) as e:
        q.write([HwptPageResponse(r.cookie, 2)])                      # FAILURE is not a uAPI code
    assert e.value.errno == errno.EINVAL
    with pytest.raises(IommufdError):
        q.write([HwptPageResponse(r.cookie + 100, IOMMUFD_PAGE_RESP_SUCCESS)])
    assert q.write([HwptPageResponse(r.cookie, 1), HwptPageResponse(r.cookie, 1)]) == 1   # stops at the bad one
    assert q.stats["bad_response"] == 3 and dma.read(0x04, 4) == STATUS_FAULT


def test_detach_answers_pending_faults_invalid(board):
    b, g = board
    dev_id, _, q, _, dma, _ = fault_setup(b, g)
    assert b.dma_read(SID, IOVA)[0] == STATUS_STALLED
    (r,) = q.read()                                                   # read, not yet answered
    b.ictx.device_detach(dev_id)
    assert dma.read(0x04, 4) == STATUS_FAULT and q.stats["auto_responses"] == 1
    assert not b.driver.masters[SID].iopf
    with pytest.raises(IommufdError):
        q.write([HwptPageResponse(r.cookie, IOMMUFD_PAGE_RESP_SUCCESS)])


def test_one_vmm_cannot_answer_another_vms_fault(board):
    b, g = board
    g2 = b.guest("g2")
    g2.run_once(b)
    _, _, q0, _, dma0, _ = fault_setup(b, g, SID, VSID)
    _, _, q1, _, dma1, _ = fault_setup(b, g2, SID + 1, VSID)
    assert b.dma_read(SID, IOVA)[0] == STATUS_STALLED and b.dma_read(SID + 1, IOVA)[0] == STATUS_STALLED
    (r0,), (r1,) = q0.read(), q1.read()
    with pytest.raises(IommufdError) as e:                            # VM1's cookie on VM0's fault fd
        q0.write([HwptPageResponse(r1.cookie if r1.cookie != r0.cookie else r1.cookie + 7,
                                   IOMMUFD_PAGE_RESP_INVALID)])
    assert e.value.errno == errno.EINVAL
    assert dma1.read(0x04, 4) == STATUS_STALLED and dma0.read(0x04, 4) == STATUS_STALLED
    assert q1.write([HwptPageResponse(r1.cookie, IOMMUFD_PAGE_RESP_INVALID)]) == 1
    assert dma1.read(0x04, 4) == STATUS_FAULT and dma0.read(0x04, 4) == STATUS_STALLED


def test_unread_groups_are_bounded(board):
    b, g = board
    _, _, q, _, dma, _ = fault_setup(b, g, max_groups=1)
    assert b.dma_read(SID, IOVA)[0] == STATUS_STALLED               # one group waits, unread
    m = b.driver.masters[SID]
    flood = IopfFault(IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, 0x7777, IOMMU_FAULT_PERM_READ, IOVA, source="stall",
                      sid=SID)                                        # a fault report beyond the bound
    b.driver.iopf.report(m, flood)
    assert q.stats["overflow"] == 1 and b.driver.iopf.stats["handler_refused"] == 1
    assert len(q.deliver) == 1 and b.smmu.stats["resume_ignored"] == 1   # refused: RESUME of STAG 0x7777
    assert dma.read(0x04, 4) == STATUS_STALLED                      # the queued fault is untouched
    (r,) = q.read()
    q.write([HwptPageResponse(r.cookie, IOMMUFD_PAGE_RESP_INVALID)])
    assert dma.read(0x04, 4) == STATUS_FAULT


def test_fault_object_rules(board):
    b, g = board
    dev_id, fault_id, q, t, dma, nested = fault_setup(b, g)
    ic = b.ictx
    with pytest.raises(IommufdError) as e:
        ic.destroy(fault_id)                                          # a HWPT holds it
    assert e.value.errno == errno.EBUSY
    with pytest.raises(IommufdError) as e:                            # not on a paging HWPT (here)
        ioas = next(i for i, o in ic.objects.items() if o.kind == "ioas")
        ic.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault_id)
    assert e.value.errno == errno.EOPNOTSUPP
    viommu = next(i for i, o in ic.objects.items() if o.kind == "viommu")
    with pytest.raises(IommufdError) as e:                            # the id must name a fault object
        ic.hwpt_alloc(dev_id, viommu, flags=IOMMU_HWPT_FAULT_ID_VALID, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3,
                      data=(1 | 5 << 1, 0), fault_id=viommu)
    assert e.value.errno == errno.EINVAL
    ic.device_detach(dev_id)
    ic.destroy(nested)
    ic.destroy(fault_id)
    assert fault_id not in ic.objects


def test_device_that_cannot_fault_cannot_attach_to_a_fault_hwpt(board):
    b, g = board
    with pytest.raises(IommufdError) as e:
        fault_setup(b, g, can_stall=False, pcie=False)               # not dma-can-stall, no PRI function
    assert e.value.errno == errno.EOPNOTSUPP and "PRI" in e.value.strerror


def test_without_a_fault_object_the_guest_cannot_stall_the_physical_smmu(board):
    b, g = board
    dev_id, _, _, _, dma, _ = fault_setup(b, g, fault=False)
    ste = b.driver.read_ste(b.driver.masters[SID])
    assert ste.s1stalld == 1                                          # forced: nobody would resume a stall
    st, _, ft = b.dma_read(SID, IOVA)
    assert st == STATUS_FAULT and ft == EventType.C_BAD_CD            # CD.S=1 with S1STALLD=1 is ILLEGAL
    assert not b.smmu.stalls.outstanding()
