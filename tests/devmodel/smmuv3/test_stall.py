"""The stall model (IHI 0070 3.12.2) end to end: a DMA test device's transaction faults on a stream whose CD.S
(or STE.S2S) is 1, is held in the SMMU, its event carries Stall=1 and the STAG (7.3), and CMD_RESUME /
CMD_STALL_TERM (chapter 4) end it; SMMUEN, EVTQ state, CFGI/TLBI around a stall and STALL_MAX."""
from __future__ import annotations

import dataclasses

import pytest

from devmodel.dmatest import (CMD_COPY, CMD_READ64, CMD_WRITE64, STATUS_BADCMD, STATUS_DONE, STATUS_FAULT,
                              STATUS_STALLED)
from devmodel.pagetable import PERM_R, PERM_W, PageTableBuilder
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType, Fault
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.smmuv3.stall import Resume, resume_action

from .bench import CMDQ, CMDQ_CONS, CR0, EVTQ_BASE, EVTQ_PROD, GERROR, GERRORN, RAM, S2_OK
from .iopf_env import DATA, FEATURES, VA, IopfBench

# Linux arm-smmu-v3.h CMDQ_RESUME_0_RESP_TERM / RETRY / ABORT
RESP_TERM, RESP_RETRY, RESP_ABORT = 0, 1, 2


def stalled_read(b: IopfBench, sid: int = 5, va: int = VA + 8):
    d = b.devs.get(sid) or b.dma(sid)
    d.regs["IOVA"] = va
    assert d.run(CMD_READ64) == STATUS_STALLED
    return d


def test_resume_action_decodes_ac_and_ab() -> None:
    """CMD_RESUME Resp = {Ab, Ac}: Ac=1 retry; Ac=0 terminate, Ab=1 with an abort, Ab=0 RAZ/WI."""
    assert resume_action(RESP_RETRY) is Resume.RETRY and resume_action(0b11) is Resume.RETRY
    assert resume_action(RESP_ABORT) is Resume.ABORT and resume_action(RESP_TERM) is Resume.RAZWI


def test_stalled_transaction_is_held_and_its_event_has_stall_and_stag() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    assert d.regs["COUNT"] == 0 and d.read(0x04, 4) == STATUS_STALLED          # nothing completed
    (ev,) = b.new_events()
    assert ev.type == EventType.F_TRANSLATION and ev.stall == 1 and ev.sid == 5 and ev.input_addr == VA + 8
    assert ev.rnw == 1 and d.read(0x50, 4) == ev.stag                          # the device's STAG register
    assert [f.stag for f in b.smmu.stalls.outstanding()] == [ev.stag]
    assert b.sink.of("smmuv3_stall")[0]["stag"] == ev.stag


def test_resume_retry_sees_the_new_mapping_and_completes_the_transfer() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    (ev,) = b.new_events()
    b.map(VA, DATA)                       # invalid -> valid: no invalidation needed (nothing was cached)
    b.bus.write64(DATA + 8, 0xCAFE)
    b.resume(5, ev.stag, RESP_RETRY)
    assert b.sync() == 0
    assert d.read(0x04, 4) == STATUS_DONE and d.regs["DATA"] == 0xCAFE and d.regs["COUNT"] == 1
    assert not b.smmu.stalls.outstanding() and b.new_events() == []
    assert [r["action"] for r in b.sink.of("smmuv3_stall_end")] == ["retry"]


def test_resume_retry_that_faults_again_stalls_again_with_a_new_stag() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    (ev1,) = b.new_events()
    b.resume(5, ev1.stag, RESP_RETRY)                  # nothing mapped yet
    (ev2,) = b.new_events()
    assert ev2.stall == 1 and ev2.stag != ev1.stag and d.read(0x04, 4) == STATUS_STALLED
    assert d.read(0x50, 4) == ev2.stag
    b.map(VA, DATA)
    b.resume(5, ev1.stag, RESP_RETRY)                  # the old STAG names nothing any more: ignored
    assert d.read(0x04, 4) == STATUS_STALLED and b.smmu.stats["resume_ignored"] == 1
    b.resume(5, ev2.stag, RESP_RETRY)
    assert d.read(0x04, 4) == STATUS_DONE


def test_resume_abort_fails_the_transfer_and_term_completes_it_raz_wi() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    b.resume(5, b.new_events()[0].stag, RESP_ABORT)
    assert d.read(0x04, 4) == STATUS_FAULT and d.regs["FAULT_TYPE"] == EventType.F_TRANSLATION
    assert d.regs["COUNT"] == 0
    d.regs["DATA"] = 0x1111
    stalled_read(b)
    b.resume(5, b.new_events()[0].stag, RESP_TERM)     # RAZ/WI: the read returns zero, the device sees success
    assert d.read(0x04, 4) == STATUS_DONE and d.regs["DATA"] == 0
    b.map(VA + 0x1000, DATA)                           # a copy whose destination page faults: write dropped
    b.bus.write64(DATA, 0x77)
    d.regs["IOVA"], d.regs["DST"], d.regs["LEN"] = VA + 0x1000, VA + 0x2000, 8
    assert d.run(CMD_COPY) == STATUS_STALLED
    (ev,) = b.new_events()
    assert ev.rnw == 0 and ev.input_addr == VA + 0x2000
    b.resume(5, ev.stag, RESP_TERM)
    assert d.read(0x04, 4) == STATUS_DONE and d.regs["COUNT"] == 2


def test_resume_for_no_stall_is_ignored_not_an_error() -> None:
    b = IopfBench()
    b.s1_stream(5)
    stalled_read(b)
    stag = b.new_events()[0].stag
    b.resume(5, stag + 1, RESP_RETRY)
    b.resume(6, stag, RESP_RETRY)
    assert b.sync() == 0 and b.smmu.stats["resume_ignored"] == 2 and len(b.smmu.stalls) == 1
    assert not b.smmu.gerror_active()


def test_stall_term_aborts_every_stall_of_its_stream_only() -> None:
    b = IopfBench()
    b.s1_stream(5)
    b.s1_stream(6, asid=2)
    d5, d6 = stalled_read(b, 5), stalled_read(b, 6)
    f = b.smmu.translate(5, None, VA + 0x5000)          # a second stall on stream 5 (nobody waits for it)
    assert f.stall and len(b.smmu.stalls) == 3
    b.cmd("STALL_TERM", sid=5)
    assert d5.read(0x04, 4) == STATUS_FAULT and d6.read(0x04, 4) == STATUS_STALLED
    assert [s.sid for s in b.smmu.stalls.outstanding()] == [6]
    assert b.smmu.stats["stall_end_unwaited"] == 1
    assert {r["why"] for r in b.sink.of("smmuv3_stall_end")} == {"stall_term"}


def test_smmuen_1_to_0_terminates_stalls() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    b.w32(CR0, b.r32(CR0) & ~1)
    assert d.read(0x04, 4) == STATUS_FAULT and not b.smmu.stalls.outstanding()
    assert b.sink.of("smmuv3_stall_end")[-1]["why"] == "smmuen_off"


def test_a_stall_that_cannot_be_recorded_is_terminated() -> None:
    """With the EVTQ disabled software could never learn the STAG: the fault terminates instead."""
    b = IopfBench()
    b.s1_stream(5)
    b.w32(CR0, b.r32(CR0) & ~0b100)                    # EVTQEN=0
    d = b.dma(5)
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_FAULT and not b.smmu.stalls.outstanding()
    assert b.smmu.faults[-1].stall is False and b.smmu.stats["stall_terminated_evtq_off"] == 1


def test_cd_r0_does_not_stop_a_stall_being_recorded() -> None:
    b = IopfBench()
    b.s1_stream(5, r=0)
    stalled_read(b)
    (ev,) = b.new_events()
    assert ev.stall == 1
    f = b.smmu.translate(5, None, VA + 0x9000, write=True)
    assert f.stall and b.new_events()[0].rnw == 0


def test_stall_record_waits_for_room_in_a_full_evtq() -> None:
    """A stall's record is not lost to a full queue (no OVFLG): it is written when software consumes."""
    b = IopfBench()
    b.s1_stream(5)
    b.put_ste(9, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=RAM + 0x3F_0000))   # C_BAD_CD: fills the queue
    for i in range(16):
        assert b.smmu.translate(9, None, i * 8).type == EventType.C_BAD_CD
    assert b.r32(EVTQ_PROD) & 0x1F == 0x10                                # full (wrapped), no overflow yet
    d = stalled_read(b)
    assert not b.r32(EVTQ_PROD) >> 31 and b.smmu.stats["evtq_stall_pending"] == 1
    evs = b.new_events()                                # consuming makes room: the stall record goes in
    assert len(evs) == 16 and b.new_events()[0].stall == 1
    assert d.read(0x04, 4) == STATUS_STALLED


def test_disabling_the_evtq_drops_a_waiting_stall_record_and_ends_its_stall() -> None:
    b = IopfBench()
    b.s1_stream(5)
    b.put_ste(9, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=RAM + 0x3F_0000))
    for i in range(16):
        b.smmu.translate(9, None, i * 8)
    d = stalled_read(b)
    b.w32(CR0, b.r32(CR0) & ~0b100)
    assert d.read(0x04, 4) == STATUS_FAULT and b.smmu.dropped[-1].stall == 1
    assert b.sink.of("smmuv3_stall_end")[-1]["why"] == "evtq_disabled"


def test_stall_max_outstanding_then_faults_terminate() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, stall_max=2))
    assert b.r32(0x14) >> 16 == 2                       # IDR5.STALL_MAX
    b.s1_stream(5)
    fs = [b.smmu.translate(5, None, VA + i * 0x1000) for i in range(3)]
    assert [f.stall for f in fs] == [True, True, False]
    assert [e.stall for e in b.new_events()] == [1, 1, 0]


def test_stall_forced_model_and_terminate_only_model() -> None:
    b = IopfBench(dataclasses.replace(FEATURES, stall_model=2))
    b.s1_stream(5, s=1)
    assert b.smmu.translate(5, None, VA).stall
    t = IopfBench(SmmuFeatures(stall_model=1))          # CD.S=0 everywhere: faults terminate
    t.s1_stream(5, s=0)
    assert not t.smmu.translate(5, None, VA).stall
    t.cmd("RESUME", sid=5, stag=0)
    assert (t.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL and t.r32(GERROR) & 1
    assert IopfBench(SmmuFeatures(stall_model=1)).r32(0x14) >> 16 == 0   # no STALL_MAX without stalls


def test_only_translation_related_faults_stall() -> None:
    """F_WALK_EABT (a table outside memory) terminates even with CD.S=1."""
    b = IopfBench()
    pt = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=1, ias=48)
    b.s1_stream(5, pt=pt)
    b.bus.write64(pt.ttb, 0x7_0000_0003)                # level-0 table descriptor to unmapped memory
    f = b.smmu.translate(5, None, 0x1000)
    assert f.type == EventType.F_WALK_EABT and not f.stall


def test_retry_uses_the_configuration_in_force_at_retry() -> None:
    """CFGI around a stall: without CFGI_STE the cached configuration is used; after it the new STE."""
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    b.map(VA, DATA)
    b.put_ste(5, S.Ste(v=1, config=S.CONFIG_ABORT))      # software changes the STE...
    b.resume(5, b.new_events()[0].stag, RESP_RETRY)      # ...but does not invalidate: the cached CD is used
    assert d.read(0x04, 4) == STATUS_DONE
    stalled_read(b, va=VA + 0x7000)
    b.cmd("CFGI_STE", sid=5)
    b.resume(5, b.new_events()[0].stag, RESP_RETRY)
    assert d.read(0x04, 4) == STATUS_FAULT and b.new_events() == []   # aborted by the new STE, no event


def test_retry_through_a_stale_tlb_entry_faults_until_the_tlbi() -> None:
    """A permission fault stalls; making the page writable without TLBI leaves the read-only entry cached, so
    the retry stalls again; after TLBI_NH_VA + CMD_SYNC it completes."""
    b = IopfBench()
    b.s1_stream(5)
    b.map(VA, DATA, PERM_R)
    d = b.dma(5)
    d.regs["IOVA"], d.regs["DATA"] = VA, 0x55
    assert d.run(CMD_WRITE64) == STATUS_STALLED
    (ev,) = b.new_events()
    assert ev.type == EventType.F_PERMISSION and ev.rnw == 0
    b.pt.unmap(VA, 4096)
    b.map(VA, DATA, PERM_R | PERM_W)
    b.resume(5, ev.stag, RESP_RETRY)
    (ev2,) = b.new_events()
    assert ev2.type == EventType.F_PERMISSION and d.read(0x04, 4) == STATUS_STALLED
    b.cmd("TLBI_NH_VA", asid=1, addr=VA, leaf=1)
    assert b.sync() == 0
    b.resume(5, ev2.stag, RESP_RETRY)
    assert d.read(0x04, 4) == STATUS_DONE and b.bus.read64(DATA) == 0x55


def test_stage2_fault_stalls_by_ste_s2s() -> None:
    b = IopfBench()
    s2 = PageTableBuilder(b.bus, b.alloc, granule=4096, stage=2, ias=40)
    s2_fields = {**S2_OK, "s2ttb": s2.ttb, "s2t0sz": s2.tsz, "s2sl0": s2.sl0}
    b.put_ste(7, S.Ste(**{**s2_fields, "s2s": 1}))
    b.cmd("CFGI_STE", sid=7)
    d = stalled_read(b, 7, va=0x8000)
    (ev,) = b.new_events()
    assert ev.s2 == 1 and ev.stall == 1 and ev.class_ == 2       # CLASS=IN, stage 2
    s2.map(0x8000, DATA, 4096, PERM_R | PERM_W)
    b.resume(7, ev.stag, RESP_RETRY)
    assert d.read(0x04, 4) == STATUS_DONE
    b.put_ste(8, S.Ste(**{**s2_fields, "s2s": 0}))
    assert not b.smmu.translate(8, None, 0x9000).stall           # S2S=0: terminate


def test_a_command_while_the_device_waits_is_refused() -> None:
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    assert d.run(CMD_READ64) == STATUS_STALLED | STATUS_BADCMD
    d.reset()                                           # abandons the transfer; the stall stays in the SMMU
    assert len(b.smmu.stalls) == 1
    b.cmd("STALL_TERM", sid=5)
    assert d.read(0x04, 4) == 0 and not b.smmu.stalls.outstanding()


def test_a_caller_without_a_waiter_sees_the_stall_as_a_fault() -> None:
    b = IopfBench()
    b.s1_stream(5)
    f = b.smmu.translate(5, None, VA)
    assert isinstance(f, Fault) and f.stall and not hasattr(f, "pa")
    assert not b.smmu.wait_stall(dataclasses.replace(f, stag=f.stag + 1), lambda end: None)
    b.resume(5, f.stag, RESP_RETRY)                   # still unmapped: stalls again, with a new STAG
    assert b.smmu.stats["stall_end_unwaited"] == 1 and [g.stag for g in b.smmu.stalls.outstanding()] != [f.stag]


@pytest.mark.parametrize("resp,status", [(RESP_RETRY, STATUS_STALLED), (RESP_ABORT, STATUS_FAULT)])
def test_resume_from_the_command_queue_is_reentrant_safe(resp: int, status: int) -> None:
    """The device continues inside the CMD_RESUME; a retry that stalls again parks it again."""
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    b.submit(C.encode("RESUME", sid=5, stag=b.new_events()[0].stag, resp=resp), C.encode("CMD_SYNC"))
    assert d.read(0x04, 4) == status and b.cons() == b.prod


def test_a_resume_behind_a_command_error_waits_for_the_recovery() -> None:
    """IHI 0070 7.1: consumption stops at the erroneous command; the RESUME after it runs only once software
    has fixed the queue and acknowledged GERROR.CMDQ_ERR; the stall is held meanwhile."""
    b = IopfBench()
    b.s1_stream(5)
    d = stalled_read(b)
    b.map(VA, DATA)
    bad = b.prod & 0xF
    b.submit(bytes([0x7F]) + bytes(15), C.encode("RESUME", sid=5, stag=b.new_events()[0].stag, resp=RESP_RETRY))
    assert (b.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL and d.read(0x04, 4) == STATUS_STALLED
    b.bus.write_bytes(CMDQ + bad * 16, C.encode("CMD_SYNC"))            # arm_smmu_cmdq_skip_err
    b.w32(GERRORN, b.r32(GERROR))
    assert d.read(0x04, 4) == STATUS_DONE and not b.smmu.stalls.outstanding()


def test_a_stall_whose_event_write_aborts_is_terminated_with_evtq_abt_err() -> None:
    b = IopfBench()
    b.s1_stream(5)
    b.w32(CR0, b.r32(CR0) & ~0b100)
    b.w64(EVTQ_BASE, 0x7_0000_0000 | 4)                                 # outside memory
    b.w32(CR0, b.r32(CR0) | 0b100)
    d = b.dma(5)
    d.regs["IOVA"] = VA
    assert d.run(CMD_READ64) == STATUS_FAULT and not b.smmu.stalls.outstanding()
    assert b.r32(GERROR) & (1 << 2) and b.smmu.stats["stall_terminated_evtq_abort"] == 1
