"""Event records (IHI 0070 7.3) against Linux EVTQ_* masks; `from_fault` is the one Fault -> record path."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.smmuv3 import events as E
from devmodel.smmuv3.fault import EventType, Fault, FaultClass

from .test_ste import genmask


def words(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 32, 8)]


# Linux arm-smmu-v3.h: (Event field, value, word, mask)
LINUX_EVTQ = [
    ("type", 0xFF, 0, genmask(7, 0)),            # EVTQ_0_ID
    ("ssv", 1, 0, 1 << 11),                      # EVTQ_0_SSV
    ("ssid", 2**20 - 1, 0, genmask(31, 12)),     # EVTQ_0_SSID
    ("sid", 2**32 - 1, 0, genmask(63, 32)),      # EVTQ_0_SID
    ("stag", 0xFFFF, 1, genmask(15, 0)),         # EVTQ_1_STAG
    ("stall", 1, 1, 1 << 31),                    # EVTQ_1_STALL
    ("pnu", 1, 1, 1 << 33),                      # EVTQ_1_PnU
    ("ind", 1, 1, 1 << 34),                      # EVTQ_1_InD
    ("rnw", 1, 1, 1 << 35),                      # EVTQ_1_RnW
    ("s2", 1, 1, 1 << 39),                       # EVTQ_1_S2
    ("class_", 3, 1, genmask(41, 40)),           # EVTQ_1_CLASS
    ("tt_read", 1, 1, 1 << 44),                  # EVTQ_1_TT_READ
    ("input_addr", 2**64 - 1, 2, 2**64 - 1),     # EVTQ_2_ADDR
    ("addr2", genmask(51, 12), 3, genmask(51, 12)),  # EVTQ_3_IPA
]


@pytest.mark.parametrize("field,value,word,mask", LINUX_EVTQ, ids=[x[0] for x in LINUX_EVTQ])
def test_event_fields_match_linux(field: str, value: int, word: int, mask: int) -> None:
    kw = {"type": 0, field: value}
    w = words(E.encode(E.Event(**kw)))
    assert w[word] == mask and all(x == 0 for i, x in enumerate(w) if i != word)
    assert getattr(E.decode(E.encode(E.Event(**kw))), field) == value


def test_linux_event_ids() -> None:
    # EVT_ID_TRANSLATION_FAULT 0x10, EVT_ID_ADDR_SIZE_FAULT 0x11, EVT_ID_ACCESS_FAULT 0x12,
    # EVT_ID_PERMISSION_FAULT 0x13
    assert [EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.F_ACCESS, EventType.F_PERMISSION] == \
        [0x10, 0x11, 0x12, 0x13]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**256 - 1))
def test_event_round_trip(raw: int) -> None:
    ev = E.decode(raw.to_bytes(32, "little"))
    assert int.from_bytes(E.encode(ev), "little") == raw & E.EVENT_LAYOUT.defined_mask


def test_from_fault_translation() -> None:
    f = Fault(EventType.F_TRANSLATION, sid=0x42, ssid=7, addr=0xFFFF_0000_1234_5678, ipa=0x8_1234_5678,
              stage2=True, cls=FaultClass.TT, rnw=False, ind=False, pnu=True)
    ev = E.from_fault(f)
    w = words(E.encode(ev))
    assert w[0] == 0x10 | (1 << 11) | (7 << 12) | (0x42 << 32)
    # PnU, S2, CLASS=TT, TTRnW=1 (the stage-1 table access was a read: IHI 0070 7.3, EVTQ_1_TT_READ); RnW=0
    assert w[1] == (1 << 33) | (1 << 39) | (1 << 40) | (1 << 44)
    assert w[2] == 0xFFFF_0000_1234_5678
    assert w[3] == 0x8_1234_5000                                   # IPA[51:12]
    assert ev.raw == int.from_bytes(E.encode(ev), "little") and ev.name == "F_TRANSLATION"


def test_from_fault_config_errors_carry_only_ids() -> None:
    ev = E.from_fault(Fault(EventType.C_BAD_STE, sid=9, addr=0x1234, reason="x"))
    assert words(E.encode(ev)) == [0x04 | (9 << 32), 0, 0, 0]
    ev = E.from_fault(Fault(EventType.C_BAD_SUBSTREAMID, sid=3, ssid=0x100))
    assert words(E.encode(ev))[0] == 0x08 | (1 << 11) | (0x100 << 12) | (3 << 32)


def test_from_fault_fetch_address() -> None:
    ev = E.from_fault(Fault(EventType.F_STE_FETCH, sid=1, ipa=0x4000_0048))
    assert words(E.encode(ev))[3] == 0x4000_0048 and ev.fetch_addr == 0x4000_0048
    ev = E.from_fault(Fault(EventType.F_WALK_EABT, sid=1, addr=0x5000, ipa=0x9000_0010, cls=FaultClass.TT))
    w = words(E.encode(ev))
    assert w[2] == 0x5000 and w[3] == 0x9000_0010 and (w[1] >> 40) & 3 == 1


@pytest.mark.parametrize("t", list(EventType))
def test_every_event_type_encodes(t: EventType) -> None:
    ev = E.from_fault(Fault(t, sid=2**32 - 1, ssid=2**20 - 1, addr=2**64 - 1, ipa=2**52 - 1))
    assert E.decode(E.encode(ev)) == ev


def test_recording_a_fault_encodes_the_event_once(bench) -> None:
    """One pack of the event record per recorded fault (from_fault builds it; the EVTQ writer stores its bits):
    counted with the profiler, not timed."""
    import cProfile
    import pstats

    from devmodel.fields import Layout
    from devmodel.smmuv3 import cd as CD
    from devmodel.smmuv3 import ste as S

    from .bench import CDTAB, EVTQ, RAM

    bench.setup()
    bench.bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, r=1, t0sz=16, ips=5, epd1=1, ttb0=RAM + 0x50_0000)))
    bench.put_ste(1, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB))
    bench.smmu.translate(1, None, 0x1000)                    # configuration cached, first event written
    prof = cProfile.Profile()
    prof.enable()
    f = bench.smmu.translate(1, None, 0x2000)
    prof.disable()
    assert isinstance(f, Fault) and f.type == EventType.F_TRANSLATION
    calls = {fn: st[1] for (_file, _line, fn), st in pstats.Stats(prof).stats.items()
             if _file.endswith("fields.py")}
    assert calls.get(Layout.pack_record.__name__) == 1 and Layout.pack.__name__ not in calls, calls
    ev = bench.smmu.events[-1]
    assert bench.bus.read_bytes(EVTQ + 32, 32) == E.encode(ev) and E.decode(E.encode(ev)) == ev
