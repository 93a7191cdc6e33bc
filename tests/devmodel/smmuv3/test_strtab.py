"""Stream tables (linear, 2-level), STE/CD fetch and validation through the device: every invalid class gives
its event in the EVTQ with the right StreamID (IHI 0070 3.3, 5.1-5.4, 7.3)."""
from __future__ import annotations

import pytest

from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import events as E
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.config import CfgKind, StreamWorld
from devmodel.smmuv3.fault import EventType, Fault

from .bench import CDTAB, EVTQ, EVTQ_PROD, L2, RAM, S2_OK, STRTAB, Bench

GOOD_CD = CD.Cd(v=1, aa64=1, t0sz=16, tg0=0, epd1=1, ips=5, asid=7, r=1, ttb0=RAM + 0x60_0000)


def evtq_records(b: Bench) -> list[E.Event]:
    n = b.r32(EVTQ_PROD) & ((2 << b.evtq_log2) - 1)
    return [E.decode(b.bus.read_bytes(EVTQ + i * 32, 32)) for i in range(n & ((1 << b.evtq_log2) - 1))]


def fault_of(b: Bench, sid: int, ssid: int | None = None) -> Fault:
    r = b.smmu.translate(sid, ssid, 0x1000)
    assert isinstance(r, Fault), r
    return r


def test_linear_table_bypass_and_s2(bench: Bench) -> None:
    bench.setup(log2size=6)
    bench.put_ste(3, S.Ste(v=1, config=S.CONFIG_BYPASS))
    bench.put_ste(63, S.Ste(**S2_OK))
    assert bench.smmu.translate(3, None, 0x1234).pa == 0x1234
    cfg = bench.smmu.config(63)
    assert cfg.kind == CfgKind.S2 and cfg.s2.vmid == 5 and cfg.s2.vttb == S2_OK["s2ttb"]
    assert [r["sid"] for r in bench.sink.of("smmuv3_find_ste")] == [3, 63]
    assert bench.sink.of("smmuv3_find_ste")[1]["addr"] == STRTAB + 63 * 64


@pytest.mark.parametrize("setup,sid,etype", [
    (lambda b: None, 64, EventType.C_BAD_STREAMID),                                 # beyond LOG2SIZE=6
    (lambda b: b.put_ste(5, S.Ste(v=0)), 5, EventType.C_BAD_STE),
    (lambda b: b.put_ste(6, S.Ste(**dict(S2_OK, s2aa64=0))), 6, EventType.C_BAD_STE),  # QEMU asserted here
    (lambda b: b.put_ste(7, S.Ste(**dict(S2_OK, s2tg=3))), 7, EventType.C_BAD_STE),
    (lambda b: b.put_ste(8, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB, s1cdmax=25)), 8,
     EventType.C_BAD_STE),
], ids=["bad_streamid", "ste_invalid", "s2aa64_0", "s2tg_reserved", "s1cdmax_too_big"])
def test_invalid_ste_classes_linear(bench: Bench, setup, sid: int, etype: EventType) -> None:
    bench.setup(log2size=6)
    setup(bench)
    f = fault_of(bench, sid)
    assert f.type == etype and f.sid == sid
    evs = evtq_records(bench)
    assert [(e.type, e.sid) for e in evs] == [(etype, sid)]
    assert bench.smmu.events == evs


def test_bad_streamid_needs_recinvsid() -> None:
    b = Bench().setup(log2size=6, recinvsid=False)
    assert fault_of(b, 100).type == EventType.C_BAD_STREAMID
    assert evtq_records(b) == []


def test_ste_fetch_abort_gives_f_ste_fetch() -> None:
    b = Bench().setup(log2size=6)
    b.w32(0x20, 0)                                           # disable to reprogram the table base
    b.w64(0x80, 0x1_0000_0000)                               # unmapped
    b.w32(0x20, 0b1101)
    f = fault_of(b, 2)
    assert f.type == EventType.F_STE_FETCH and f.sid == 2 and f.ipa == 0x1_0000_0000 + 2 * 64
    assert [(e.type, e.sid, e.fetch_addr) for e in evtq_records(b)] == [(3, 2, 0x1_0000_0080)]


def _two_level(b: Bench, span_for: dict[int, int]) -> None:
    """SPLIT=8: L1 index = sid >> 8; each L1 entry points to its own L2 table."""
    for l1, span in span_for.items():
        l2 = L2 + l1 * 0x4000
        b.bus.write_bytes(STRTAB + l1 * 8, S.encode_l1(S.L1Std(span=span, l2ptr=l2)))


def test_two_level_table() -> None:
    b = Bench().setup(log2size=16, fmt=1, split=8)
    _two_level(b, {0: 9, 2: 3, 3: 0})                        # 256 STEs, 4 STEs, invalid
    b.bus.write_bytes(L2 + 0 * 0x4000 + 0x25 * 64, S.encode(S.Ste(v=1, config=S.CONFIG_BYPASS)))
    b.bus.write_bytes(L2 + 2 * 0x4000 + 3 * 64, S.encode(S.Ste(**S2_OK)))
    assert b.smmu.translate(0x25, None, 0x5000).pa == 0x5000
    assert b.smmu.config(0x203).kind == CfgKind.S2
    two = b.sink.of("smmuv3_find_ste_2lvl")
    assert two[-1]["l1ptr"] == STRTAB + 2 * 8 and two[-1]["l2ptr"] == L2 + 2 * 0x4000 and two[-1]["span"] == 3
    # invalid classes with the right StreamID
    assert fault_of(b, 0x204).type == EventType.C_BAD_STREAMID       # index 4 >= 2^(Span-1) = 4
    assert fault_of(b, 0x301).type == EventType.C_BAD_STREAMID       # L1STD.Span = 0
    assert fault_of(b, 0x26).type == EventType.C_BAD_STE             # L2 entry all zero (V=0)
    assert [(e.type, e.sid) for e in evtq_records(b)] == [(2, 0x204), (2, 0x301), (4, 0x26)]


def test_two_level_span_larger_than_split_is_invalid() -> None:
    b = Bench().setup(log2size=16, fmt=1, split=6)
    _two_level(b, {1: 8})                                     # Span 8 > SPLIT+1 = 7
    assert fault_of(b, 0x41).type == EventType.C_BAD_STREAMID


def test_two_level_ignored_without_st_level_support() -> None:
    from devmodel.smmuv3.regs import SmmuFeatures
    b = Bench(SmmuFeatures(st_level_2=False)).setup(log2size=6, fmt=1)
    b.put_ste(1, S.Ste(v=1, config=S.CONFIG_BYPASS))           # read as a linear table
    assert b.smmu.translate(1, None, 0x7000).pa == 0x7000


def _s1(b: Bench, sid: int, **kw: int) -> None:
    b.put_ste(sid, S.Ste(**{**dict(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB), **kw}))


def test_s1_single_cd_decode(bench: Bench) -> None:
    bench.setup()
    _s1(bench, 4, strw=0b10)
    bench.bus.write_bytes(CDTAB, CD.encode(GOOD_CD))
    cfg = bench.smmu.config(4)
    assert cfg.kind == CfgKind.S1 and cfg.s1.asid == 7 and cfg.s1.ttb0 == RAM + 0x60_0000
    assert cfg.world == StreamWorld.EL2
    assert bench.sink.of("smmuv3_get_cd")[0]["addr"] == CDTAB


def test_substream_classes(bench: Bench) -> None:
    bench.setup()
    _s1(bench, 1)                                             # S1CDMax=0: no substreams
    assert fault_of(bench, 1, 3).type == EventType.C_BAD_SUBSTREAMID
    bench.put_ste(2, S.Ste(v=1, config=S.CONFIG_BYPASS))
    assert fault_of(bench, 2, 0).type == EventType.C_BAD_SUBSTREAMID     # stage 1 disabled
    _s1(bench, 3, s1cdmax=4, s1dss=0)
    assert fault_of(bench, 3, 16).type == EventType.C_BAD_SUBSTREAMID    # >= 2^S1CDMax
    assert fault_of(bench, 3, None).type == EventType.F_STREAM_DISABLED  # S1DSS terminate
    _s1(bench, 5, s1cdmax=4, s1dss=2)
    assert fault_of(bench, 5, 0).type == EventType.F_STREAM_DISABLED     # SSID 0 reserved by S1DSS=0b10
    _s1(bench, 6, s1cdmax=4, s1dss=1)
    assert bench.smmu.translate(6, None, 0x3000).pa == 0x3000             # S1DSS bypass
    evs = evtq_records(bench)
    assert [(e.name, e.sid, e.ssv, e.ssid) for e in evs] == [
        ("C_BAD_SUBSTREAMID", 1, 1, 3), ("C_BAD_SUBSTREAMID", 2, 1, 0), ("C_BAD_SUBSTREAMID", 3, 1, 16),
        ("F_STREAM_DISABLED", 3, 0, 0), ("F_STREAM_DISABLED", 5, 1, 0)]


def test_linear_cd_table_and_bad_cd(bench: Bench) -> None:
    bench.setup()
    _s1(bench, 9, s1cdmax=3)
    bench.bus.write_bytes(CDTAB + 5 * 64, CD.encode(GOOD_CD))
    bench.bus.write_bytes(CDTAB + 6 * 64, CD.encode(CD.Cd(v=1, aa64=0)))
    assert bench.smmu.config(9, 5).s1.asid == 7
    assert fault_of(bench, 9, 6).type == EventType.C_BAD_CD
    assert fault_of(bench, 9, 7).type == EventType.C_BAD_CD           # V=0
    assert [(e.name, e.sid, e.ssid) for e in evtq_records(bench)] == [("C_BAD_CD", 9, 6), ("C_BAD_CD", 9, 7)]


@pytest.mark.parametrize("fmt,leaf", [(1, 64), (2, 1024)])
def test_two_level_cd_table(bench: Bench, fmt: int, leaf: int) -> None:
    bench.setup()
    l2 = RAM + 0x70_0000
    _s1(bench, 10, s1cdmax=12, s1fmt=fmt)
    ssid = 3 * leaf + 5
    bench.bus.write_bytes(CDTAB + 3 * 8, CD.encode_l1(CD.L1Cd(v=1, l2ptr=l2)))
    bench.bus.write_bytes(l2 + 5 * 64, CD.encode(GOOD_CD))
    assert bench.smmu.config(10, ssid).s1.asid == 7
    assert fault_of(bench, 10, ssid + leaf).type == EventType.C_BAD_SUBSTREAMID   # L1CD.V == 0


def test_cd_fetch_abort(bench: Bench) -> None:
    bench.setup()
    _s1(bench, 11, s1contextptr=0x2_0000_0000)
    f = fault_of(bench, 11)
    assert f.type == EventType.F_CD_FETCH and f.ipa == 0x2_0000_0000
    assert evtq_records(bench)[0].fetch_addr == 0x2_0000_0000


def test_config_abort_has_no_event(bench: Bench) -> None:
    bench.setup()
    bench.put_ste(12, S.Ste(v=1, config=0b000))
    bench.put_ste(13, S.Ste(v=1, config=0b011))              # reserved: behaves as abort
    assert not fault_of(bench, 12).record and not fault_of(bench, 13).record
    assert evtq_records(bench) == []


def test_config_cache_and_cfgi(bench: Bench) -> None:
    bench.setup()
    bench.put_ste(1, S.Ste(v=1, config=S.CONFIG_BYPASS))
    assert bench.smmu.translate(1, None, 0x1000).pa == 0x1000
    bench.put_ste(1, S.Ste(v=1, config=0))                   # change without invalidation: stale config used
    assert bench.smmu.translate(1, None, 0x1000).pa == 0x1000
    bench.cmd("CFGI_STE", sid=1, leaf=1)
    assert isinstance(bench.smmu.translate(1, None, 0x1000), Fault)
    bench.put_ste(1, S.Ste(v=1, config=S.CONFIG_BYPASS))
    bench.cmd("CFGI_STE_RANGE", sid=2, span=0)               # covers 2..3: not SID 1
    assert isinstance(bench.smmu.translate(1, None, 0x1000), Fault)
    bench.cmd("CFGI_STE_RANGE", sid=0, span=31)              # CFGI_ALL
    assert bench.smmu.translate(1, None, 0x1000).pa == 0x1000
    assert bench.sink.of("smmuv3_cmdq_cfgi_ste_range")[-1]["end"] == -1


def test_cfgi_cd(bench: Bench) -> None:
    bench.setup()
    _s1(bench, 9, s1cdmax=3)
    bench.bus.write_bytes(CDTAB + 5 * 64, CD.encode(GOOD_CD))
    bench.bus.write_bytes(CDTAB + 4 * 64, CD.encode(GOOD_CD))
    assert bench.smmu.config(9, 5).s1.asid == 7 and bench.smmu.config(9, 4).s1.asid == 7
    import dataclasses
    bench.bus.write_bytes(CDTAB + 5 * 64, CD.encode(dataclasses.replace(GOOD_CD, asid=8)))
    bench.bus.write_bytes(CDTAB + 4 * 64, CD.encode(dataclasses.replace(GOOD_CD, asid=9)))
    bench.cmd("CFGI_CD", sid=9, ssid=5, leaf=1)
    assert bench.smmu.config(9, 5).s1.asid == 8 and bench.smmu.config(9, 4).s1.asid == 7
    bench.cmd("CFGI_CD_ALL", sid=9)
    assert bench.smmu.config(9, 4).s1.asid == 9
