"""Recoverable faults delivered by the vSMMU (harness/vsmmu.py, harness/fault_forward.py) over the host's iommufd
fault object: a stall reaches the guest as an event with Stall=1 and a vSTAG (IHI 0070 7.3: Stall bit 95, STAG
[79:64]; RnW/InD/PnU of the access), a page request group as PRI queue entries (IHI 0070 8.1: PRG index, Last);
the guest's CMD_RESUME / CMD_PRI_RESP becomes the page response. Hostile guests: another VM's or a made-up
vSTAG / PRG index / vSID is ignored (a RESUME naming no stall is ignored, IHI 0070 4.6.x, as the model does);
floods are bounded; nothing raises into the host (`internal_errors`)."""
from __future__ import annotations

import pytest

from devmodel.dmatest import CMD_COPY, STATUS_DONE, STATUS_FAULT, STATUS_PRI_ERR, STATUS_PRI_WAIT, STATUS_STALLED
from devmodel.smmuv3.fault import EventType, Fault
from devmodel.smmuv3.regs import SmmuFeatures
from harness.vsmmu import vsmmu_features
from vsmmu_env import two_vm_board

FEATURES = SmmuFeatures(stall_model=0, ats=True, pri=True, priqs=6, httu=2)
IOVA = 0x1000_0000
RETRY, ABORT, TERM = 1, 2, 0                      # CMD_RESUME Resp (Linux CMDQ_RESUME_0_RESP_*)


@pytest.fixture
def board():
    m, sink, (nv0, g0), (nv1, g1) = two_vm_board(iopf=True, ats=True, features=FEATURES)
    yield m, sink, nv0, g0, nv1, g1
    assert nv0.vsmmu.internal_errors == [] and nv1.vsmmu.internal_errors == []


def stall_setup(g, nv, asid=3):
    """A stage-1 vSTE whose CD stalls (CD.S=1) and maps nothing yet; returns the guest's table builder."""
    g.init()
    b = g.s1()
    assert g.install(nv.vsid, g.s1_ste(g.write_cd(b, asid, s=1))) == 0
    return b


def pri_setup(g, nv, asid=3):
    """A stage-1 vSTE with EATS=0b01 (ATS: faults come as page requests) and the guest's PRI queue."""
    g.init(priq=True)
    b = g.s1()
    assert g.install(nv.vsid, g.s1_ste(g.write_cd(b, asid), eats=1)) == 0
    return b


def start_copy(nv, src, dst, n):
    mm = nv.mmio
    mm.write(0x10, src, 8)
    mm.write(0x28, dst, 8)
    mm.write(0x18, n, 4)
    mm.write(0x1C, CMD_COPY, 4)
    return mm.read(0x04, 4)


def test_features_offer_what_the_host_allows_only_when_asked():
    m, sink, (nv0, g0), _ = two_vm_board(iopf=True, ats=True, features=FEATURES)
    f = nv0.vsmmu.features
    assert (f.stall_model, f.pri, f.ats, f.priqs, f.httu) == (0, True, True, 6, 0)
    caps = nv0.host.driver.caps
    plain = vsmmu_features(caps)
    assert (plain.stall_model, plain.pri, plain.ats, plain.httu) == (1, False, False, 0)
    assert vsmmu_features(caps, httu=True).httu == 2
    assert vsmmu_features(caps, iopf=True).pri is False               # PRI needs ATS offered too


def test_stall_becomes_a_guest_event_with_a_vstag_and_resume_retries(board):
    m, sink, nv0, g0, nv1, g1 = board
    b = stall_setup(g0, nv0)
    assert g0.dma_write(IOVA + 8, 0xAB)[0] == STATUS_STALLED
    (ev,) = g0.events()
    assert (ev.type, ev.sid, ev.stall, ev.input_addr, ev.rnw, ev.ssv) == \
        (EventType.F_TRANSLATION, nv0.vsid, 1, IOVA + 8, 0, 0)
    page = g0.page()
    b.map(IOVA, page, 4096)
    before = nv0.vsmmu.snapshot()
    assert g0.run("RESUME", sid=nv0.vsid, stag=ev.stag, resp=RETRY) == 0
    assert nv0.mmio.read(0x04, 4) == STATUS_DONE and g0.read64(page + 8) == 0xAB
    c = nv0.vsmmu.cost(before)
    assert (c["page_responses"], c["fault_writes"], c.get("host_calls", 0)) == (1, 1, 0)     # no invalidation
    assert [r["what"] for r in sink.of("vsmmu_fault")] == ["stall", "resume"]
    assert nv0.host.driver.stats["resumes"] == 1


@pytest.mark.parametrize("resp", [ABORT, TERM])
def test_resume_abort_and_termination_become_invalid(board, resp):
    m, sink, nv0, g0, nv1, g1 = board
    stall_setup(g0, nv0)
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED
    (ev,) = g0.events()
    g0.run("RESUME", sid=nv0.vsid, stag=ev.stag, resp=resp)
    assert nv0.mmio.read(0x04, 4) == STATUS_FAULT
    assert sink.of("iommufd_fault")[-1]["code"] == 1                  # IOMMUFD_PAGE_RESP_INVALID


def test_page_request_group_in_the_guest_priq_and_pri_resp(board):
    m, sink, nv0, g0, nv1, g1 = board
    b = pri_setup(g0, nv0)
    assert start_copy(nv0, IOVA, IOVA + 0x8000, 0x2000) == STATUS_PRI_WAIT
    reqs = g0.page_requests()
    assert [(r.sid, r.addr, r.last, r.read) for r in reqs] == [(nv0.vsid, IOVA, 0, 1), (nv0.vsid, IOVA + 0x1000, 1, 1)]
    assert len({r.prg_index for r in reqs}) == 1
    b.map(IOVA, g0.page(), 0x1000)
    b.map(IOVA + 0x1000, g0.page(), 0x1000)
    assert g0.run("PRI_RESP", sid=nv0.vsid, grpid=reqs[0].prg_index, resp=0b10) == 0    # Success
    (w,) = {r.prg_index for r in g0.page_requests()}                  # then the writes ask
    assert nv0.mmio.read(0x04, 4) == STATUS_PRI_WAIT
    g0.run("PRI_RESP", sid=nv0.vsid, grpid=w, resp=0b00)              # Invalid Request
    assert nv0.mmio.read(0x04, 4) == STATUS_PRI_ERR
    assert nv0.vsmmu.vmm["page_responses"] == 2 and nv0.host.driver.stats["pri_resps"] == 2


def test_guest_cannot_answer_what_it_was_not_given(board):
    m, sink, nv0, g0, nv1, g1 = board
    stall_setup(g0, nv0)
    b1 = stall_setup(g1, nv1)
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED and g1.dma_read(IOVA)[0] == STATUS_STALLED
    (e0,), (e1,) = g0.events(), g1.events()
    # vm0 names vm1's vSID (the same number is vm1's, not vm0's), a made-up vSTAG, and vm1's vSTAG on its vSID
    for sid, stag in ((nv1.vsid + 1, e1.stag), (nv0.vsid, e0.stag + 5), (nv0.vsid + 3, 0)):
        assert g0.run("RESUME", sid=sid, stag=stag, resp=ABORT) == 0        # ignored, not an error
    assert nv0.vsmmu.vmm["resume_ignored"] == 3
    assert g0.run("PRI_RESP", sid=nv0.vsid, grpid=3, resp=0) == 0 and nv0.vsmmu.vmm["pri_resp_ignored"] == 1
    assert g0.run("STALL_TERM", sid=nv1.vsid + 1) == 0
    assert nv1.mmio.read(0x04, 4) == STATUS_STALLED and nv0.mmio.read(0x04, 4) == STATUS_STALLED
    b1.map(IOVA, g1.page(), 4096)
    g1.run("RESUME", sid=nv1.vsid, stag=e1.stag, resp=RETRY)             # each VM answers its own
    assert nv1.mmio.read(0x04, 4) == STATUS_DONE and nv0.mmio.read(0x04, 4) == STATUS_STALLED
    g0.run("RESUME", sid=nv0.vsid, stag=e0.stag, resp=RETRY)
    g0.run("RESUME", sid=nv0.vsid, stag=e0.stag, resp=RETRY)             # twice: the second is ignored
    assert nv0.mmio.read(0x04, 4) == STATUS_STALLED                       # still unmapped: stalled again
    assert nv0.vsmmu.vmm["resume_ignored"] == 4


def test_stall_term_and_smmuen_off_end_the_guests_stalls(board):
    m, sink, nv0, g0, nv1, g1 = board
    stall_setup(g0, nv0)
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED
    g0.events()
    assert g0.run("STALL_TERM", sid=nv0.vsid) == 0
    assert nv0.mmio.read(0x04, 4) == STATUS_FAULT and nv0.vsmmu.vmm["stalls_terminated"] == 1
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED
    g0.events()
    g0.w("CR0", 0b1100)                                                   # SMMUEN 1 -> 0
    assert nv0.mmio.read(0x04, 4) == STATUS_FAULT


def test_full_guest_evtq_holds_the_stall_record_back(board):
    m, sink, nv0, g0, nv1, g1 = board
    b = stall_setup(g0, nv0)
    for i in range(32):                                                   # fill the guest EVTQ (32 entries)
        nv0.vsmmu.record_fault(Fault(EventType.F_TRANSLATION, sid=nv0.vsid, addr=i))
    assert nv0.vsmmu.evtq.state().full
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED
    nv0.vsmmu.poll_faults()
    assert nv0.vsmmu.vmm["stalls_held"] >= 1 and nv0.vsmmu.vmm["stalls_delivered"] == 0
    evs = g0.events()                                                     # consumes: room again ...
    assert not any(e.stall for e in evs)
    (ev,) = [e for e in g0.events() if e.stall]                           # ... the held stall arrives
    b.map(IOVA, g0.page(), 4096)
    g0.run("RESUME", sid=nv0.vsid, stag=ev.stag, resp=RETRY)
    assert nv0.mmio.read(0x04, 4) == STATUS_DONE


def test_guest_without_evtq_gets_its_stalls_terminated(board):
    m, sink, nv0, g0, nv1, g1 = board
    stall_setup(g0, nv0)
    g0.w("CR0", 0b1001)                                                   # EVTQEN off (SMMUEN stays on)
    assert g0.dma_read(IOVA)[0] == STATUS_STALLED
    nv0.vsmmu.poll_faults()
    assert nv0.mmio.read(0x04, 4) == STATUS_FAULT


def test_a_guest_that_never_answers_cannot_pile_up_faults(board):
    m, sink, nv0, g0, nv1, g1 = board
    stall_setup(g0, nv0)
    fwd = nv0.vsmmu.forwarder
    fwd.max_outstanding = 2
    for i in range(4):                                                    # never answered
        st = g0.dma_read(IOVA + i * 0x1000)[0]
        g0.events()
        if st == STATUS_STALLED:
            nv0.mmio.dev.reset()                                          # the device gives up; the stall stays
    assert len(fwd.outstanding) == 2 and nv0.vsmmu.vmm["fault_refused_full"] >= 1
    assert len(nv0.host.smmu.stalls.outstanding()) == 2                   # the refused ones were aborted


def test_page_requests_the_guest_queue_cannot_take_are_answered_as_an_smmu_would(board):
    m, sink, nv0, g0, nv1, g1 = board
    g0.init(priq=False)                                                   # PRIQEN=0: requests not accepted
    b = g0.s1()
    assert g0.install(nv0.vsid, g0.s1_ste(g0.write_cd(b, 3), eats=1)) == 0
    assert start_copy(nv0, IOVA, IOVA + 0x8000, 0x1000) == STATUS_PRI_WAIT
    nv0.vsmmu.poll_faults()                                               # the model answers Invalid Request
    assert nv0.mmio.read(0x04, 4) == STATUS_PRI_ERR
    assert nv0.vsmmu.vmm["fault_answered"] == 1 and sink.of("iommufd_fault")[-1]["code"] == 1
    assert [r["outcome"] for r in sink.of("vsmmu_fault")] == ["answered_invalid_request"]
