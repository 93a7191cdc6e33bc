"""The decoded TLBI operation: the contract between the TLBI decoder, the DVM interconnect and every receiver
(vCPU TLBs, SMMUs with BTM). Kept apart from the decoder table so receivers import only this.

A `TlbiOp` is what an AMBA CHI DVM TLB Invalidate carries (IHI 0050, DVM chapter: DVMType TLBI,
Exception level/regime, Security, VMIDV+VMID, ASIDV+ASID, AddrV+address, Leaf, Stage, Range with
Num/Scale/TG/TTL), plus the instruction facts a debugger wants (name, encoding, Xt, shareability).

Produced by `tlbi.decode` (the trapped instruction) and by the simulated host's own maintenance
(`harness/host/vmid.py`); carried by `dvm.Interconnect`; consumed by receivers, which validate what they rely
on (`smmuv3/btm.py`).
"""
from __future__ import annotations

from enum import Enum

from .record import Frozen, assign

__all__ = ["Regime", "Security", "Stage", "Scope", "Share", "TlbiOp", "DecodeContext", "UndefinedTlbi"]


class Regime(str, Enum):
    """Translation regime the operation targets (CHI DVM 'Exception' + hypervisor bits)."""
    EL10 = "EL1&0"     # guest OS / EL1&0 of the current VMID
    EL2 = "EL2"        # hypervisor, E2H=0
    EL20 = "EL2&0"     # hypervisor host with E2H=1 (VHE)
    EL3 = "EL3"
    GPT = "GPT"        # RME granule protection (PAALL*, RPA*)


class Security(str, Enum):
    NS = "NS"
    S = "S"
    REALM = "Realm"
    ROOT = "Root"


class Stage(str, Enum):
    S1 = "S1"
    S2 = "S2"
    S12 = "S1+S2"


class Scope(str, Enum):
    """Which entries of the regime the operation selects."""
    ALL = "all"          # ALLE1/ALLE2/ALLE3: every entry of the regime (all VMIDs for E1)
    VMALL = "vmall"      # VMALLE1 / VMALLS12E1: every entry of the current VMID
    ASID = "asid"        # ASIDE1: entries of one ASID (global entries kept)
    VA = "va"            # VAE*/RVAE*: entries of one ASID (or global) at an address / range
    VAA = "vaa"          # VAAE1/RVAAE1: all ASIDs at an address / range
    IPA = "ipa"          # IPAS2E1/RIPAS2E1: stage-2 entries at an IPA / range
    PA = "pa"            # RME: PAALL / RPA


class Share(str, Enum):
    NSH = "NSH"
    ISH = "ISH"
    OSH = "OSH"


class TlbiOp(Frozen):
    __slots__ = ("name", "op1", "crn", "crm", "op2", "xt", "shareability", "broadcast", "regime", "security",
                 "stage", "scope", "vmid", "asid", "addr", "size", "leaf", "ttl", "tg", "scale", "num", "nxs",
                 "ipa_ns")
    name: str                 # Arm ARM name, upper case: "VAE1IS", "RVALE1OS", "VAE1ISNXS"
    op1: int
    crn: int                  # 8, or 9 for the FEAT_XS nXS forms
    crm: int
    op2: int
    xt: int | None            # raw Xt, None for operations without a register operand
    shareability: Share       # as encoded in the instruction
    broadcast: bool           # after HCR_EL2.FB: True when it goes to the other DVM participants
    regime: Regime
    security: Security
    stage: Stage
    scope: Scope
    vmid: int | None          # VMIDV: None when the op covers all VMIDs or the regime has none
    asid: int | None          # ASIDV: None when the op covers all ASIDs
    addr: int | None          # AddrV: start byte address (VA sign-extended from bit 55, or IPA)
    size: int | None          # bytes covered by a range op; None for single-address ops
    leaf: bool                # last-level-only (…L… forms)
    ttl: int                  # TTL hint: 4-bit field for non-range ops, 2-bit level for range ops (0 = none)
    tg: int | None            # range: TG (1=4K, 2=16K, 3=64K)
    scale: int | None
    num: int | None
    nxs: bool
    ipa_ns: bool | None       # IPAS2*: Xt[63] NS (selects the NS IPA space for Secure callers)

    def __init__(self, name: str, op1: int, crn: int, crm: int, op2: int, xt: int | None, shareability: Share,
                 broadcast: bool, regime: Regime, security: Security, stage: Stage, scope: Scope,
                 vmid: int | None, asid: int | None, addr: int | None, size: int | None, leaf: bool, ttl: int,
                 tg: int | None = None, scale: int | None = None, num: int | None = None, nxs: bool = False,
                 ipa_ns: bool | None = None) -> None:
        assign(self, "name", name)
        assign(self, "op1", op1)
        assign(self, "crn", crn)
        assign(self, "crm", crm)
        assign(self, "op2", op2)
        assign(self, "xt", xt)
        assign(self, "shareability", shareability)
        assign(self, "broadcast", broadcast)
        assign(self, "regime", regime)
        assign(self, "security", security)
        assign(self, "stage", stage)
        assign(self, "scope", scope)
        assign(self, "vmid", vmid)
        assign(self, "asid", asid)
        assign(self, "addr", addr)
        assign(self, "size", size)
        assign(self, "leaf", leaf)
        assign(self, "ttl", ttl)
        assign(self, "tg", tg)
        assign(self, "scale", scale)
        assign(self, "num", num)
        assign(self, "nxs", nxs)
        assign(self, "ipa_ns", ipa_ns)

    @property
    def granule(self) -> int | None:
        """Translation granule in bytes implied by TG (range) or TTL[3:2] (non-range), if any."""
        if self.tg is not None:
            return {1: 4096, 2: 16384, 3: 65536}.get(self.tg)
        tg = (self.ttl >> 2) & 3
        return {1: 4096, 2: 16384, 3: 65536}.get(tg) if self.ttl else None


class DecodeContext(Frozen):
    """What hardware adds to the operation: the issuing PE's state."""
    __slots__ = ("el", "vmid", "security", "hcr_fb", "e2h", "tge")
    el: int                         # current exception level of the issuing vCPU
    vmid: int                       # VTTBR_EL2.VMID of the issuing vCPU (its VM's current KVM VMID)
    security: Security
    hcr_fb: bool                    # KVM sets HCR_EL2.FB for every guest
    e2h: bool                       # HCR_EL2.E2H (VHE host)
    tge: bool                       # HCR_EL2.TGE

    def __init__(self, el: int = 1, vmid: int = 0, security: Security = Security.NS, hcr_fb: bool = True,
                 e2h: bool = False, tge: bool = False) -> None:
        assign(self, "el", el)
        assign(self, "vmid", vmid)
        assign(self, "security", security)
        assign(self, "hcr_fb", hcr_fb)
        assign(self, "e2h", e2h)
        assign(self, "tge", tge)


class UndefinedTlbi(Exception):
    """The encoding is not a TLBI, or not allowed at the issuing EL: an undefined instruction for the guest."""
