"""The decoded translation configuration: where the SMMUv3 programming model (STE/CD decode, `device.py`)
meets the architecture-generic translation core (walks, TLBs, `translate.py`). Like QEMU's SMMUTransCfg,
one plain frozen record per (StreamID, SubstreamID).

Encodings are decoded here once: granules in bytes, address sizes in bits, so the walker never sees the
CD.TG0/TG1/STE.S2TG encodings (which differ: IHI 0070 5.4 CD.TG0 0=4K 1=64K 2=16K; CD.TG1 1=16K 2=4K
3=64K; STE.S2TG as TG0).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

__all__ = ["StreamWorld", "CfgKind", "S1Cfg", "S2Cfg", "TransCfg", "TransResult", "PERM_R", "PERM_W",
           "PERM_X"]

PERM_R, PERM_W, PERM_X = 1, 2, 4


class StreamWorld(str, Enum):
    """IHI 0070 3.17 (TLB tagging): the translation regime a cached entry belongs to."""
    NS_EL1 = "NS-EL1"
    EL2 = "EL2"
    EL2_E2H = "EL2-E2H"
    SECURE = "Secure"
    EL3 = "EL3"
    REALM = "Realm"


class CfgKind(str, Enum):
    ABORT = "abort"
    BYPASS = "bypass"
    S1 = "s1"          # stage 1 only
    S2 = "s2"          # stage 2 only
    NESTED = "nested"  # stage 1 then stage 2


@dataclass(frozen=True, slots=True)
class S1Cfg:
    """From the CD (IHI 0070 5.4)."""
    ttb0: int
    ttb1: int
    t0sz: int
    t1sz: int
    tg0: int               # granule in bytes (4096, 16384, 65536)
    tg1: int
    epd0: bool
    epd1: bool
    ips: int               # intermediate/output address size in bits (CD.IPS decoded)
    asid: int
    aset: bool             # CD.ASET: entries exempt from broadcast by-ASID invalidation
    affd: bool             # access flag fault disable
    ha: bool = False
    hd: bool = False
    wxn: bool = False
    uwxn: bool = False
    pan: bool = False
    tbi: int = 0           # CD.TBI[1:0]
    endi: bool = False     # big-endian tables (not supported by the walker: C_BAD_CD)
    record: bool = True    # CD.R: record faults
    stall: bool = False    # CD.S
    abort: bool = False    # CD.A: abort (not RAZ/WI) the transaction when a fault terminates it


@dataclass(frozen=True, slots=True)
class S2Cfg:
    """From the STE stage-2 fields (IHI 0070 5.2)."""
    vmid: int
    vttb: int
    t0sz: int
    sl0: int               # raw S2SL0 (meaning depends on the granule)
    tg: int                # granule in bytes
    ps: int                # S2PS decoded, in bits
    aa64: bool = True
    affd: bool = False
    ptw: bool = False      # S2PTW: S1 walks to Device memory fault (not modelled beyond decode)
    endi: bool = False
    record: bool = True    # S2R
    stall: bool = False    # S2S
    ha: bool = False
    hd: bool = False
    fwb: bool = False


@dataclass(frozen=True, slots=True)
class TransCfg:
    sid: int
    ssid: int | None
    kind: CfgKind
    world: StreamWorld = StreamWorld.NS_EL1
    s1: S1Cfg | None = None
    s2: S2Cfg | None = None
    oas: int = 48          # SMMU_IDR5.OAS in bits: output size limit for bypass and the last stage
    s1_vmid: int = 0       # VMID tag of a stage-1-only configuration: STE.S2VMID when IDR0.S2P=1, else 0
    eats: int = 0          # STE.EATS when IDR0.ATS=1 (ATS for the stream: 0b00 off, 0b01 full, 0b10 split)

    @property
    def vmid(self) -> int:
        """VMID the TLB entries of this context are tagged with. IHI 0070 3.17: with stage 2 configured, or
        for stage-1-only translation when stage 2 is implemented, STE.S2VMID; without stage 2, no VMID (0, and
        with IDR0.S2P=0 the SMMU matches broadcasts as VMID 0)."""
        return self.s2.vmid if self.s2 is not None else self.s1_vmid

    @property
    def asid(self) -> int:
        return self.s1.asid if self.s1 is not None else 0


class TransResult(NamedTuple):
    """Immutable like the other records, but a NamedTuple: the IOTLB hit path builds one per DMA access and
    a NamedTuple is built ~8x faster than a frozen slots dataclass (use `r._replace(...)`, not
    `dataclasses.replace`)."""
    pa: int                # output address for the input address
    perm: int              # PERM_R | PERM_W | PERM_X granted (intersection of stages)
    size: int              # size of the page/block the translation came from (combined, smallest stage)
    cached: bool = False   # served from the IOTLB
