"""ATS, ATC invalidation and PRI between the SMMU and PCIe functions (IHI 0070 3.9 "Support for PCI Express,
PASIDs, PRI and ATS", chapter 8 "Page request queue"; PCIe Address Translation Services and Page Request
Interface): the records that travel between them, the protocol an endpoint offers the SMMU, and the pure decode
of CMD_ATC_INV and CMD_PRI_RESP. The device (`device.py`) implements the SMMU side with these.

* Translation Requests: `SMMUv3.ats_translate(sid, ssid, addr, nw, exec_, priv) -> AtsCompletion`. A completion
  with status SUCCESS carries the translated base of a naturally aligned range (`addr`, `size`), the
  permissions granted at the requested privilege (R, W; W only when the request asked for write permission,
  PCIe No-Write=0), execute when asked, and Global (the stage-1 descriptor had nG=0). R=W=0 is the answer for a
  translation-related fault (the function may then issue a page request); UR and CA are the error statuses.
* Translated transactions: `SMMUv3.translated(...)`, which skips translation except as CR0.ATSCHK and STE.EATS
  say.
* ATC invalidation: CMD_ATC_INV reaches the endpoint registered for its StreamID (`SMMUv3.attach_endpoint`) as
  `atc_invalidate(ssid, lo, hi, global_) -> completed`; a failed completion makes the next CMD_SYNC end with
  CERROR_ATC_INV_SYNC.
* Page requests: a function sends `PageRequest` records (`SMMUv3.page_request`), written to the PRI queue in this
  layout; software answers each page request group (PRG index, Last) with CMD_PRI_RESP, which reaches the endpoint
  as `pri_response(ssid, grpid, code)` with a PCIe `PrgResponse` code.

Bit positions checked against Linux `arm-smmu-v3.h` (PRIQ_0_*, PRIQ_1_*, CMDQ_ATC_*, CMDQ_PRI_*, `enum pri_resp`,
`ATC_INV_SIZE_ALL`, `arm_smmu_atc_inv_to_cmd`); QEMU models none of this.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Protocol

from ..fields import Field, Layout, record_codec, record_type

__all__ = ["AtsStatus", "AtsCompletion", "PrgResponse", "PRI_RESP_CODES", "PRIQ_LAYOUT", "PRIQ_ENTRY_SIZE",
           "PageRequest", "decode_pri", "encode_pri", "AtsEndpoint", "atc_inv_range", "ATC_INV_SIZE_ALL",
           "EATS_ABORT", "EATS_FULL", "EATS_SPLIT"]

EATS_ABORT, EATS_FULL, EATS_SPLIT = 0b00, 0b01, 0b10      # STE.EATS (IHI 0070 5.2; Linux STRTAB_STE_1_EATS_*)
ATC_INV_SIZE_ALL = 52                                     # CMD_ATC_INV.Size that covers every address
PRIQ_ENTRY_SIZE = 16


class AtsStatus(str, Enum):
    """PCIe Translation Completion status."""
    SUCCESS = "SC"
    UR = "UR"            # Unsupported Request: ATS is not available to this request
    CA = "CA"            # Completer Abort: the SMMU could not translate (configuration error)


@dataclass(frozen=True, slots=True)
class AtsCompletion:
    status: AtsStatus
    addr: int = 0        # translated base (PA; IPA with split-stage ATS), aligned to size
    size: int = 0        # bytes: a power of two, at least 4096
    r: bool = False
    w: bool = False
    x: bool = False
    priv: bool = False   # the permissions are the privileged ones (the request had Priv set)
    global_: bool = False
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is AtsStatus.SUCCESS

    def allows(self, write: bool, exec_: bool) -> bool:
        return self.ok and (self.w if write else (self.x if exec_ else self.r))


class PrgResponse(IntEnum):
    """PCIe PRG Response Codes."""
    SUCCESS = 0x0
    INVALID_REQUEST = 0x1
    RESPONSE_FAILURE = 0xF


#: CMD_PRI_RESP.Resp -> PCIe code (Linux `enum pri_resp`: PRI_RESP_DENY 0, PRI_RESP_FAIL 1, PRI_RESP_SUCC 2);
#: 0b11 is reserved (the command is CERROR_ILL)
PRI_RESP_CODES = {0b00: PrgResponse.INVALID_REQUEST, 0b01: PrgResponse.RESPONSE_FAILURE,
                  0b10: PrgResponse.SUCCESS}

PRIQ_LAYOUT = Layout("PRIQ", 128, (
    Field("SID", 0, 32), Field("SSID", 32, 20), Field("PRIV", 58, 1), Field("EXEC", 59, 1),
    Field("READ", 60, 1), Field("WRITE", 61, 1), Field("LAST", 62, 1), Field("SSV", 63, 1),
    Field("PRG_INDEX", 64, 9), Field("ADDR", 76, 52, shift=12, doc="page address [63:12]"),
))


class PageRequest(record_type("PageRequest", PRIQ_LAYOUT, module=__name__)):
    """A PCIe Page Request Message as the PRI queue stores it (IHI 0070 8.1): StreamID, SubstreamID (SSV),
    PRG index, Last (the last request of its page request group), the access wanted (READ, WRITE, EXEC, PRIV)
    and the page address."""
    __slots__ = ()

    @property
    def ssid_or_none(self) -> int | None:
        return self.ssid if self.ssv else None


decode_pri, encode_pri = record_codec(PageRequest, PRIQ_LAYOUT)


class AtsEndpoint(Protocol):
    """What the SMMU calls on a PCIe function with an ATC and PRI (registered per StreamID)."""

    def atc_invalidate(self, ssid: int | None, lo: int, hi: int, global_: bool) -> bool:
        """Invalidate cached translations of [lo, hi) (every address when `lo, hi = 0, 2**64`): of SubstreamID
        `ssid`, plus global ones of any SubstreamID when `global_`; `ssid` None: of every SubstreamID. True when
        the invalidation completed (False: it timed out)."""

    def pri_response(self, ssid: int | None, grpid: int, code: PrgResponse) -> None:
        """The response to page request group `grpid` (of `ssid`)."""


def atc_inv_range(cmd: Any) -> tuple[int, int]:
    """The addresses a CMD_ATC_INV covers: 2^Size 4KB pages from Address aligned down to that span; Size of 52
    or more covers every address (Linux `arm_smmu_atc_inv_to_cmd`, `ATC_INV_SIZE_ALL`)."""
    size = cmd.size & 0x3F
    if size >= ATC_INV_SIZE_ALL:
        return 0, 1 << 64
    span = 4096 << size
    lo = (cmd.addr & ((1 << 64) - 1)) & ~(span - 1)
    return lo, lo + span
