"""Event queue records (IHI 0070 7.3): layout, `Event` record, `decode`/`encode`, and `from_fault`, the ONE
function that turns a `fault.Fault` value into an event record. The device writes what it returns into the
EVTQ; nothing else builds event records.

Bit positions checked against Linux `arm-smmu-v3.h` (EVTQ_0_*, EVTQ_1_*, EVTQ_2_ADDR, EVTQ_3_IPA).
Dword 3 holds either the IPA[51:12] (translation-class faults) or FetchAddr[51:3] (F_STE_FETCH, F_CD_FETCH,
F_WALK_EABT); the layout declares it once as ADDR2 [51:3] and `Event.ipa` / `Event.fetch_addr` interpret it.
NSIPA (bit 255) is placed from IHI 0070 7.3.12; Linux does not define a mask for it.

Stall/STAG are set for stalled transactions (`Fault.stall`, IHI 0070 3.12.2), TTRnW (TT_READ) for faults of
stage-1 table accesses at stage 2 (CLASS=TT): 1 for reads, 0 for hardware updates (HTTU, 3.13).

Not modelled: event merging (MEV), Secure events (SSEC... not set).
"""
from __future__ import annotations

from ..fields import Field, Layout, record_codec, record_type
from .fault import EventType, Fault, FaultClass

__all__ = ["EVENT_LAYOUT", "Event", "decode", "encode", "from_fault", "EVENT_SIZE"]

EVENT_SIZE = 32

EVENT_LAYOUT = Layout("EVENT", 256, (
    Field("TYPE", 0, 8), Field("SSV", 11, 1), Field("SSID", 12, 20), Field("SID", 32, 32),
    Field("STAG", 64, 16), Field("STALL", 95, 1), Field("PNU", 97, 1), Field("IND", 98, 1),
    Field("RNW", 99, 1), Field("S2", 103, 1), Field("CLASS", 104, 2), Field("TT_READ", 108, 1),
    Field("INPUT_ADDR", 128, 64),
    Field("ADDR2", 195, 49, shift=3, doc="IPA[51:12] or FetchAddr[51:3]"), Field("NSIPA", 255, 1),
))

_FETCH = (EventType.F_STE_FETCH, EventType.F_CD_FETCH, EventType.F_WALK_EABT)
_WITH_ACCESS = (EventType.F_UUT, EventType.F_TRANS_FORBIDDEN, EventType.F_WALK_EABT, EventType.F_TRANSLATION,
                EventType.F_ADDR_SIZE, EventType.F_ACCESS, EventType.F_PERMISSION, EventType.F_TLB_CONFLICT,
                EventType.F_BAD_ATS_TREQ)
_WITH_IPA = (EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.F_ACCESS, EventType.F_PERMISSION)


class Event(record_type("Event", EVENT_LAYOUT, module=__name__)):
    """An event record: one attribute per EVENT_LAYOUT field (CLASS is `class_`), `raw` = the 256 bits."""
    __slots__ = ()

    @property
    def name(self) -> str:
        try:
            return EventType(self.type).name
        except ValueError:
            return f"EVT_{self.type:#04x}"

    @property
    def ipa(self) -> int:
        return self.addr2 & ~0xFFF

    @property
    def fetch_addr(self) -> int:
        return self.addr2


decode, encode = record_codec(Event, EVENT_LAYOUT)


def from_fault(f: Fault) -> Event:
    """The one place a Fault becomes an event record (IHI 0070 7.3: which fields each event type carries)."""
    t = f.type
    ssv = f.ssid is not None
    kw: dict[str, int] = dict(type=int(t), sid=f.sid & 0xFFFF_FFFF, ssv=int(ssv),
                              ssid=(f.ssid or 0) & 0xFFFFF if ssv else 0)
    if t in _WITH_ACCESS:
        kw.update(rnw=int(f.rnw), ind=int(f.ind), pnu=int(f.pnu), input_addr=f.addr & (2**64 - 1))
    if f.stall:                       # 7.3: Stall=1 and STAG for a stalled transaction (3.12.2)
        kw.update(stall=1, stag=f.stag & 0xFFFF)
    if t in _WITH_IPA:
        kw.update(s2=int(f.stage2), class_=int(f.cls), addr2=f.ipa & 0x000F_FFFF_FFFF_F000, nsipa=int(f.nsipa))
    elif t in _FETCH:
        kw.update(addr2=f.ipa & 0x000F_FFFF_FFFF_FFF8)
        if t == EventType.F_WALK_EABT:
            kw.update(s2=int(f.stage2), class_=int(f.cls))
    if f.cls == FaultClass.TT and (t in _WITH_IPA or t == EventType.F_WALK_EABT):
        kw.update(tt_read=int(not f.tt_write))   # TTRnW: a table read (1) or a hardware update (0)
    elif t == EventType.F_CFG_CONFLICT:
        kw.update(input_addr=f.addr & (2**64 - 1))
    return Event(**kw)                # encoded once, here: the EVTQ writer stores `encode(ev)` (raw, masked)
