"""Stream table walk (IHI 0070 3.3.2, 5.1), STE and CD fetch with validation, and the decode of one
(StreamID, SubstreamID) into a `config.TransCfg` -- the record the translation core consumes.

Pure functions: memory is reached only through a `fetch(addr, nbytes, kind) -> bytes | Fault` callable the
device provides (it reads the bus, maps bus errors to F_STE_FETCH/F_CD_FETCH, and for nested STEs translates
CD-table IPAs through stage 2). The outcome is a `TransCfg` or a `Fault` value, never an exception.

Choices where the spec allows several outcomes (documented CONSTRAINED UNPREDICTABLE picks):
* STRTAB_BASE_CFG.FMT 0b10/0b11 (reserved) and FMT=2-level without IDR0.ST_LEVEL support behave as linear.
* SPLIT values other than 6, 8, 10 behave as 6; L1STD.Span greater than SPLIT+1 is invalid (C_BAD_STREAMID).
* RES0 bits of S1ContextPtr (below the table size) and L1CD.L2Ptr[15:12] (64KB leaves) are treated as zero.

STE.EATS goes into `TransCfg.eats` (with IDR0.ATS=1) for the ATS service (`pcie.py`).

Not modelled: Secure/Realm stream tables, the STE.CONT hint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import cd as cdmod
from . import ste as stemod
from .config import CfgKind, TransCfg
from .fault import EventType, Fault
from .regs import SmmuFeatures

__all__ = ["SteLookup", "find_ste", "resolve", "Fetch", "FMT_LINEAR", "FMT_2LVL"]

FMT_LINEAR, FMT_2LVL = 0, 1
Fetch = Callable[[int, int, str], "bytes | Fault"]


@dataclass(frozen=True, slots=True)
class SteLookup:
    ste: stemod.Ste
    addr: int                     # where the STE was read
    l1ptr: int | None = None      # 2-level: address of the L1STD
    l2ptr: int | None = None
    span: int | None = None


def find_ste(fetch: Fetch, strtab_base: int, strtab_cfg: int, f: SmmuFeatures, sid: int,
             ssid: int | None = None) -> SteLookup | Fault:
    """Locate and read the STE of `sid` (STRTAB_BASE ADDR field value and the raw STRTAB_BASE_CFG)."""
    def bad_sid(why: str) -> Fault:
        return Fault(EventType.C_BAD_STREAMID, sid=sid, ssid=ssid, reason=why)

    log2size = min(strtab_cfg & 0x3F, f.sidsize)
    split = (strtab_cfg >> 6) & 0x1F
    fmt = (strtab_cfg >> 16) & 3
    if sid < 0 or sid >> log2size:
        return bad_sid(f"StreamID {sid:#x} >= 2^STRTAB_BASE_CFG.LOG2SIZE ({1 << log2size:#x} entries)")
    if fmt != FMT_2LVL or not f.st_level_2:
        size = max((1 << log2size) * stemod.STE_SIZE, 64)
        base = strtab_base & ~(size - 1)
        addr = base + sid * stemod.STE_SIZE
        data = fetch(addr, stemod.STE_SIZE, "ste")
        if isinstance(data, Fault):
            return data
        return SteLookup(stemod.decode(data), addr)
    if split not in (6, 8, 10):
        split = 6
    l1_entries = 1 << max(log2size - split, 0)
    l1_size = max(l1_entries * 8, 64)
    l1base = strtab_base & ~(l1_size - 1)
    l1ptr = l1base + (sid >> split) * 8
    data = fetch(l1ptr, 8, "ste")
    if isinstance(data, Fault):
        return data
    desc = stemod.decode_l1(data)
    if desc.span == 0 or desc.span > split + 1:
        return bad_sid(f"L1STD at {l1ptr:#x} has Span={desc.span} (invalid for SPLIT={split})")
    l2_entries = 1 << (desc.span - 1)
    l2idx = sid & ((1 << split) - 1)
    if l2idx >= l2_entries:
        return bad_sid(f"StreamID {sid:#x}: index {l2idx} beyond the L2 table's {l2_entries} entries "
                       f"(L1STD.Span={desc.span})")
    l2ptr = desc.l2ptr & ~(l2_entries * stemod.STE_SIZE - 1)
    addr = l2ptr + l2idx * stemod.STE_SIZE
    data = fetch(addr, stemod.STE_SIZE, "ste")
    if isinstance(data, Fault):
        return data
    return SteLookup(stemod.decode(data), addr, l1ptr, l2ptr, desc.span)


def resolve(fetch: Fetch, ste: stemod.Ste, f: SmmuFeatures, sid: int, ssid: int | None, e2h: bool = False,
            on_cd: Callable[[int], None] | None = None) -> TransCfg | Fault:
    """Validate an STE and (for stage 1) fetch and validate its CD: the decoded configuration or a Fault.

    `fetch(addr, n, "cd")` reads CD-table memory: for nested STEs the device passes IPAs through stage 2.
    `on_cd(addr)` is told the address of every CD read (for tracing)."""
    bad = stemod.validate(ste, f, sid, ssid)
    if bad is not None:
        return bad
    oas = f.oas
    eats = ste.eats if f.ats else 0
    if ste.config < stemod.CONFIG_BYPASS:
        return TransCfg(sid, ssid, CfgKind.ABORT, oas=oas)
    s2 = stemod.s2_config(ste, f) if ste.s2_enabled else None
    if not ste.s1_enabled:
        if ssid is not None:
            return _bad_ssid(sid, ssid, "SubstreamID supplied but stage 1 is disabled (STE.Config=0b1x0)")
        kind = CfgKind.S2 if s2 is not None else CfgKind.BYPASS
        return TransCfg(sid, ssid, kind, s2=s2, oas=oas, eats=eats)
    world = stemod.stream_world(ste, f, e2h)
    cd_addr = _cd_of_stream(fetch, ste, f, sid, ssid)
    if cd_addr is None:            # STE.S1DSS=0b01: stage 1 bypassed for transactions without SubstreamID
        return TransCfg(sid, ssid, CfgKind.S2 if s2 is not None else CfgKind.BYPASS, world=world, s2=s2, oas=oas,
                        eats=eats)
    if isinstance(cd_addr, Fault):
        return cd_addr
    if on_cd is not None:
        on_cd(cd_addr)
    data = fetch(cd_addr, cdmod.CD_SIZE, "cd")
    if isinstance(data, Fault):
        return data
    cd = cdmod.decode(data)
    bad = cdmod.validate(cd, f, sid, ssid, s1stalld=bool(ste.s1stalld), world=world)
    if bad is not None:
        return bad
    kind = CfgKind.NESTED if s2 is not None else CfgKind.S1
    # stage-1-only entries are tagged with STE.S2VMID when stage 2 is implemented (IHI 0070 3.17)
    s1_vmid = 0 if s2 is not None or not f.s2p else (ste.s2vmid if f.vmid16 else ste.s2vmid & 0xFF)
    return TransCfg(sid, ssid, kind, world=world, s1=cdmod.s1_config(cd, f), s2=s2, oas=oas, s1_vmid=s1_vmid,
                    eats=eats)


def _bad_ssid(sid: int, ssid: int | None, why: str) -> Fault:
    return Fault(EventType.C_BAD_SUBSTREAMID, sid=sid, ssid=ssid, reason=why)


def _cd_of_stream(fetch: Fetch, ste: stemod.Ste, f: SmmuFeatures, sid: int, ssid: int | None) -> int | Fault | None:
    """Address of the CD a transaction of (sid, ssid) uses (IHI 0070 5.2 S1CDMax/S1DSS), a Fault, or None
    when STE.S1DSS=0b01 makes a transaction without SubstreamID bypass stage 1."""
    cdmax = ste.s1cdmax if f.ssidsize else 0
    if cdmax == 0:
        if ssid is not None:
            return _bad_ssid(sid, ssid, "SubstreamID supplied but STE.S1CDMax == 0 (substreams disabled)")
        return ste.s1contextptr
    eff = ssid
    if ssid is None:
        dss = ste.s1dss
        if dss == 0b01:        # bypass stage 1
            return None
        if dss != 0b10:        # terminate (0b00, reserved 0b11)
            return Fault(EventType.F_STREAM_DISABLED, sid=sid, ssid=None,
                         reason=f"no SubstreamID and STE.S1DSS={dss:#04b} (terminate)")
        eff = 0
    elif ssid < 0 or ssid >> cdmax:
        return _bad_ssid(sid, ssid, f"SubstreamID {ssid:#x} >= 2^STE.S1CDMax ({1 << cdmax})")
    elif ssid == 0 and ste.s1dss == 0b10:
        return Fault(EventType.F_STREAM_DISABLED, sid=sid, ssid=ssid,
                     reason="SubstreamID 0 is reserved by STE.S1DSS=0b10")
    return _cd_address(fetch, ste, cdmax, eff, f, sid, ssid)


def _cd_address(fetch: Fetch, ste: stemod.Ste, cdmax: int, ssid: int, f: SmmuFeatures, sid: int,
                tx_ssid: int | None) -> int | Fault:
    fmt = ste.s1fmt if f.cd2l else 0
    ptr = ste.s1contextptr
    if fmt in (0, 3):
        return (ptr & ~((1 << (cdmax + 6)) - 1)) + ssid * cdmod.CD_SIZE
    leaf_bits = 6 if fmt == 1 else 10
    l1_entries = 1 << max(cdmax - leaf_bits, 0)
    l1base = ptr & ~(max(l1_entries * 8, 64) - 1)
    l1ptr = l1base + (ssid >> leaf_bits) * 8
    data = fetch(l1ptr, 8, "cd")
    if isinstance(data, Fault):
        return data
    desc = cdmod.decode_l1(data)
    if not desc.v:
        return Fault(EventType.C_BAD_SUBSTREAMID, sid=sid, ssid=tx_ssid,
                     reason=f"L1CD at {l1ptr:#x} is invalid (V=0)")
    l2 = desc.l2ptr & ~((1 << (leaf_bits + 6)) - 1)
    return l2 + (ssid & ((1 << leaf_bits) - 1)) * cdmod.CD_SIZE
