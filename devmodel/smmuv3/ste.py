"""Stream Table Entry (IHI 0070 5.2) and Level-1 Stream Table Descriptor (5.1): layouts, records, validation.

`decode(bytes) -> Ste`, `encode(Ste) -> bytes` are pure and shared by the model, the host driver and the tests.
`validate(ste, features, ...) -> Fault | None` applies the spec's ILLEGAL rules and returns C_BAD_STE with
the reason; `s2_config(ste, ...)` decodes the stage-2 fields into `config.S2Cfg`.

Bit positions checked against Linux `arm-smmu-v3.h` (STRTAB_STE_*) and QEMU `smmuv3-common.h` (STE_*).

Not modelled: Secure/Realm STEs (NSCFG, Secure stage 2), VMSAv8-32 LPAE stage 2 (S2AA64=0 is ILLEGAL because
IDR0.TTF advertises AArch64 tables only; with `features.aarch32` it is still rejected, as the walker does not
implement LPAE), VMSAv9-128, MPAM, PBHA, the CONT hint (every STE is fetched individually).
"""
from __future__ import annotations

from ..fields import Field, Layout, record_codec, record_type
from .config import S2Cfg, StreamWorld
from .fault import EventType, Fault
from .regs import OAS_BITS, SmmuFeatures

__all__ = ["STE_LAYOUT", "L1STD_LAYOUT", "Ste", "L1Std", "decode", "encode", "decode_l1", "encode_l1",
           "validate", "s2_config", "s2_granule", "start_level", "STE_SIZE", "CONFIG_ABORT", "CONFIG_BYPASS",
           "CONFIG_S1", "CONFIG_S2", "CONFIG_NESTED"]

STE_SIZE = 64
CONFIG_ABORT, CONFIG_BYPASS, CONFIG_S1, CONFIG_S2, CONFIG_NESTED = 0b000, 0b100, 0b101, 0b110, 0b111

STE_LAYOUT = Layout("STE", 512, (
    Field("V", 0, 1), Field("CONFIG", 1, 3), Field("S1FMT", 4, 2),
    Field("S1CONTEXTPTR", 6, 46, shift=6, doc="[51:6]"), Field("S1CDMAX", 59, 5),
    Field("S1DSS", 64, 2), Field("S1CIR", 66, 2), Field("S1COR", 68, 2), Field("S1CSH", 70, 2),
    Field("S2HWU", 72, 4), Field("DRE", 76, 1), Field("CONT", 77, 4), Field("DCP", 81, 1),
    Field("PPAR", 82, 1), Field("MEV", 83, 1), Field("SW_RESERVED", 84, 4), Field("S1PIE", 88, 1),
    Field("S2FWB", 89, 1), Field("S1MPAM", 90, 1), Field("S1STALLD", 91, 1), Field("EATS", 92, 2),
    Field("STRW", 94, 2), Field("MEMATTR", 96, 4), Field("MTCFG", 100, 1), Field("ALLOCCFG", 101, 4),
    Field("SHCFG", 108, 2), Field("NSCFG", 110, 2), Field("PRIVCFG", 112, 2), Field("INSTCFG", 114, 2),
    Field("IMPL1", 116, 12),
    Field("S2VMID", 128, 16), Field("IMPL2", 144, 16),
    Field("S2T0SZ", 160, 6), Field("S2SL0", 166, 2), Field("S2IR0", 168, 2), Field("S2OR0", 170, 2),
    Field("S2SH0", 172, 2), Field("S2TG", 174, 2), Field("S2PS", 176, 3), Field("S2AA64", 179, 1),
    Field("S2ENDI", 180, 1), Field("S2AFFD", 181, 1), Field("S2PTW", 182, 1), Field("S2HD", 183, 1),
    Field("S2HA", 184, 1), Field("S2S", 185, 1), Field("S2R", 186, 1),
    Field("S2TTB", 196, 48, shift=4, doc="[51:4]"),
))

L1STD_LAYOUT = Layout("L1STD", 64, (Field("SPAN", 0, 5), Field("L2PTR", 6, 46, shift=6)))


class Ste(record_type("Ste", STE_LAYOUT, module=__name__)):
    """A Stream Table Entry: one attribute per STE_LAYOUT field (lower case), `raw` = the 512 bits."""
    __slots__ = ()

    @property
    def s1_enabled(self) -> bool:
        return self.config in (CONFIG_S1, CONFIG_NESTED)

    @property
    def s2_enabled(self) -> bool:
        return self.config in (CONFIG_S2, CONFIG_NESTED)


#: Level-1 Stream Table Descriptor (span, l2ptr, raw)
L1Std = record_type("L1Std", L1STD_LAYOUT, module=__name__)

decode, encode = record_codec(Ste, STE_LAYOUT)
decode_l1, encode_l1 = record_codec(L1Std, L1STD_LAYOUT)


#: STE.S2TG and CD.TG0 encoding -> granule bytes (0b11 reserved)
S2TG_GRANULE = {0: 4096, 1: 65536, 2: 16384}


def s2_granule(tg: int) -> int | None:
    return S2TG_GRANULE.get(tg)


def start_level(granule: int, sl0: int) -> int | None:
    """VTCR_EL2.SL0 -> start level (Arm ARM D8, without FEAT_TTST/LPA2): None for reserved encodings."""
    if granule == 4096:
        return {0: 2, 1: 1, 2: 0}.get(sl0)
    return {0: 3, 1: 2, 2: 1}.get(sl0)


def _level_range_ok(granule: int, level: int, ias: int) -> bool:
    """Can a walk starting at `level` (with up to 16 concatenated tables) cover exactly `ias` bits?"""
    gbits = granule.bit_length() - 1
    stride = gbits - 3
    lo = (3 - level) * stride + gbits        # what one level later could already cover
    hi = (4 - level) * stride + gbits + 4    # with 16 concatenated start tables
    return lo < ias <= hi


def _bad(sid: int, ssid: int | None, why: str) -> Fault:
    return Fault(EventType.C_BAD_STE, sid=sid, ssid=ssid, reason=why)


def validate(ste: Ste, f: SmmuFeatures, sid: int = 0, ssid: int | None = None) -> Fault | None:
    """ILLEGAL STE configurations (IHI 0070 5.2) -> C_BAD_STE with the reason; None when usable."""
    if not ste.v:
        return _bad(sid, ssid, "STE.V == 0")
    cfg = ste.config
    if cfg < CONFIG_BYPASS:      # 0b0xx: abort without event; nothing else is looked at
        return None
    if cfg & 1 and not f.s1p:
        return _bad(sid, ssid, f"STE.Config={cfg:#05b} needs stage 1 but IDR0.S1P == 0")
    if cfg & 2 and not f.s2p:
        return _bad(sid, ssid, f"STE.Config={cfg:#05b} needs stage 2 but IDR0.S2P == 0")
    if f.ats and ste.eats and cfg & 3:
        if ste.eats == 0b10 and (cfg != CONFIG_NESTED or ste.s2s):
            return _bad(sid, ssid, "STE.EATS=0b10 (split-stage) needs Config=0b111 and S2S=0")
        if ste.eats in (0b01, 0b11) and ste.s2_enabled and ste.s2s:
            return _bad(sid, ssid, f"STE.EATS={ste.eats:#04b} with stage 2 and S2S=1")
    if ste.s1_enabled:
        if f.ssidsize and ste.s1cdmax > f.ssidsize:
            return _bad(sid, ssid, f"STE.S1CDMax={ste.s1cdmax} > IDR1.SSIDSIZE={f.ssidsize}")
        if f.ssidsize and ste.s1cdmax and ste.s1fmt in (1, 2) and not f.cd2l:
            return _bad(sid, ssid, f"STE.S1Fmt={ste.s1fmt} (2-level CD table) but IDR0.CD2L == 0")
        if ste.s1stalld and f.stall_model != 0:
            return _bad(sid, ssid, f"STE.S1STALLD=1 but IDR0.STALL_MODEL={f.stall_model:#04b}")
        if f.hyp and not ste.s2_enabled and ste.strw & 1:
            return _bad(sid, ssid, f"STE.STRW={ste.strw:#04b} is reserved")
    if ste.s2_enabled:
        why = _s2_illegal(ste, f)
        if why:
            return _bad(sid, ssid, why)
    return None


def _s2_illegal(ste: Ste, f: SmmuFeatures) -> str | None:
    if not ste.s2aa64:
        return "STE.S2AA64=0 (VMSAv8-32 LPAE stage 2) is not supported"
    if ste.s2vmid >> 8 and not f.vmid16:
        return f"STE.S2VMID={ste.s2vmid:#x} has bits [15:8] set but IDR0.VMID16 == 0"
    gran = s2_granule(ste.s2tg)
    if gran is None:
        return f"STE.S2TG={ste.s2tg:#04b} is reserved"
    if gran not in f.granules:
        return f"STE.S2TG selects a {gran // 1024}KB granule the SMMU does not support (IDR5)"
    min_t0sz = 12 if (f.oas == 52 and gran == 65536) else 16
    if not min_t0sz <= ste.s2t0sz <= 39:
        return f"STE.S2T0SZ={ste.s2t0sz} outside {min_t0sz}..39"
    level = start_level(gran, ste.s2sl0)
    if level is None:
        return f"STE.S2SL0={ste.s2sl0} is reserved for the {gran // 1024}KB granule"
    if not _level_range_ok(gran, level, 64 - ste.s2t0sz):
        return (f"STE.S2SL0={ste.s2sl0} (start level {level}) is inconsistent with S2T0SZ={ste.s2t0sz} "
                f"for the {gran // 1024}KB granule")
    if ste.s2endi and f.ttendian == 2:
        return "STE.S2ENDI=1 (big-endian tables) but IDR0.TTENDIAN is little-endian only"
    if not ste.s2endi and f.ttendian == 3:
        return "STE.S2ENDI=0 (little-endian tables) but IDR0.TTENDIAN is big-endian only"
    if ste.s2s and f.stall_model == 1:
        return "STE.S2S=1 but IDR0.STALL_MODEL says stalls are not supported"
    if not ste.s2s and f.stall_model == 2:
        return "STE.S2S=0 but IDR0.STALL_MODEL forces the stall model"
    if ste.s2ttb >> f.oas:
        return f"STE.S2TTB={ste.s2ttb:#x} is outside the {f.oas}-bit OAS"
    return None


def effective_ps(enc: int, f: SmmuFeatures) -> int:
    """S2PS/IPS encodings above the OAS (and reserved ones) are treated as the OAS (IHI 0070 3.4)."""
    return min(OAS_BITS.get(enc, f.oas), f.oas)


def s2_config(ste: Ste, f: SmmuFeatures) -> S2Cfg:
    """Stage-2 part of a validated STE, decoded for the translation core."""
    return S2Cfg(vmid=ste.s2vmid if f.vmid16 else ste.s2vmid & 0xFF, vttb=ste.s2ttb, t0sz=ste.s2t0sz,
                 sl0=ste.s2sl0, tg=S2TG_GRANULE[ste.s2tg], ps=effective_ps(ste.s2ps, f), aa64=bool(ste.s2aa64),
                 affd=bool(ste.s2affd), ptw=bool(ste.s2ptw), endi=bool(ste.s2endi), record=bool(ste.s2r),
                 stall=bool(ste.s2s), ha=bool(ste.s2ha) and f.httu >= 1, hd=bool(ste.s2hd) and f.httu >= 2,
                 fwb=bool(ste.s2fwb) and f.fwb)


def stream_world(ste: Ste, f: SmmuFeatures, e2h: bool) -> StreamWorld:
    """IHI 0070 5.2 STRW for Non-secure STEs: EL2/EL2-E2H only for stage-1-only STEs with Hyp support."""
    if ste.s2_enabled or not f.hyp or ste.strw != 0b10:
        return StreamWorld.NS_EL1
    return StreamWorld.EL2_E2H if e2h else StreamWorld.EL2
