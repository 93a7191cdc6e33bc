"""Context Descriptor (IHI 0070 5.4) and Level-1 CD descriptor (5.3): layouts, records, validation, decode.

`decode`/`encode` are pure; `validate(cd, ...) -> Fault | None` returns C_BAD_CD with the spec's reason;
`s1_config(cd, ...)` turns a valid CD into `config.S1Cfg` (granules in bytes, IPS in bits).

Bit positions checked against Linux `arm-smmu-v3.h` (CTXDESC_CD_*) and QEMU `smmuv3-common.h` (CD_*).

Not modelled: VMSAv8-32 CDs (AA64=0 is ILLEGAL here), big-endian tables when IDR0.TTENDIAN allows them
(decoded, the walker decides), MAIR/AMAIR (stored only), MPAM PARTID/PMG, permission indirection.
"""
from __future__ import annotations

from ..fields import Field, Layout, record_codec, record_type
from .config import S1Cfg, StreamWorld
from .fault import EventType, Fault
from .regs import SmmuFeatures
from .ste import effective_ps

__all__ = ["CD_LAYOUT", "L1CD_LAYOUT", "Cd", "L1Cd", "decode", "encode", "decode_l1", "encode_l1",
           "validate", "s1_config", "tg0_granule", "tg1_granule", "CD_SIZE"]

CD_SIZE = 64

CD_LAYOUT = Layout("CD", 512, (
    Field("T0SZ", 0, 6), Field("TG0", 6, 2), Field("IR0", 8, 2), Field("OR0", 10, 2), Field("SH0", 12, 2),
    Field("EPD0", 14, 1), Field("ENDI", 15, 1), Field("T1SZ", 16, 6), Field("TG1", 22, 2), Field("IR1", 24, 2),
    Field("OR1", 26, 2), Field("SH1", 28, 2), Field("EPD1", 30, 1), Field("V", 31, 1),
    Field("IPS", 32, 3), Field("AFFD", 35, 1), Field("WXN", 36, 1), Field("UWXN", 37, 1), Field("TBI", 38, 2),
    Field("PAN", 40, 1), Field("AA64", 41, 1), Field("HD", 42, 1), Field("HA", 43, 1), Field("S", 44, 1),
    Field("R", 45, 1), Field("A", 46, 1), Field("ASET", 47, 1), Field("ASID", 48, 16),
    Field("NSCFG0", 64, 1), Field("HAD0", 65, 1), Field("TTB0", 68, 48, shift=4, doc="[51:4]"),
    Field("NSCFG1", 128, 1), Field("HAD1", 129, 1), Field("TTB1", 132, 48, shift=4, doc="[51:4]"),
    Field("MAIR", 192, 64), Field("AMAIR", 256, 64), Field("IMPDEF", 320, 32),
    Field("PARTID", 352, 16), Field("PMG", 368, 8),
))

L1CD_LAYOUT = Layout("L1CD", 64, (Field("V", 0, 1), Field("L2PTR", 12, 40, shift=12, doc="[51:12]")))


#: A Context Descriptor: one attribute per CD_LAYOUT field (lower case), `raw` = the 512 bits.
Cd = record_type("Cd", CD_LAYOUT, module=__name__)
#: Level-1 CD table descriptor (v, l2ptr, raw)
L1Cd = record_type("L1Cd", L1CD_LAYOUT, module=__name__)

decode, encode = record_codec(Cd, CD_LAYOUT)
decode_l1, encode_l1 = record_codec(L1Cd, L1CD_LAYOUT)


_TG0 = {0: 4096, 1: 65536, 2: 16384}
_TG1 = {1: 16384, 2: 4096, 3: 65536}


def tg0_granule(tg: int) -> int | None:
    return _TG0.get(tg)


def tg1_granule(tg: int) -> int | None:
    return _TG1.get(tg)


def _bad(sid: int, ssid: int | None, why: str) -> Fault:
    return Fault(EventType.C_BAD_CD, sid=sid, ssid=ssid, reason=why)


def validate(cd: Cd, f: SmmuFeatures, sid: int = 0, ssid: int | None = None, s1stalld: bool = False,
             world: StreamWorld = StreamWorld.NS_EL1) -> Fault | None:
    """ILLEGAL CD configurations (IHI 0070 5.4) -> C_BAD_CD with the reason; None when usable."""
    if not cd.v:
        return _bad(sid, ssid, "CD.V == 0")
    if not cd.aa64:
        return _bad(sid, ssid, "CD.AA64=0 (VMSAv8-32 stage 1) is not supported")
    if cd.endi and f.ttendian == 2:
        return _bad(sid, ssid, "CD.ENDI=1 (big-endian tables) but IDR0.TTENDIAN is little-endian only")
    if not cd.endi and f.ttendian == 3:
        return _bad(sid, ssid, "CD.ENDI=0 but IDR0.TTENDIAN is big-endian only")
    uses_asid = world in (StreamWorld.NS_EL1, StreamWorld.EL2_E2H)
    if uses_asid and cd.asid >> 8 and not f.asid16:
        return _bad(sid, ssid, f"CD.ASID={cd.asid:#x} has bits [15:8] set but IDR0.ASID16 == 0")
    if cd.s and (s1stalld or f.stall_model == 1):
        return _bad(sid, ssid, "CD.S=1 but stalls are disabled (STE.S1STALLD or IDR0.STALL_MODEL)")
    if not cd.s and f.stall_model == 2:
        return _bad(sid, ssid, "CD.S=0 but IDR0.STALL_MODEL forces the stall model")
    max_va = 52 if f.vax == 1 else 48
    halves = [(0, cd.epd0, cd.t0sz, tg0_granule(cd.tg0), cd.tg0, cd.ttb0)]
    if world != StreamWorld.EL2:         # EL2 (E2H=0) has TTB0 only
        halves.append((1, cd.epd1, cd.t1sz, tg1_granule(cd.tg1), cd.tg1, cd.ttb1))
    for n, epd, tsz, gran, tg, ttb in halves:
        if epd:
            continue
        if gran is None:
            return _bad(sid, ssid, f"CD.TG{n}={tg:#04b} is reserved")
        if gran not in f.granules:
            return _bad(sid, ssid, f"CD.TG{n} selects a {gran // 1024}KB granule the SMMU does not support")
        min_tsz = 64 - (max_va if gran == 65536 else 48)
        if not min_tsz <= tsz <= 39:
            return _bad(sid, ssid, f"CD.T{n}SZ={tsz} outside {min_tsz}..39")
        if ttb >> f.oas:
            return _bad(sid, ssid, f"CD.TTB{n}={ttb:#x} is outside the {f.oas}-bit OAS")
    return None


def s1_config(cd: Cd, f: SmmuFeatures) -> S1Cfg:
    """Stage-1 part of a validated CD, decoded for the translation core (reserved TGs of disabled halves
    decode as 4KB)."""
    return S1Cfg(ttb0=cd.ttb0, ttb1=cd.ttb1, t0sz=cd.t0sz, t1sz=cd.t1sz,
                 tg0=tg0_granule(cd.tg0) or 4096, tg1=tg1_granule(cd.tg1) or 4096,
                 epd0=bool(cd.epd0), epd1=bool(cd.epd1), ips=effective_ps(cd.ips, f),
                 asid=cd.asid if f.asid16 else cd.asid & 0xFF, aset=bool(cd.aset), affd=bool(cd.affd),
                 ha=bool(cd.ha) and f.httu >= 1, hd=bool(cd.hd) and f.httu >= 2, wxn=bool(cd.wxn),
                 uwxn=bool(cd.uwxn), pan=bool(cd.pan), tbi=cd.tbi, endi=bool(cd.endi), record=bool(cd.r),
                 stall=bool(cd.s), abort=bool(cd.a))
