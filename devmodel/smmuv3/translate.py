"""The SMMUv3 translation core: walks + IOTLB + invalidation, separate from the programming model.

Like QEMU's `hw/arm/smmu-common.c` against `hw/arm/smmuv3.c`: the device (`device.py`) decodes STE/CD into a
`TransCfg` and calls `TranslationCore.translate(cfg, addr, ...)`; this module never sees registers, queues or
STE/CD bits. Everything that goes wrong in a translation comes back as a `Fault` value; an argument that breaks
the contract (a TransCfg the device could not have built, an object that is not a command or a `TlbiOp`)
raises, as the bug it is.

* `translate(cfg, addr, write, exec_, priv) -> TransResult | Fault`: IOTLB lookup (one dict lookup on a hit),
  else a walk: stage 1 (`walk_s1`), stage 2 (`walk_s2`) or nested, where every stage-1 table access and the
  final IPA go through stage 2 (faults: S2=1, CLASS=TT for table accesses, CLASS=IN for the output, IPA set).
  Stage-1 permission faults take priority over the stage-2 translation of the output address (DDI 0487
  AArch64.FullTranslate order). Entries are cached even when the access then faults on permissions (the
  descriptor was valid), so a stale read-only entry really gives a permission fault.
* `translate_s2(cfg, ipa, cls)`: stage-2 translation of a read (nested CD fetches, CLASS=CD) through the
  same stage-2 entries.
* `invalidate(cmd)`: the TLBI_* commands of IHI 0070 4.4 (see `_COMMANDS` for what each one selects), with
  Leaf (walk caches survive leaf invalidations), TTL, and ranges: with TG != 0 the command covers
  (NUM+1) * 2^SCALE granules of size TG from Address aligned down to TG - not the CPU formula, and not
  aligned to the range size (misaligned starts are legal). TTL/TG hints: an entry of another level/granule
  "need not" be invalidated (DDI 0487 D8.14): with `strict_hints=True` (default) such entries stay (a wrong
  hint is visible), with False they are removed and counted as allowed over-invalidation.
  TLBI_S2_IPA removes stage-2 entries only: combined stage-1+2 entries are not required to go (software
  must follow with TLBI_NH_ALL/S12_VMALL, as Linux does for nest parents), so they stay.
* `dvm_tlbi(op)`: broadcast TLB maintenance (BTM, IHI 0070 3.17.6) in three steps: select (`btm.py`: a
  malformed message is counted and applies to nothing; else the worlds, VMID, ASID, kinds, range and hints
  the op names), apply (`_apply`, the same removal as the commands), account-and-trace (`_dvm_census` before,
  `_dvm_account` after). Every broadcast is counted per context (per tag: world, VMID, ASID, kind): `hits`
  when it architecturally targets the context, `over` when it is a stage-1 operation for the VMID of a
  stage-2-only context (not required to hit it, but implementations invalidate by VMID, as the review of
  Linux's "iommu/arm-smmu-v3: Enable broadcast TLB maintenance" pointed out in 2020). With
  `overinvalidate_s2=True` such entries are also removed (counted as `over_removed`).
* `dvm_sync()`: the model applies broadcasts synchronously, so a Sync has nothing left to wait for.

* HTTU (IHI 0070 3.13): with CD.HA/HD or STE.S2HA/S2HD (and `cas=`, the atomic update) walks set AF and make
  writable-clean leaves writable-dirty on writes (`vmsa.Httu`); for nested stage 1 the update is a stage-2 write
  of the table (a stage-2 fault then has CLASS=TT, TTRnW=0). An entry from a writable-clean leaf (`Entry.dbm`)
  never grants a write: a write through it walks again as a write, which updates the descriptor first, or
  faults as the descriptor now says. The hit path is unchanged (the check is on the permission-miss path).
* `ats_translate(cfg, addr, write, priv, split)`: what an ATS Translation Completion carries (`pcie.py`).

Not modelled yet: Secure/Realm command variants, TLB conflict faults, 52-bit addresses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..tlbi_types import TlbiOp
from ..trace import NULL_TRACER, Tracer, define
from . import btm
from .btm import ALL_KINDS, EL2_WORLDS, S1_KINDS, S2_KINDS, ttl_valid
from .config import PERM_R, PERM_W, CfgKind, StreamWorld, TransCfg, TransResult
from .fault import EventType, Fault, FaultClass
from .iotlb import IOTLB, KIND_NESTED, KIND_S1, KIND_S2, MASK56, Entry, Tag, tag_matcher
from .walk import Httu, WalkFault, walk_s1, walk_s2

__all__ = ["TranslationCore"]

define("smmu_iotlb_lookup_hit", ("sid", "ssid", "vmid", "asid", "addr", "pa", "perm"), "IOTLB hit")
define("smmu_iotlb_lookup_miss", ("sid", "ssid", "vmid", "asid", "addr"), "IOTLB miss: walk follows")
define("smmu_ptw_done", ("sid", "ssid", "stage", "addr", "out", "size", "level"), "a walk produced an entry")
define("smmu_translate_fault", ("sid", "ssid", "addr", "event", "stage2", "cls", "ipa", "reason"),
       "translation fault value returned to the device")
define("smmu_btm_tlbi", ("op", "world", "vmid", "asid", "contexts", "over", "removed", "over_removed",
                        "malformed"),
       "a broadcast TLBI applied by the translation core (malformed: why it applied to nothing, else empty)")
define("smmu_btm_ctx", ("op", "world", "vmid", "asid", "kind", "hit", "over", "removed"),
       "one context reached by a broadcast TLBI (hit: architecturally targeted; over: allowed extra)")
define("smmu_dvm_sync", ("syncs",), "DVM Sync: every preceding broadcast invalidation is complete")
define("smmu_httu_update", ("sid", "ssid", "addr", "old", "new", "ok"),
       "hardware update of a descriptor at PA addr (ok=0: another agent changed it first; the walk retries)")

_tnew = tuple.__new__
_MASK64 = (1 << 64) - 1
_TOP8 = 0xFF << 56
_GSHIFT = {4096: 12, 16384: 14, 65536: 16}
_TG_GRAN = {1: 4096, 2: 16384, 3: 65536}
_SINGLE_RANGE = (StreamWorld.EL2, StreamWorld.EL3)
_NS = frozenset((StreamWorld.NS_EL1,))

# name -> (worlds, asid mode, kinds, address kind); asid mode: "all" | "asid" | "va"; address: None|"va"|"ipa"
_COMMANDS: dict[str, tuple[frozenset, str, frozenset, str | None]] = {
    "TLBI_NH_ALL": (_NS, "all", S1_KINDS, None),
    "TLBI_NH_ASID": (_NS, "asid", S1_KINDS, None),
    "TLBI_NH_VA": (_NS, "va", S1_KINDS, "va"),
    "TLBI_NH_VAA": (_NS, "all", S1_KINDS, "va"),
    "TLBI_EL2_ALL": (EL2_WORLDS, "all", S1_KINDS, None),
    "TLBI_EL2_ASID": (frozenset((StreamWorld.EL2_E2H,)), "asid", S1_KINDS, None),
    "TLBI_EL2_VA": (EL2_WORLDS, "va", S1_KINDS, "va"),
    "TLBI_EL2_VAA": (EL2_WORLDS, "all", S1_KINDS, "va"),
    "TLBI_EL3_ALL": (frozenset((StreamWorld.EL3,)), "all", S1_KINDS, None),
    "TLBI_EL3_VA": (frozenset((StreamWorld.EL3,)), "all", S1_KINDS, "va"),
    "TLBI_S12_VMALL": (_NS, "all", ALL_KINDS, None),
    "TLBI_S2_IPA": (_NS, "all", S2_KINDS, "ipa"),
    "TLBI_NSNH_ALL": (_NS, "all", ALL_KINDS, None),
}
_NO_VMID = frozenset(("TLBI_NSNH_ALL", "TLBI_EL2_ALL", "TLBI_EL2_ASID", "TLBI_EL2_VA", "TLBI_EL2_VAA",
                      "TLBI_EL3_ALL", "TLBI_EL3_VA"))


class _Ctx:
    """Per-TransCfg lookup state (found by identity of the cfg object)."""
    __slots__ = ("cfg", "ng", "g", "ngget", "gget", "shift", "tbi", "kind", "s2tag", "h1", "h2")


@dataclass(slots=True)
class _Census:
    """A broadcast's contexts before removal: (world, VMID, ASID, kind) keys it targets / reaches as allowed
    extra, and each non-empty tag's size by id."""
    hit_keys: set[tuple]
    over_keys: set[tuple]
    sizes: dict[int, int]


def _nothing() -> dict[str, int]:
    return {"removed": 0, "walk_removed": 0, "kept_by_hint": 0}


def _over_matcher(vmid: int | None) -> Callable[[Tag], bool]:
    """Stage-2-only NS-EL1 entries of `vmid` (None: any): a stage-1 broadcast is not required to hit them,
    but implementations invalidate by VMID, as the review of Linux's "iommu/arm-smmu-v3: Enable broadcast TLB
    maintenance" (v7 13/24, 2020) points out: `overinvalidate_s2` models such an SMMU."""
    def over_pred(t: Tag) -> bool:
        return t.kind == KIND_S2 and t.world == StreamWorld.NS_EL1 and (vmid is None or t.vmid == vmid)
    return over_pred


def _none(_key: int) -> None:
    return None


def _canon(addr: int) -> int:
    """TBI: replace the top byte by the sign extension of bit 55 (the form entries are keyed with)."""
    a = addr & MASK56
    return a | _TOP8 if a >> 55 else a


class TranslationCore:
    """Walks + IOTLB for one SMMU. `read(addr) -> u64` reads table descriptors from host memory and raises
    `devmodel.bus.BusError` for unmapped addresses (-> F_WALK_EABT)."""

    def __init__(self, read: Callable[..., int], tracer: Tracer = NULL_TRACER, features: Any = None, *,
                 tlb_size: int = 4096, policy: str = "fifo", walk_cache: bool = False, seed: int = 0,
                 strict_hints: bool = True, overinvalidate_s2: bool = False,
                 cas: Callable[[int, int, int], int] | None = None):
        self._read = read
        self._cas = cas
        self.tracer = tracer
        self.features = features
        # features: an SmmuFeatures, or any object with some of its attributes (the others: supported), or
        # None (everything supported). SmmuFeatures has no XNX field: with one, XNX is off.
        self.ril = True if features is None else bool(getattr(features, "ril", True))
        self.xnx = True if features is None else bool(getattr(features, "xnx", False))
        self.vmid_bits = 16 if getattr(features, "vmid16", True) else 8
        self.asid_bits = 16 if getattr(features, "asid16", True) else 8
        self.strict_hints = strict_hints
        self.overinvalidate_s2 = overinvalidate_s2
        self.iotlb = IOTLB(tlb_size, policy, seed=seed, tracer=tracer, walk_cache=walk_cache)
        self.walk_cache = walk_cache
        self._empty = Tag(StreamWorld.NS_EL1, -1, None, False, "none", 12)
        self._ctxs: dict[int, _Ctx] = {}
        self._last_cfg: object = None
        self._last_ctx: _Ctx | None = None
        self._lru = self.iotlb.lru
        self.hits = self.walks = self.faults = self.s2_hits = self.dvm_syncs = self.broadcasts = 0
        self.dvm_malformed = 0
        self.httu_updates = self.httu_races = 0
        self.btm: dict[tuple, dict[str, int]] = {}

    # -- contexts ----------------------------------------------------------------------------------------------
    def _ctx_for(self, cfg: TransCfg) -> _Ctx:
        ctx = self._ctxs.get(id(cfg))
        if ctx is None or ctx.cfg is not cfg:
            ctx = self._build_ctx(cfg)
            if len(self._ctxs) >= 4096:
                self._ctxs.clear()
            self._ctxs[id(cfg)] = ctx
        self._last_cfg, self._last_ctx = cfg, ctx
        return ctx

    def _build_ctx(self, cfg: TransCfg) -> _Ctx:
        """Tags and key shift of a configuration. A kind without the stage records it needs (S1/nested without
        `s1`, nested/S2 without `s2`) leaves `ctx.kind` None: translations give the config fault."""
        ctx = _Ctx()
        ctx.cfg, ctx.ng, ctx.g, ctx.shift, ctx.tbi, ctx.kind, ctx.s2tag = cfg, self._empty, self._empty, 12, \
            False, None, None
        kind, world, s1, s2 = cfg.kind, cfg.world, cfg.s1, cfg.s2
        ctx.h1 = self._httu(cfg, s1, (lambda ipa: self._s2_table(ctx, ipa, True)) if kind == CfgKind.NESTED
                            else None)
        ctx.h2 = self._httu(cfg, s2, None)
        tlb = self.iotlb
        vmid = cfg.vmid if world not in _SINGLE_RANGE and world != StreamWorld.EL2_E2H else 0
        s2shift = _GSHIFT.get(s2.tg, 12) if s2 is not None else 12
        if kind in (CfgKind.S1, CfgKind.NESTED) and s1 is not None and (kind == CfgKind.S1 or s2 is not None):
            k = KIND_S1 if kind == CfgKind.S1 else KIND_NESTED
            shifts = [_GSHIFT[g] for g in (s1.tg0, s1.tg1) if g in _GSHIFT]
            if k == KIND_NESTED:
                shifts.append(s2shift)
            ctx.shift = min(shifts) if shifts else 12
            ctx.g = tlb.tag(world, vmid, None, bool(s1.aset), k, ctx.shift)
            ctx.ng = ctx.g if world in _SINGLE_RANGE else tlb.tag(world, vmid, s1.asid, bool(s1.aset), k,
                                                                  ctx.shift)
            ctx.tbi = bool(s1.tbi & 3)
            ctx.kind = k
            if k == KIND_NESTED:
                ctx.s2tag = tlb.tag(world, vmid, None, False, KIND_S2, s2shift)
        elif kind == CfgKind.S2 and s2 is not None:
            ctx.shift = s2shift
            ctx.ng = ctx.s2tag = tlb.tag(world, vmid, None, False, KIND_S2, s2shift)
            ctx.kind = KIND_S2
        elif kind in (CfgKind.S1, CfgKind.NESTED) and s2 is not None:
            ctx.s2tag = tlb.tag(world, vmid, None, False, KIND_S2, s2shift)   # translate_s2 still works
        if ctx.tbi:          # tagged addresses: looked up in _miss after canonicalisation (keeps the hit path lean)
            ctx.ngget = ctx.gget = _none
        else:                # tags clear their dicts in place, so the bound methods stay valid
            ctx.ngget, ctx.gget = ctx.ng.d.get, ctx.g.d.get
        return ctx

    def _httu(self, cfg: TransCfg, stage: Any, write_xlate: Callable[[int], Any] | None) -> Httu | None:
        """The hardware-update parameters of one stage (CD.HA/HD or STE.S2HA/S2HD, already limited by IDR0.HTTU
        when decoded); None without HA (HD alone updates nothing, DDI 0487 D8.5)."""
        if stage is None or not stage.ha:
            return None
        if self._cas is None:
            raise ValueError("a configuration with HA/HD needs a backend built with cas= (the descriptor updates)")
        sid, ssid, cas, tr = cfg.sid, cfg.ssid, self._cas, self.tracer

        def counted_cas(pa: int, old: int, new: int) -> int:
            found = cas(pa, old, new)
            ok = found == old
            if ok:
                self.httu_updates += 1
            else:
                self.httu_races += 1
            if tr.enabled and "smmu_httu_update" in tr.enabled:
                tr.emit("smmu_httu_update", sid=sid, ssid=ssid, addr=pa, old=old, new=new, ok=int(ok))
            return found
        return Httu(True, bool(stage.hd), counted_cas, write_xlate)

    # -- translation -------------------------------------------------------------------------------------------
    def translate(self, cfg: TransCfg, addr: int, write: bool = False, exec_: bool = False,
                  priv: bool = False) -> TransResult | Fault:
        # the hit path: keep it lean (tools/benches/smmu.py measures it)
        ctx = self._last_ctx if cfg is self._last_cfg else self._ctx_for(cfg)
        k = addr >> ctx.shift
        e = ctx.ngget(k)
        if e is None:
            e = ctx.gget(k)
            if e is None:
                return self._miss(ctx, addr, write, exec_, priv)
        self.hits += 1
        p = e.pp if priv else e.pu
        if p & (2 if write else (4 if exec_ else 1)):
            if self._lru or self.tracer.enabled:
                self._hit_extra(cfg, e, addr, p)
            return _tnew(TransResult, (e.pa | (addr & e.mask), p, e.size, True))
        return self._perm_fault(ctx, e, addr, write, exec_, priv)

    def _hit_extra(self, cfg: TransCfg, e: Entry, addr: int, p: int) -> None:
        if self._lru:
            self.iotlb.touch(e)
        tr = self.tracer
        if "smmu_iotlb_lookup_hit" in tr.enabled:
            tr.emit("smmu_iotlb_lookup_hit", sid=cfg.sid, ssid=cfg.ssid, vmid=cfg.vmid, asid=cfg.asid, addr=addr,
                    pa=e.pa | (addr & e.mask), perm=p)

    def _miss(self, ctx: _Ctx, addr: int, write: bool, exec_: bool, priv: bool) -> TransResult | Fault:
        cfg = ctx.cfg
        tlb = self.iotlb
        if ctx.tbi:                                # TBI contexts: the lookup with the top byte canonicalised
            k = _canon(addr) >> ctx.shift
            e = ctx.ng.d.get(k) or ctx.g.d.get(k)
            if e is not None:
                self.hits += 1
                return self._serve(ctx, e, addr, write, exec_, priv, True)
        tlb.misses += 1
        tr = self.tracer
        if tr.enabled and "smmu_iotlb_lookup_miss" in tr.enabled:
            tr.emit("smmu_iotlb_lookup_miss", sid=cfg.sid, ssid=cfg.ssid, vmid=cfg.vmid, asid=cfg.asid, addr=addr)
        if not 0 <= addr <= _MASK64:
            return self._fault(cfg, addr, WalkFault(EventType.F_TRANSLATION, reason=f"address {addr:#x} is not "
                                                    "a 64-bit value"), write, exec_, priv)
        kind = ctx.kind
        if kind is None:
            return self._config_fault(cfg, addr, write, exec_, priv)
        self.walks += 1
        if kind == KIND_S2:
            e = self._s2_entry(ctx, addr, FaultClass.IN)
            if type(e) is WalkFault:
                return self._fault(cfg, addr, e, write, exec_, priv)
            return self._serve(ctx, e, addr, write, exec_, priv, False)
        e = self._walk_s1(ctx, addr, write, exec_, priv)
        if type(e) is Fault:
            return e
        return self._serve(ctx, e, addr, write, exec_, priv, False)

    def _walk_s1(self, ctx: _Ctx, addr: int, write: bool, exec_: bool, priv: bool) -> Entry | Fault:
        """Stage-1 (or nested: stage 1 then stage 2) walk of `addr`; the entry is inserted in the IOTLB."""
        cfg = ctx.cfg
        wc = ctx.ng.wc if self.walk_cache else None
        if ctx.kind == KIND_NESTED:
            oas = min(cfg.oas, 64 - cfg.s2.t0sz) if 16 <= cfg.s2.t0sz <= 48 else cfg.oas
            l1 = walk_s1(cfg.s1, addr, self._read, world=cfg.world, oas=oas,
                         table_xlate=lambda ipa: self._s2_table(ctx, ipa), wc=wc, httu=ctx.h1, write=write,
                         priv=priv)
        else:
            l1 = walk_s1(cfg.s1, addr, self._read, world=cfg.world, oas=cfg.oas, wc=wc, httu=ctx.h1, write=write,
                         priv=priv)
        if type(l1) is WalkFault:
            return self._fault(cfg, addr, l1, write, exec_, priv)
        tr = self.tracer
        if tr.enabled and "smmu_ptw_done" in tr.enabled:
            tr.emit("smmu_ptw_done", sid=cfg.sid, ssid=cfg.ssid, stage=1, addr=addr, out=l1.oa, size=l1.size,
                    level=l1.level)
        va_lo = l1.in_base & MASK56
        va = (va_lo, va_lo + l1.size, l1.level, l1.granule)
        p1 = (l1.perm_priv, l1.perm_user)
        if ctx.kind == KIND_S1:
            e = Entry(l1.out_base, l1.size, l1.perm_priv, l1.perm_user, p1=p1, va=va, dbm=l1.dbm)
        else:
            need = 2 if write else (4 if exec_ else 1)
            if not (l1.perm_priv if priv else l1.perm_user) & need:
                return self._fault(cfg, addr, WalkFault(EventType.F_PERMISSION, level=l1.level,
                                                        reason="stage-1 permission"), write, exec_, priv)
            e2 = self._s2_entry(ctx, l1.oa, FaultClass.IN, write)
            if type(e2) is WalkFault:
                return self._fault(cfg, addr, e2, write, exec_, priv)
            size = min(l1.size, e2.size)
            ipa = l1.oa & ~(size - 1)
            e = Entry(e2.pa | (ipa & e2.mask), size, l1.perm_priv & e2.p2p, l1.perm_user & e2.p2u, p1=p1,
                      p2=(e2.p2p, e2.p2u), va=va, ipa=ipa, s2=(e2.ipa_lo, e2.ipa_hi, e2.lvl2, e2.gran2),
                      dbm=l1.dbm or e2.dbm)
        key = (_canon(addr) if ctx.tbi else addr) >> ctx.shift
        self.iotlb.insert(ctx.g if l1.global_ else ctx.ng, key, e)
        return e

    def _serve(self, ctx: _Ctx, e: Entry, addr: int, write: bool, exec_: bool, priv: bool,
               cached: bool) -> TransResult | Fault:
        """The result of `addr` through entry `e` (permission-checked). `translate()` inlines the same steps
        for the IOTLB hit path; this serves the cold paths (TBI lookups, fresh walks)."""
        p = e.pp if priv else e.pu
        if p & (2 if write else (4 if exec_ else 1)):
            if cached and (self._lru or self.tracer.enabled):
                self._hit_extra(ctx.cfg, e, addr, p)
            return _tnew(TransResult, (e.pa | (addr & e.mask), p, e.size, cached))
        return self._perm_fault(ctx, e, addr, write, exec_, priv, cached)   # a fresh write walk did update

    def _s2_entry(self, ctx: _Ctx, ipa: int, cls: FaultClass, write: bool = False) -> Entry | WalkFault:
        """The stage-2 entry for `ipa` in the context's stage-2 tag (cached, or walked and inserted). For a
        `write`, a cached writable-clean entry is walked again so that the dirty update happens (HTTU)."""
        t = ctx.s2tag
        key = ipa >> t.shift
        e = t.d.get(key)
        if e is not None and not (write and e.dbm and not e.p2p & PERM_W):
            self.s2_hits += 1
            return e
        cfg = ctx.cfg
        l2 = walk_s2(cfg.s2, ipa, self._read, cls=cls, oas=cfg.oas, wc=t.wc if self.walk_cache else None,
                     xnx=self.xnx, httu=ctx.h2, write=write)
        if type(l2) is WalkFault:
            return l2
        tr = self.tracer
        if tr.enabled and "smmu_ptw_done" in tr.enabled:
            tr.emit("smmu_ptw_done", sid=cfg.sid, ssid=cfg.ssid, stage=2, addr=ipa, out=l2.oa, size=l2.size,
                    level=l2.level)
        e = Entry(l2.out_base, l2.size, l2.perm_priv, l2.perm_user, p2=(l2.perm_priv, l2.perm_user),
                  ipa=l2.in_base, s2=(l2.in_base, l2.in_base + l2.size, l2.level, l2.granule), dbm=l2.dbm)
        self.iotlb.insert(t, key, e)
        return e

    def _s2_table(self, ctx: _Ctx, ipa: int, write: bool = False) -> int | WalkFault:
        """Nested: the PA of a stage-1 table access at `ipa`, a read or (`write`) the hardware update of a
        stage-1 descriptor, which is a stage-2 write (IHI 0070 3.13; S2 faults have CLASS=TT, TTRnW=0)."""
        e = self._s2_entry(ctx, ipa, FaultClass.TT, write)
        if type(e) is WalkFault:
            return e if not write else WalkFault(e.type, e.stage2, e.cls, e.level, e.ipa, e.reason, True)
        if not e.p2p & (PERM_W if write else PERM_R):
            return WalkFault(EventType.F_PERMISSION, True, FaultClass.TT, e.lvl2, ipa,
                             "stage-2 permission: stage-1 table " + ("update" if write else "read"), write)
        return e.pa | (ipa & e.mask)

    def translate_s2(self, cfg: TransCfg, ipa: int, cls: FaultClass = FaultClass.CD) -> int | Fault:
        """Stage-2 translation of a read at `ipa` (nested CD fetch: CLASS=CD). Without stage 2: ipa."""
        if cfg.s2 is None:
            return ipa
        if not 0 <= ipa <= _MASK64:
            return self._fault(cfg, 0, WalkFault(EventType.F_TRANSLATION, True, cls, reason="bad IPA"),
                               False, False, False)
        ctx = self._last_ctx if cfg is self._last_cfg else self._ctx_for(cfg)
        if ctx.s2tag is None:
            return self._config_fault(cfg, ipa, False, False, False)
        e = self._s2_entry(ctx, ipa, cls)
        if type(e) is WalkFault:
            return self._fault(cfg, ipa, e, False, False, False)
        if not e.p2p & PERM_R:
            return self._fault(cfg, ipa, WalkFault(EventType.F_PERMISSION, True, cls, e.lvl2, ipa,
                                                   "stage-2 permission: read"), False, False, False)
        return e.pa | (ipa & e.mask)

    # -- ATS -----------------------------------------------------------------------------------------------------
    def ats_translate(self, cfg: TransCfg, addr: int, write: bool, priv: bool,
                      split: bool = False) -> tuple[int, int, int, bool] | Fault:
        """What an ATS Translation Completion returns for `addr` (IHI 0070 3.9.1): (output base, size,
        permissions at privilege `priv`, global), the whole translation, or with `split` stage 1 only (its
        output is an IPA; stage-1 table accesses still go through stage 2). `write`: the function asked for write
        permission, so the translation is tried as a write first (HTTU dirty update), then as a read."""
        if split:
            return self._ats_stage1(cfg, addr, write, priv)
        res = self.translate(cfg, addr, True, False, priv) if write else None
        if res is None or type(res) is Fault:
            res = self.translate(cfg, addr, False, False, priv)
            if type(res) is Fault:
                return res
        ctx = self._last_ctx if cfg is self._last_cfg else self._ctx_for(cfg)
        k = (_canon(addr) if ctx.tbi else addr) >> ctx.shift
        global_ = ctx.kind != KIND_S2 and ctx.ng is not ctx.g and ctx.ng.d.get(k) is None \
            and ctx.g.d.get(k) is not None
        return res.pa & ~(res.size - 1), res.size, res.perm, global_

    def _ats_stage1(self, cfg: TransCfg, addr: int, write: bool, priv: bool) -> tuple[int, int, int, bool] | Fault:
        ctx = self._last_ctx if cfg is self._last_cfg else self._ctx_for(cfg)
        if ctx.kind != KIND_NESTED:
            return self._config_fault(cfg, addr, write, False, priv)
        l1: Any = None
        oas = min(cfg.oas, 64 - cfg.s2.t0sz) if 16 <= cfg.s2.t0sz <= 48 else cfg.oas
        for w in ((True, False) if write else (False,)):
            l1 = walk_s1(cfg.s1, addr, self._read, world=cfg.world, oas=oas,
                         table_xlate=lambda ipa: self._s2_table(ctx, ipa), httu=ctx.h1, write=w, priv=priv)
            if type(l1) is WalkFault:
                return self._fault(cfg, addr, l1, w, False, priv)
            if (l1.perm_priv if priv else l1.perm_user) & (PERM_W if w else PERM_R):
                break
        else:
            return self._fault(cfg, addr, WalkFault(EventType.F_PERMISSION, level=l1.level,
                                                    reason="stage-1 permission"), False, False, priv)
        return l1.out_base, l1.size, l1.perm_priv if priv else l1.perm_user, l1.global_

    # -- faults ------------------------------------------------------------------------------------------------
    def _perm_fault(self, ctx: _Ctx, e: Entry, addr: int, write: bool, exec_: bool, priv: bool,
                    again: bool = True) -> TransResult | Fault:
        """A cached or fresh entry does not permit the access. A write through a writable-clean entry (HTTU
        dirty management) is not refused from the entry: the translation is walked again as a write, which
        makes the descriptor writable-dirty in memory first, or faults as the descriptor now says."""
        if write and e.dbm and again:
            return self._rewalk_write(ctx, addr, exec_, priv)
        need = 2 if write else (4 if exec_ else 1)
        p1 = e.p1p if priv else e.p1u
        if not p1 & need:
            wf = WalkFault(EventType.F_PERMISSION, level=e.lvl1, reason="stage-1 permission")
        else:
            ipa = (e.ipa | (addr & e.mask)) if ctx.kind != KIND_S2 else addr
            wf = WalkFault(EventType.F_PERMISSION, True, FaultClass.IN, e.lvl2, ipa, "stage-2 permission")
        return self._fault(ctx.cfg, addr, wf, write, exec_, priv)

    def _rewalk_write(self, ctx: _Ctx, addr: int, exec_: bool, priv: bool) -> TransResult | Fault:
        self.walks += 1
        if ctx.kind == KIND_S2:
            e = self._s2_entry(ctx, addr, FaultClass.IN, True)
            if type(e) is WalkFault:
                return self._fault(ctx.cfg, addr, e, True, exec_, priv)
        else:
            e = self._walk_s1(ctx, addr, True, exec_, priv)
            if type(e) is Fault:
                return e
        p = e.pp if priv else e.pu
        if p & PERM_W:
            return _tnew(TransResult, (e.pa | (addr & e.mask), p, e.size, False))
        return self._perm_fault(ctx, e, addr, True, exec_, priv, False)

    def _config_fault(self, cfg: TransCfg, addr: int, write: bool, exec_: bool, priv: bool) -> Fault:
        kind = cfg.kind
        if kind == CfgKind.BYPASS:
            return Fault(EventType.F_TRANS_FORBIDDEN, sid=cfg.sid, ssid=cfg.ssid, addr=addr, rnw=not write,
                         ind=exec_, pnu=priv, record=False,
                         reason="bypass configurations are handled by the device, not the translation core")
        return Fault(EventType.F_TRANS_FORBIDDEN if kind == CfgKind.ABORT else EventType.C_BAD_STE,
                     sid=cfg.sid, ssid=cfg.ssid, addr=addr, rnw=not write, ind=exec_, pnu=priv,
                     record=kind != CfgKind.ABORT,
                     reason=f"configuration {kind!r} has no usable stage-1/stage-2 description")

    def _fault(self, cfg: TransCfg, addr: int, wf: WalkFault, write: bool, exec_: bool, priv: bool) -> Fault:
        self.faults += 1
        stage = cfg.s2 if wf.stage2 else cfg.s1
        f = Fault(wf.type, sid=cfg.sid, ssid=cfg.ssid, addr=addr, ipa=wf.ipa, stage2=wf.stage2, cls=wf.cls,
                  rnw=not write, ind=bool(exec_), pnu=bool(priv), record=stage is None or stage.record,
                  reason=wf.reason, tt_write=wf.tt_write)
        tr = self.tracer
        if tr.enabled and "smmu_translate_fault" in tr.enabled:
            tr.emit("smmu_translate_fault", sid=f.sid, ssid=f.ssid, addr=f.addr, event=f.type.name,
                    stage2=f.stage2, cls=f.cls.name, ipa=f.ipa, reason=f.reason)
        return f

    # -- invalidation: applying a selection to the IOTLB ---------------------------------------------------------
    def _apply(self, cause: str, tag_pred: Callable[[Tag], bool], rng: tuple[int, int] | None, by_ipa: bool,
               leaf: bool, level: int, granule: int | None) -> dict[str, int]:
        tlb = self.iotlb
        if rng is None:
            return tlb.invalidate(cause, tag_pred, walk_all=True)
        lo, hi = rng
        if by_ipa:
            def entry_pred(e: Entry) -> bool:
                return e.ipa_lo < hi and lo < e.ipa_hi
        else:
            def entry_pred(e: Entry) -> bool:
                return e.va_lo < hi and lo < e.va_hi

        hint_pred = None
        if level or granule:
            def hint_pred(e: Entry) -> bool:
                lv, gr = (e.lvl2, e.gran2) if by_ipa else (e.lvl1, e.gran1)
                return (not level or lv == level) and (not granule or gr == granule)

        def wc_pred(t: Tag, key: tuple) -> bool:
            sh, pfx = key
            wlo = pfx << sh
            return wlo < hi and lo < wlo + (1 << sh)

        if hint_pred is not None and not self.strict_hints:
            # hints ignored: everything in range goes; what the hint would have kept is allowed extra
            r1 = tlb.invalidate(cause, tag_pred, entry_pred, hint_pred=hint_pred, count_op=False)
            res = tlb.invalidate(cause, tag_pred, entry_pred, None if leaf else wc_pred, count_op=False)
            kept = r1["kept_by_hint"]
            res["removed"] += r1["removed"]
            tlb.count(cause, removed=res["removed"], walk_removed=res["walk_removed"], over=kept)
            res["over"] = kept
            return res
        return tlb.invalidate(cause, tag_pred, entry_pred, None if leaf else wc_pred, hint_pred=hint_pred)

    # -- invalidation commands ---------------------------------------------------------------------------------
    def invalidate(self, cmd: Any) -> dict[str, int]:
        """Apply one decoded TLBI_* / ATC_INV command (a `commands.Command`: name, vmid, asid, addr, leaf, num,
        scale, tg, ttl; values wider than their command fields are cut to the field). Other commands are
        ignored. Returns what was removed."""
        name = cmd.name
        if name == "ATC_INV":
            self.iotlb.count("ATC_INV")          # no ATS/ATC modelled: nothing cached in devices
            return _nothing()
        spec = _COMMANDS.get(name)
        if spec is None:
            return _nothing()
        worlds, asid_mode, kinds, akind = spec
        vmid = None if name in _NO_VMID else cmd.vmid & 0xFFFF
        tag_pred = tag_matcher(worlds, vmid, asid_mode, cmd.asid & 0xFFFF, kinds)
        if akind is None:
            return self._apply(name, tag_pred, None, False, False, 0, None)
        addr = cmd.addr & _MASK64
        tg = cmd.tg & 3 if self.ril else 0
        level, granule = 0, None
        if tg:                                   # range: (NUM+1) * 2^SCALE granules of TG (IHI 0070 4.4.1)
            granule = _TG_GRAN[tg]
            lo = addr & ~(granule - 1)
            hi = lo + (((cmd.num & 0x1F) + 1) << (cmd.scale & 0x1F)) * granule
            ttl = cmd.ttl & 3
            level = ttl if ttl_valid(ttl, granule) else 0
        else:
            lo, hi = addr, addr + 1
        if akind == "va":
            lo56 = lo & MASK56
            rng = (lo56, lo56 + (hi - lo))
        else:
            rng = (lo, hi)
        return self._apply(name, tag_pred, rng, akind == "ipa", bool(cmd.leaf), level, granule)

    def flush(self) -> int:
        return self.iotlb.flush()

    # -- BTM: select (btm.py) / apply / account-and-trace ---------------------------------------------------------
    def dvm_tlbi(self, op: TlbiOp) -> dict[str, Any]:
        """Apply a broadcast TLBI (DVM TLB Invalidate) as an SMMU with BTM must (IHI 0070 3.17.6). A malformed
        message (`btm.malformed`: e.g. a VMID wider than this SMMU's) applies to nothing and is counted
        (`dvm_malformed`; the `malformed` field of `smmu_btm_tlbi` and of the result says why); an object that
        is not a `TlbiOp` is a bug and raises."""
        self.broadcasts += 1
        cause = "dvm:" + op.name
        why = btm.malformed(op, self.vmid_bits, self.asid_bits)
        if why is not None:
            return self._dvm_reject(op, why)
        sel = btm.select(op)
        if sel is None:
            self.iotlb.count(cause)
            return {**_nothing(), "malformed": ""}
        tag_pred = tag_matcher(sel.worlds, sel.vmid, sel.asid_mode, sel.asid, sel.kinds, sel.aset_exempt)
        over_pred = _over_matcher(sel.vmid) if sel.over_s2 else None
        census = self._dvm_census(tag_pred, over_pred)
        res = self._apply(cause, tag_pred, sel.rng, sel.by_ipa, sel.leaf, sel.level, sel.granule)
        over_removed = 0
        if census.over_keys and self.overinvalidate_s2 and over_pred is not None:
            over_removed = self.iotlb.invalidate(cause + ":over", over_pred, walk_all=True)["removed"]
        return self._dvm_account(op, sel, census, res, over_removed)

    def _dvm_reject(self, op: TlbiOp, why: str) -> dict[str, Any]:
        self.dvm_malformed += 1
        self.iotlb.count("dvm:malformed")
        tr = self.tracer
        if tr.enabled and "smmu_btm_tlbi" in tr.enabled:
            tr.emit("smmu_btm_tlbi", op=op.name, world="", vmid=op.vmid, asid=op.asid, contexts=0, over=0,
                    removed=0, over_removed=0, malformed=why)
        return {**_nothing(), "malformed": why}

    def _dvm_census(self, tag_pred: Callable[[Tag], bool], over_pred: Callable[[Tag], bool] | None) -> _Census:
        """Before removal: the contexts the broadcast targets / reaches as allowed extra, and tag sizes (so
        contexts are counted even when they hold no entry)."""
        c = _Census(set(), set(), {})
        for t in self.iotlb.tags.values():
            k = (t.world.value, t.vmid, t.asid, t.kind)
            if tag_pred(t):
                c.hit_keys.add(k)
            elif over_pred is not None and over_pred(t):
                c.over_keys.add(k)
            if t.d:
                c.sizes[id(t)] = len(t.d)
        return c

    def _dvm_account(self, op: TlbiOp, sel: btm.DvmSelection, census: _Census, res: dict[str, int],
                     over_removed: int) -> dict[str, Any]:
        """Per-context counters (`btm`, `btm_context`) and the smmu_btm_ctx / smmu_btm_tlbi events."""
        removed_per_key: dict[tuple, int] = {}
        for t in self.iotlb.tags.values():
            n = census.sizes.get(id(t), 0) - len(t.d)
            if n:
                k = (t.world.value, t.vmid, t.asid, t.kind)
                removed_per_key[k] = removed_per_key.get(k, 0) + n
        tr = self.tracer
        ctx_on = tr.enabled and "smmu_btm_ctx" in tr.enabled
        for k in census.hit_keys | census.over_keys:
            s = self.btm.get(k)
            if s is None:
                s = self.btm[k] = {"hits": 0, "over": 0, "removed": 0}
            hit = k in census.hit_keys
            s["hits" if hit else "over"] += 1
            s["removed"] += removed_per_key.get(k, 0)
            if ctx_on:
                tr.emit("smmu_btm_ctx", op=op.name, world=k[0], vmid=k[1], asid=k[2], kind=k[3], hit=hit,
                        over=not hit, removed=removed_per_key.get(k, 0))
        if tr.enabled and "smmu_btm_tlbi" in tr.enabled:
            tr.emit("smmu_btm_tlbi", op=op.name, world=",".join(sorted(w.value for w in sel.worlds)), vmid=sel.vmid,
                    asid=sel.asid, contexts=len(census.hit_keys), over=len(census.over_keys),
                    removed=res["removed"], over_removed=over_removed, malformed="")
        return {**res, "contexts": len(census.hit_keys), "over_contexts": len(census.over_keys),
                "over_removed": over_removed, "malformed": ""}

    def dvm_sync(self, sync: Any = None) -> None:
        """DVM Sync: broadcasts are applied synchronously in `dvm_tlbi`, so all are complete here."""
        self.dvm_syncs += 1
        tr = self.tracer
        if tr.enabled and "smmu_dvm_sync" in tr.enabled:
            tr.emit("smmu_dvm_sync", syncs=self.dvm_syncs)

    # -- statistics -------------------------------------------------------------------------------------------
    def btm_context(self, world: StreamWorld | str, vmid: int, asid: int | None, kind: str) -> dict[str, int]:
        """Broadcast counters of one context: hits (targeted), over (allowed extra), removed (entries)."""
        w = world.value if isinstance(world, StreamWorld) else world
        return dict(self.btm.get((w, vmid, asid, kind), {"hits": 0, "over": 0, "removed": 0}))

    @property
    def stats(self) -> dict:
        s = self.iotlb.stats()
        s["hits"] += self.hits
        s.update(walks=self.walks, faults=self.faults, s2_hits=self.s2_hits, broadcasts=self.broadcasts,
                 dvm_syncs=self.dvm_syncs, dvm_malformed=self.dvm_malformed, httu_updates=self.httu_updates,
                 httu_races=self.httu_races,
                 btm={f"{k[0]}/vmid={k[1]}/asid={k[2]}/{k[3]}": dict(v) for k, v in self.btm.items()})
        return s

