"""Bad input never raises: random register writes, random command/STE/CD words and random
translations keep the model consistent -- no exception, PROD/CONS within their queues, CONS never passing
PROD, GERROR/GERRORN pairing (an active CMDQ_ERR stops consumption; acknowledged errors are inactive).
With stalls, ATS and PRI: random DMA from test devices (untranslated, ATS, PRI), random RESUME / STALL_TERM /
PRI_RESP / ATC_INV commands and page requests: every stall ends exactly once (the trace's starts and ends pair
up, and disabling the SMMU ends the rest), a device shown STALLED waits on an outstanding stall, and the PRI
queue's indices stay consistent (PROD at most a queue ahead of CONS).

The default suite runs a bounded number of examples; `-m slow` runs a long campaign."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.dmatest import DMATEST_BASE, STATUS_STALLED, DmaTestDevice
from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.ats import PageRequest
from devmodel.smmuv3.fault import Fault
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import CDTAB, CMDQ, RAM, RAM_SIZE, STRTAB, Bench

PRIQ = RAM + 0x48_0000

# every implemented register offset (page 0 and page 1) plus some holes and misaligned offsets
OFFSETS = [0x00, 0x04, 0x14, 0x20, 0x24, 0x28, 0x2C, 0x40, 0x44, 0x50, 0x54, 0x60, 0x64, 0x68, 0x6C, 0x70, 0x74,
           0x80, 0x84, 0x88, 0x90, 0x94, 0x98, 0x9C, 0xA0, 0xA4, 0xA8, 0xAC, 0xB0, 0xB8, 0xBC, 0xC0, 0x100A8,
           0x100AC, 0x3, 0x1FFFC, 0xFFF0, 0xC4, 0xC8, 0xCC, 0xD0, 0xD8, 0xDC, 0x100C8, 0x100CC]
# addresses that are mostly in RAM (so the model really walks what we write) and sometimes not
ADDRS = st.one_of(st.sampled_from([STRTAB, CMDQ, CDTAB, RAM + 0x20_0000, RAM, 0, 2**52 - 64]),
                  st.integers(0, 2**64 - 1))
OPS = sorted(C.OPCODES.values())

write_op = st.tuples(st.just("w"), st.sampled_from(OFFSETS), st.integers(-1, 2**64), st.sampled_from([1, 2, 4, 8]))
base_op = st.tuples(st.just("base"), st.sampled_from([0x80, 0x90, 0xA0, 0xC0]), ADDRS, st.integers(0, 31))
mem_op = st.tuples(st.just("mem"), st.integers(0, 0x40_0000 // 8 - 1), st.integers(0, 2**64 - 1),
                   st.sampled_from(["strtab", "cmdq", "cd", "priq", "any"]))
cmd_op = st.tuples(st.just("cmd"), st.sampled_from(OPS + [0, 0x7F, 0xFF]), st.integers(0, 2**120 - 1),
                   st.integers(1, 6))
tr_op = st.tuples(st.just("tr"), st.integers(-2, 2**17), st.one_of(st.none(), st.integers(-1, 2**21)),
                  st.integers(0, 2**64 - 1), st.booleans())
en_op = st.tuples(st.just("en"), st.integers(0, 0x1F), st.integers(0, 7), st.booleans())
ack_op = st.tuples(st.just("ack"), st.integers(0, 0x1FF), st.just(0), st.just(0))
SIDS = st.sampled_from([0, 1, 2, 3, 255, 2**16])
DMA_ADDRS = st.one_of(st.sampled_from([0x1000, 0x1FF8, 0x2000, 0x3000, 0x5000, 0x9000, 0x7_FFFF_F000]), ADDRS)
dma_op = st.tuples(st.just("dma"), st.integers(0, 3), st.integers(0, 4), DMA_ADDRS, st.integers(0, 7),
                   st.integers(0, 9))
iopf_op = st.tuples(st.just("iopf"), st.sampled_from(["RESUME", "STALL_TERM", "PRI_RESP", "ATC_INV"]), SIDS,
                    st.integers(0, 0xFFFF), st.integers(0, 3), st.booleans())
pri_op = st.tuples(st.just("pri"), SIDS, st.integers(0, 511), st.integers(0, 1), st.integers(0, 2**52 - 1))
OPS_ST = st.lists(st.one_of(write_op, base_op, mem_op, cmd_op, tr_op, en_op, ack_op, dma_op, iopf_op, pri_op),
                  min_size=1, max_size=40)


def _features(pri: bool, ats: bool, **kw) -> SmmuFeatures:
    return SmmuFeatures(pri=pri and ats, ats=ats, **kw)


FEATURES = st.builds(_features, btm=st.booleans(), vmid16=st.booleans(), asid16=st.booleans(),
                     cd2l=st.booleans(), st_level_2=st.booleans(), msi=st.booleans(), ats=st.booleans(),
                     pri=st.booleans(), priqs=st.integers(0, 4), httu=st.sampled_from([0, 1, 2]),
                     stall_max=st.integers(1, 4), ssidsize=st.integers(0, 20), sidsize=st.integers(0, 32),
                     cmdqs=st.integers(0, 19), eventqs=st.integers(0, 19), stall_model=st.sampled_from([0, 1, 2]),
                     hyp=st.booleans(), s1p=st.booleans(), s2p=st.booleans())


def check_invariants(b: Bench) -> None:
    s = b.smmu
    for q in (s.cmdq, s.evtq):
        st_ = q.state()
        assert 0 <= st_.prod < 2 * st_.entries and 0 <= st_.cons < 2 * st_.entries
        assert st_.log2size <= q.max_log2
    active = s.gerror_active()
    assert active == (b.r32(0x60) ^ b.r32(0x64)) & 0x1FD
    assert b.r32(0x24) == b.r32(0x20)                              # CR0ACK follows CR0
    assert b.r32(0x54) == b.r32(0x50)
    assert not b.r32(0x44) >> 31                                   # GBPA.Update never left pending
    cq = s.cmdq.state()
    if s.regs.get_field("CR0ACK", "CMDQEN") and not active & 1:
        assert cq.empty or s.stats["cmdq_budget_exhausted"]       # consumption ran to PROD (or was bounded)
    if s.priq is not None:
        pq, before = s.priq.state(), b.priq_before
        assert 0 <= pq.prod < 2 * pq.entries and 0 <= pq.cons < 2 * pq.entries
        fill = lambda q: (q.prod - q.cons) % (2 * q.entries)          # noqa: E731
        if before is not None and (pq.cons, pq.log2size) == (before.cons, before.log2size) \
                and fill(before) <= before.entries:
            assert fill(pq) <= pq.entries                             # the SMMU never wrote into a full queue
    assert len(s.stalls) <= s.features.stall_max
    for d in b.devs:
        if d.read(0x04, 4) & STATUS_STALLED:                      # a waiting device waits on a real stall
            assert s.stalls.get(d.read(0x08, 4), d.read(0x50, 4)) is not None


def check_stalls_pair_up(b: Bench) -> None:
    """Every stall the trace started ended at most once, and after SMMUEN 1 -> 0 none is left."""
    b.w32(0x20, b.r32(0x20) | 1)
    b.w32(0x20, b.r32(0x20) & ~1)
    outstanding: set[tuple[int, int]] = set()
    for r in b.sink.of("smmuv3_stall", "smmuv3_stall_end"):
        key = (r["sid"], r["stag"])
        if r.event == "smmuv3_stall":
            assert key not in outstanding
            outstanding.add(key)
        else:
            assert key in outstanding
            outstanding.remove(key)
    assert not outstanding and len(b.smmu.stalls) == 0


def _iopf_op(b: Bench, op: tuple) -> None:
    _, name, sid, tag, resp, from_table = op
    stalls = b.smmu.stalls.outstanding()
    if from_table and stalls:                                     # name a real stall (or its StreamID)
        sid, tag = stalls[tag % len(stalls)].sid, stalls[tag % len(stalls)].stag
    kw = {"RESUME": dict(sid=sid, stag=tag, resp=resp), "STALL_TERM": dict(sid=sid),
          "PRI_RESP": dict(sid=sid, grpid=tag & 0x1FF, resp=resp), "ATC_INV": dict(sid=sid, size=resp * 17)}[name]
    b.cmd(name, **kw)


def _dma_op(b: Bench, op: tuple) -> None:
    _, which, cmd, iova, pcie, alloc = op
    d = b.devs[which]
    d.write(0x44, pcie, 4)
    d.write(0x4C, alloc, 4)
    d.write(0x10, iova, 8)
    d.write(0x28, iova ^ 0x1000, 8)
    d.write(0x18, 0x1800, 4)
    d.write(0x1C, cmd, 4)


def _streams(b: Bench) -> None:
    """Streams 1 (EATS=1) and 2 (EATS=0) share a stage-1 CD that stalls when the features allow it, with HA/HD,
    over tables that map a few pages (one read-only writable-clean, one AF=0), so that random DMA stalls, uses
    ATS and PRI, and updates descriptors; random programming then perturbs all of it."""
    f = b.smmu.features
    if not f.s1p:
        return
    pt = PageTableBuilder(b.bus, PageAllocator(b.bus, RAM + 0x50_0000, 0x10_0000), granule=4096, stage=1, ias=48)
    pt.map(0x1000, RAM + 0x60_0000, 0x1000, PERM_R | PERM_W)
    pt.map(0x2000, RAM + 0x61_0000, 0x1000, PERM_R)
    pt.update(0x2000, set_bits=1 << 51)
    pt.map(0x3000, RAM + 0x62_0000, 0x1000, PERM_R | PERM_W, af=False)
    b.bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, s=int(f.stall_model != 1), ha=1, hd=1,
                                             t0sz=16, ips=5, epd1=1, asid=1, ttb0=pt.ttb)))
    for sid, eats in ((1, int(f.ats)), (2, 0)):
        b.put_ste(sid, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB, eats=eats))


def run(ops: list, features: SmmuFeatures) -> None:
    b = Bench(features)
    b.setup(log2size=8)
    _streams(b)
    b.w64(0xC0, PRIQ | 2)
    b.priq_before = None
    b.devs = []
    for i in range(4):
        d = DmaTestDevice(b.bus, b.smmu.translate, sid=i, tracer=b.tracer, name=f"dma{i}")
        b.bus.add_device(DMATEST_BASE + 0x1000 * i, 0x1000, d)
        b.devs.append(d)
    for op in ops:
        kind = op[0]
        if kind == "w":
            _, off, val, size = op
            b.smmu.write(off, val, size)
            b.smmu.read(off, size)
            if off & 0xFFFF == 0xC8:          # software wrote PRIQ_PROD (page 0 or 1): the SMMU did not fill it
                b.priq_before = None
        elif kind == "base":
            _, off, addr, log2 = op
            b.w64(off, (addr & ~0x3F) | log2)
        elif kind == "mem":
            _, idx, val, where = op
            base = {"strtab": STRTAB, "cmdq": CMDQ, "cd": CDTAB, "priq": PRIQ, "pt": RAM + 0x50_0000,
                    "any": RAM}[where]
            addr = base + (idx * 8) % (RAM_SIZE - (base - RAM) - 8)
            b.bus.write64(addr, val)
        elif kind == "cmd":
            _, opcode, body, n = op
            raw = ((body << 8) | opcode).to_bytes(16, "little")
            stopped = b.smmu.gerror_active() & 1
            cons = b.r32(0x9C)
            b.submit(*([raw] * n))
            if stopped:                                            # CMDQ_ERR active: consumption stopped
                assert b.r32(0x9C) == cons
        elif kind == "tr":
            _, sid, ssid, addr, write = op
            r = b.smmu.translate(sid, ssid, addr, write=write)
            assert isinstance(r, Fault) or hasattr(r, "pa")
        elif kind == "en":
            _, cr0, cr2, irq = op
            b.w32(0x20, cr0)
            b.w32(0x2C, cr2)
            b.w32(0x50, 0b101 if irq else 0)
        elif kind == "ack":
            # acknowledge some active errors: GERRORN ^= mask makes those bits equal to GERROR's
            acked = op[1] & b.smmu.gerror_active()
            gerrorn = b.r32(0x64) ^ acked
            b.w32(0x64, gerrorn)
            assert b.r32(0x64) == gerrorn                           # GERRORN is software's: it takes the value
            assert b.smmu.gerror_active() & acked & ~1 == 0         # acked (CMDQ_ERR may re-raise at once)
        elif kind == "dma":
            _dma_op(b, op)
        elif kind == "iopf":
            _iopf_op(b, op)
        elif kind == "pri":
            _, sid, grp, last, addr = op
            b.smmu.page_request(PageRequest(sid=sid & 0xFFFF_FFFF, prg_index=grp, last=last, read=1, addr=addr << 12
                                            & ((1 << 64) - 1)))
        check_invariants(b)
        b.priq_before = b.smmu.priq.state() if b.smmu.priq is not None else None
    check_stalls_pair_up(b)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS_ST, FEATURES)
def test_random_programming_stays_consistent(ops: list, features: SmmuFeatures) -> None:
    run(ops, features)


# recoverable faults from a working configuration: stalls, ATS and PRI, with software that consumes the queues,
# answers (rightly or wrongly), maps pages, toggles queue enables and scribbles on the tables now and then
consume_op = st.tuples(st.just("w"), st.sampled_from([0x100AC, 0x100CC]), st.integers(0, 2**32 - 1), st.just(4))
cr0_op = st.tuples(st.just("w"), st.just(0x20), st.sampled_from([0b1111, 0b1011, 0b1101, 0b1110, 0b0111]),
                   st.just(4))
map_op = st.tuples(st.just("mem"), st.integers(0, 0x10_0000 // 8 - 1), st.integers(0, 2**64 - 1), st.just("pt"))
iopf_dma_op = st.tuples(st.just("dma"), st.sampled_from([1, 1, 2, 0]), st.integers(1, 3),
                        st.sampled_from([0x1000, 0x1FF8, 0x2000, 0x3000, 0x5000, 0x9000, 0x4FF8]), st.integers(0, 7),
                        st.integers(0, 9))
resume_op = st.tuples(st.just("iopf"), st.sampled_from(["RESUME", "RESUME", "STALL_TERM", "PRI_RESP"]), SIDS,
                      st.integers(0, 0xFFFF), st.integers(0, 3), st.just(True))
IOPF_OPS = st.lists(st.one_of(iopf_dma_op, iopf_dma_op, iopf_dma_op, resume_op, resume_op, iopf_op, pri_op, tr_op,
                              consume_op, cr0_op, map_op), min_size=8, max_size=40)
IOPF_FEATURES = st.builds(_features, ats=st.just(True), pri=st.booleans(), priqs=st.integers(0, 3),
                          httu=st.sampled_from([0, 1, 2]), stall_model=st.sampled_from([0, 2]),
                          stall_max=st.integers(1, 4), eventqs=st.integers(1, 4))


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(IOPF_OPS, IOPF_FEATURES)
def test_random_recoverable_faults_stay_consistent(ops: list, features: SmmuFeatures) -> None:
    run(ops, features)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(OPS_ST, FEATURES)
def test_random_programming_stays_consistent_long(ops: list, features: SmmuFeatures) -> None:
    run(ops, features)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(IOPF_OPS, IOPF_FEATURES)
def test_random_recoverable_faults_stay_consistent_long(ops: list, features: SmmuFeatures) -> None:
    run(ops, features)


@pytest.mark.parametrize("off", [0xC8, 0x100C8])
def test_software_writing_priq_prod_is_not_taken_for_an_overfilled_queue(off):
    """A case random runs found: software's own PRIQ_PROD write (page 0 alias or page 1) may leave PROD a
    queue or more ahead of CONS; the invariant is about what the SMMU writes, so it is not checked there."""
    for value in (0xFFFF_FFFF, 0x8000_0007, 0x1F):
        run([("pri", 1, 3, 1, 0x1234), ("w", off, value, 4), ("pri", 1, 4, 1, 0x5678)],
            _features(pri=True, ats=True, priqs=2))
