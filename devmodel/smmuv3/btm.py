"""Broadcast TLB maintenance (IHI 0070 3.17.6): what one DVM TLBI message (`tlbi_types.TlbiOp`) names in an
SMMU's TLB, as pure functions. `translate.TranslationCore.dvm_tlbi` applies the selection to its IOTLB and
accounts for it; the device (`device.SMMUv3.dvm_tlbi`) decides whether broadcasts apply at all (IDR0.BTM=1,
CR2.PTM=0, SMMUEN=1).

* `malformed(op, vmid_bits, asid_bits) -> reason | None`: a message from another DVM participant that cannot
  be a TLBI the Arm ARM defines: an unknown regime/scope combination (the TLBI table of DDI 0487 D8.13 / C5.5
  gives EL1&0: ALL, VMALL, ASID, VA, VAA, IPA; EL2&0: ALL, VMALL, ASID, VA, VAA; EL2 and EL3: ALL, VA; GPT: PA),
  a Security state the EL1&0 regime cannot have (Root), a field the scope needs left out (ASID for ASIDE1,
  the address for by-VA/IPA operations), values outside their fields (addresses beyond 64 bits, negative
  sizes, TTL beyond 4 bits), or a VMID/ASID wider than this SMMU's (IDR0.VMID16/ASID16: no entry of this
  SMMU can carry those bits, since STE.S2VMID[15:8] / CD.ASID[15:8] are ILLEGAL without them, IHI 0070
  5.2/5.4). Such messages are counted and applied to nothing.
* `select(op) -> DvmSelection | None`: the StreamWorlds (EL1&0 -> NS-EL1/Secure/Realm by the op's Security
  state, EL2 -> EL2, EL2&0 -> EL2-E2H, ALLE2 -> both, EL3 -> EL3), the VMID (None: every VMID), the ASID
  (ASID-specific operations spare entries whose CD had ASET=1), the kinds of entries (S1 ops: stage-1 and
  combined; IPAS2: stage-2; VMALLS12E1/ALLE1: all), the address range (`op.size`, already computed by the
  decoder with the CPU formula) and the TTL/granule hints. None for operations that name no TLB entry of an
  SMMU (RME GPT maintenance).

Not modelled: Secure EL2 and Realm EL2 worlds (EL2 operations are taken as Non-secure), FEAT_TTST/LPA2 hint
forms.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tlbi_types import Regime, Scope, Security, Stage, TlbiOp
from .config import StreamWorld
from .iotlb import KIND_NESTED, KIND_S1, KIND_S2, MASK56

__all__ = ["DvmSelection", "malformed", "select", "VALID_SCOPES", "ttl_valid"]

MASK64 = (1 << 64) - 1
ALL_KINDS = frozenset((KIND_S1, KIND_S2, KIND_NESTED))
S1_KINDS = frozenset((KIND_S1, KIND_NESTED))
S2_KINDS = frozenset((KIND_S2,))
EL2_WORLDS = frozenset((StreamWorld.EL2, StreamWorld.EL2_E2H))

#: the (regime, scope) pairs of the Arm ARM's TLBI operations (DDI 0487 C5.5, D8.13)
VALID_SCOPES: dict[Regime, frozenset[Scope]] = {
    Regime.EL10: frozenset((Scope.ALL, Scope.VMALL, Scope.ASID, Scope.VA, Scope.VAA, Scope.IPA)),
    Regime.EL20: frozenset((Scope.ALL, Scope.VMALL, Scope.ASID, Scope.VA, Scope.VAA)),
    Regime.EL2: frozenset((Scope.ALL, Scope.VA)),
    Regime.EL3: frozenset((Scope.ALL, Scope.VA)),
    Regime.GPT: frozenset((Scope.PA,)),
}
_EL10_WORLD = {Security.NS: StreamWorld.NS_EL1, Security.S: StreamWorld.SECURE,
               Security.REALM: StreamWorld.REALM}
_ADDRESSED = frozenset((Scope.VA, Scope.VAA, Scope.IPA))
_STAGE_KINDS = {Stage.S1: S1_KINDS, Stage.S2: S2_KINDS, Stage.S12: ALL_KINDS}


@dataclass(frozen=True, slots=True)
class DvmSelection:
    """What one broadcast names: tags (worlds, VMID, ASID, kinds) and entries (range, hints)."""
    worlds: frozenset[StreamWorld]
    vmid: int | None               # None: every VMID
    asid: int | None
    asid_mode: str                 # "all" | "asid" (ASIDE1: that ASID only) | "va" (that ASID or global)
    aset_exempt: bool              # CD.ASET=1 entries are spared (ASID-specific broadcasts)
    kinds: frozenset[str]
    rng: tuple[int, int] | None    # [lo, hi) in the 56-bit canonical VA space, or IPAs; None: everything
    by_ipa: bool
    leaf: bool
    level: int                     # TTL level hint (0: none)
    granule: int | None            # granule hint in bytes (None: none)
    over_s2: bool                  # a stage-1 EL1&0 op: stage-2-only contexts of its VMID are allowed extras


def _uint(v: object, bits: int) -> bool:
    return isinstance(v, int) and 0 <= v < 1 << bits


def malformed(op: TlbiOp, vmid_bits: int = 16, asid_bits: int = 16) -> str | None:
    """Why `op` is not a well-formed DVM TLBI for an SMMU with these VMID/ASID widths (None: it is)."""
    scopes = VALID_SCOPES.get(op.regime)
    if scopes is None or op.scope not in scopes:
        return f"no TLBI operates on scope {op.scope!r} of regime {op.regime!r}"
    if op.stage not in _STAGE_KINDS:
        return f"unknown stage {op.stage!r}"
    if op.regime == Regime.EL10 and op.security not in _EL10_WORLD:
        return f"the EL1&0 regime has no Security state {op.security!r}"
    if op.vmid is not None and not _uint(op.vmid, vmid_bits):
        return f"VMID {op.vmid!r} does not fit this SMMU's {vmid_bits}-bit VMIDs"
    if op.asid is not None and not _uint(op.asid, asid_bits):
        return f"ASID {op.asid!r} does not fit this SMMU's {asid_bits}-bit ASIDs"
    if op.scope == Scope.ASID and op.asid is None:
        return "ASID-specific operation without an ASID"
    if op.scope in _ADDRESSED and not _uint(op.addr, 64):
        return f"{op.scope.value} operation with address {op.addr!r}"
    if op.size is not None and not _uint(op.size, 65):
        return f"range size {op.size!r}"
    if not _uint(op.ttl, 4):
        return f"TTL {op.ttl!r} does not fit 4 bits"
    return None


def _worlds(op: TlbiOp) -> tuple[frozenset[StreamWorld], int | None]:
    """StreamWorlds and VMID (None: all) an operation of a well-formed message reaches."""
    if op.regime == Regime.EL10:
        return frozenset((_EL10_WORLD[op.security],)), op.vmid
    if op.regime == Regime.EL3:
        return frozenset((StreamWorld.EL3,)), None
    if op.scope == Scope.ALL:
        return EL2_WORLDS, None                # ALLE2 covers the EL2 and EL2&0 regimes
    return frozenset((StreamWorld.EL2 if op.regime == Regime.EL2 else StreamWorld.EL2_E2H,)), None


def _range(op: TlbiOp) -> tuple[tuple[int, int] | None, int, int | None]:
    """(address range, TTL level hint, granule hint) of a by-address operation."""
    if op.scope not in (Scope.VA, Scope.VAA, Scope.IPA):
        return None, 0, None
    lo = op.addr
    level, granule = 0, None
    if op.size:                                # range: TTL is a level, TG the granule
        hi = lo + op.size
        level, granule = op.ttl & 3, op.granule
    else:                                      # TTL[3:2] granule, TTL[1:0] level
        hi = lo + 1
        if op.ttl >> 2:
            granule = op.granule
            level = op.ttl & 3 if ttl_valid(op.ttl & 3, granule) else 0
    if op.scope == Scope.IPA:
        return (lo, hi), level, granule
    lo56 = lo & MASK56
    return (lo56, lo56 + (hi - lo)), level, granule


def select(op: TlbiOp) -> DvmSelection | None:
    """What a well-formed broadcast (`malformed(op)` is None) names in an SMMU TLB; None: nothing (GPT)."""
    if op.regime == Regime.GPT or op.scope == Scope.PA:
        return None                            # RME granule protection: no TLB entries here
    worlds, vmid = _worlds(op)
    kinds = S2_KINDS if op.scope == Scope.IPA else _STAGE_KINDS[op.stage]
    if op.scope == Scope.ASID:
        asid_mode, exempt = "asid", True
    elif op.scope == Scope.VA and op.asid is not None:
        asid_mode, exempt = "va", True
    else:
        asid_mode, exempt = "all", False
    rng, level, granule = _range(op)
    over_s2 = op.stage == Stage.S1 and op.scope != Scope.IPA and op.regime == Regime.EL10 \
        and StreamWorld.NS_EL1 in worlds
    return DvmSelection(worlds, vmid, op.asid, asid_mode, exempt, kinds, rng, op.scope == Scope.IPA, op.leaf,
                        level, granule, over_s2)


def ttl_valid(level: int, granule: int | None) -> bool:
    """TTL level hints that can name a leaf: 4K levels 1-3, 16K/64K levels 2-3 (48-bit formats)."""
    if not level:
        return False
    return level >= (1 if granule == 4096 else 2)
