"""Faults as values (IHI 0070 7.3, event records). Everything that goes wrong in configuration lookup or
translation returns a `Fault`; exactly one place (`events.py`) turns it into an event record in the EVTQ.
Event type numbers verified against Linux `arm-smmu-v3.h` (EVT_ID_*) and QEMU `smmuv3-internal.h`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["EventType", "FaultClass", "Fault", "TRANSLATION_FAULTS"]


class EventType(IntEnum):
    F_UUT = 0x01
    C_BAD_STREAMID = 0x02
    F_STE_FETCH = 0x03
    C_BAD_STE = 0x04
    F_BAD_ATS_TREQ = 0x05
    F_STREAM_DISABLED = 0x06
    F_TRANS_FORBIDDEN = 0x07
    C_BAD_SUBSTREAMID = 0x08
    F_CD_FETCH = 0x09
    C_BAD_CD = 0x0A
    F_WALK_EABT = 0x0B
    F_TRANSLATION = 0x10
    F_ADDR_SIZE = 0x11
    F_ACCESS = 0x12
    F_PERMISSION = 0x13
    F_TLB_CONFLICT = 0x20
    F_CFG_CONFLICT = 0x21
    E_PAGE_REQUEST = 0x24
    F_VMS_FETCH = 0x25


#: the faults that are "translation-related" (IHI 0070 3.12.2, 5.4 CD.R/CD.S, 5.2 STE.S2R/S2S): the only ones that
#: may stall, and the ones an ATS Translation Request answers with "no access" instead of recording an event
TRANSLATION_FAULTS = frozenset((EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.F_ACCESS,
                                EventType.F_PERMISSION))


class FaultClass(IntEnum):
    """Event CLASS field: what the access that faulted was doing (IHI 0070 7.3, e.g. F_TRANSLATION)."""
    CD = 0b00      # CD fetch
    TT = 0b01      # stage-1 translation table fetch
    IN = 0b10      # the input transaction itself


@dataclass(frozen=True, slots=True)
class Fault:
    type: EventType
    sid: int = 0
    ssid: int | None = None        # SSV = ssid is not None
    addr: int = 0                  # InputAddr of the transaction
    ipa: int = 0                   # IPA (S2 faults) or FetchAddr (F_STE_FETCH/F_CD_FETCH/F_WALK_EABT)
    stage2: bool = False           # S2: the fault happened at stage 2
    cls: FaultClass = FaultClass.IN
    rnw: bool = True               # read (not write)
    ind: bool = False              # instruction fetch
    pnu: bool = False              # privileged
    nsipa: bool = False
    record: bool = True            # False when STE/CD say not to record (R=0) the fault (still fails)
    reason: str = ""               # the model's explanation, for traces and error messages
    tt_write: bool = False         # CLASS=TT: the table access was a hardware update (event TTRnW=0)
    stall: bool = False            # the transaction is stalled (event Stall=1), waiting for CMD_RESUME
    stag: int = 0                  # its stall tag (event STAG), unique among the StreamID's stalls

    @property
    def name(self) -> str:
        return self.type.name
