"""The SMMU's translation table walks: thin adapters over the VMSAv8-64 walker in `devmodel/vmsa.py`.

The walker is the architecture's (DDI 0487 D8); what is the SMMU's is here: the decoded CD/STE (`S1Cfg`,
`S2Cfg`, which have the walker's field names) go in unchanged, the StreamWorld picks one or two VA ranges
(IHI 0070 3.4.1: EL2 with E2H=0 and EL3 have TTB0 only), and the walker's faults come out as the SMMU's
(IHI 0070 7.3): `WalkFault` with the event type, the stage, the CLASS of the access (CD / TT / IN), the level,
and the IPA (stage-2 faults) or fetch address (F_WALK_EABT). `TranslationCore` turns it into a `Fault`.

| walker (`vmsa.FaultKind`) | SMMU event |
|---|---|
| TRANSLATION | F_TRANSLATION |
| ADDRESS_SIZE | F_ADDR_SIZE |
| ACCESS_FLAG | F_ACCESS |
| EXTERNAL_ABORT | F_WALK_EABT (CLASS=TT for stage-1 table reads) |

Permission checks are separate (the caller compares `Leaf.perm_*` with `need_of(...)`), so a cached entry can
fault without a walk. Hardware updates (HTTU, IHI 0070 3.13) are the walker's (`vmsa.Httu`): the translation
core builds one per stage from CD.HA/HD and STE.S2HA/S2HD. Not modelled yet: see `devmodel/vmsa.py`; also
S2PTW device-memory checks, and big-endian tables (CD.ENDI/STE.S2ENDI are rejected by the programming model).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import vmsa
from ..vmsa import MIN_TSZ, FaultKind, Httu, Leaf, ReadFn, TableXlate, VmsaFault, s2_perms
from .config import PERM_R, PERM_W, PERM_X, S1Cfg, S2Cfg, StreamWorld
from .fault import EventType, FaultClass

__all__ = ["Leaf", "WalkFault", "walk_s1", "walk_s2", "s1_select", "s2_perms", "need_of", "ReadFn", "TableXlate",
           "MIN_TSZ", "MAX_TSZ", "Httu"]

MAX_TSZ = 48          # SMMU_IDR3.STT=1 small translation tables, 4K/16K granules (64K: 47, `vmsa.max_tsz`)
_SINGLE_RANGE = (StreamWorld.EL2, StreamWorld.EL3)
_EVENT = {FaultKind.TRANSLATION: EventType.F_TRANSLATION, FaultKind.ADDRESS_SIZE: EventType.F_ADDR_SIZE,
          FaultKind.ACCESS_FLAG: EventType.F_ACCESS, FaultKind.EXTERNAL_ABORT: EventType.F_WALK_EABT}


@dataclass(frozen=True, slots=True)
class WalkFault:
    type: EventType
    stage2: bool = False
    cls: FaultClass = FaultClass.IN
    level: int = 0
    ipa: int = 0          # stage-2 faults: the IPA; F_WALK_EABT: the descriptor fetch address
    reason: str = ""
    tt_write: bool = False  # CLASS=TT: the table access was a hardware update (a write), not a read


def _s1_fault(f: VmsaFault) -> WalkFault:
    if f.kind is FaultKind.EXTERNAL_ABORT:
        return WalkFault(EventType.F_WALK_EABT, False, FaultClass.TT, f.level, f.addr, "stage-1 " + f.reason)
    return WalkFault(_EVENT[f.kind], False, FaultClass.IN, f.level, 0, f.reason)


def _s2_fault(f: VmsaFault, cls: FaultClass, ipa: int) -> WalkFault:
    eabt = f.kind is FaultKind.EXTERNAL_ABORT
    return WalkFault(_EVENT[f.kind], True, cls, f.level, f.addr if eabt else ipa,
                     f"stage-2 {f.reason}" + (f" for IPA {ipa:#x}" if eabt else ""))


def s1_select(s1: S1Cfg, va: int, world: StreamWorld = StreamWorld.NS_EL1):
    """Pick the TTB for `va` (IHI 0070 3.4.1, DDI 0487 D8.2.3): returns (ttb, tsz, granule, tbi, upper) or a
    WalkFault."""
    sel = vmsa.s1_select(s1, va, world not in _SINGLE_RANGE)
    return _s1_fault(sel) if type(sel) is VmsaFault else sel


def walk_s1(s1: S1Cfg, va: int, read: ReadFn, *, world: StreamWorld = StreamWorld.NS_EL1, oas: int = 48,
            table_xlate: TableXlate | None = None, wc: dict | None = None, httu: Httu | None = None,
            write: bool = False, priv: bool = False) -> Leaf | WalkFault:
    """Stage-1 walk of `va`. Output size = min(CD.IPS, oas). In nested mode `table_xlate` translates every
    table address (an IPA) through stage 2; its faults come back unchanged (stage2=True, CLASS=TT).
    Permissions are not checked here (`Leaf.perm_priv`/`perm_user`). `httu` (CD.HA/HD) updates the leaf for
    an access that is a `write` (or not) at privilege `priv` (IHI 0070 3.13)."""
    r = vmsa.walk_s1(s1, va, read, two_ranges=world not in _SINGLE_RANGE, oas=oas, table_xlate=table_xlate,
                     wc=wc, httu=httu, write=write, priv=priv)
    return _s1_fault(r) if type(r) is VmsaFault else r


def walk_s2(s2: S2Cfg, ipa: int, read: ReadFn, *, cls: FaultClass = FaultClass.IN,
            oas: int = 48, wc: dict | None = None, xnx: bool = False, httu: Httu | None = None,
            write: bool = False) -> Leaf | WalkFault:
    """Stage-2 walk of `ipa` (STE S2T0SZ/S2SL0/S2TG/S2PS). Faults carry stage2=True, `cls`, and the IPA.
    `httu` (STE.S2HA/S2HD) updates the leaf for a `write` (or not)."""
    r = vmsa.walk_s2(s2, ipa, read, oas=oas, wc=wc, xnx=xnx, httu=httu, write=write)
    return _s2_fault(r, cls, ipa) if type(r) is VmsaFault else r


def need_of(write: bool, exec_: bool) -> int:
    """Permission an access needs: write -> W; instruction fetch -> X; otherwise R."""
    return PERM_W if write else (PERM_X if exec_ else PERM_R)
