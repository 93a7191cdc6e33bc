"""The SMMU IOTLB (and walk caches), tagged the way IHI 0070 3.17 ("TLB tagging") says hardware tags entries.

Structure. The TLB is partitioned into `Tag`s: one per (StreamWorld, VMID, ASID or None for global entries,
ASET, kind, key shift). `kind` says which stages an entry holds: "s1" (stage 1 only), "s2" (stage 2 only:
IPA -> PA, also used for the stage-2 translations of nested table walks and CD fetches), "nested" (combined
stage 1 + stage 2). Inside a tag, entries are found with one dict lookup of `input address >> shift`:
a block is cached as the granule-sized piece that was used (fracturing, allowed by DDI 0487 D8.16), but every
piece remembers the whole block (input range, level, granule of each stage), and invalidations match on that,
so invalidating any address of a block removes all of its pieces.

An `Entry` carries: output address of its piece, the combined permission for privileged / unprivileged
accesses and each stage's own permission (to report a permission fault at the right stage without walking),
the stage-1 VA range + level + granule, the stage-2 IPA range + level + granule.

Global entries (nG=0) live in the ASID-less tag of their (world, VMID, ASET, kind): they match lookups of any
ASID with the same ASET, as the spec asks. Walk caches hang off the ASID tag (walk-cache entries are always
ASID/VMID tagged).

Capacity is counted in pieces; replacement "fifo" (default), "lru" or "random" (seeded, deterministic).
Statistics: hits, misses, inserts, evictions, and per invalidation cause the number of operations and of
entries removed. Trace events: smmu_iotlb_insert, smmu_iotlb_evict, smmu_iotlb_inv.

On the TLBI path (see `dvm.py`) this is the last step: the entries a command or a broadcast removes are chosen
by `tag_matcher` (tags) and the predicates `translate.py` builds (ranges, hints), and `invalidate` removes and
counts them per cause ("TLBI_NH_VA", "dvm:VAE1IS", "dvm:malformed", ...).

Not modelled: TLB conflict aborts (F_TLB_CONFLICT: overlapping entries with different sizes are allowed to
coexist here and the first lookup wins), the Contiguous hint.
"""
from __future__ import annotations

import random
from typing import Callable, Iterable

from ..trace import NULL_TRACER, Tracer, define
from .config import StreamWorld

__all__ = ["IOTLB", "Tag", "Entry", "KIND_S1", "KIND_S2", "KIND_NESTED", "MASK56", "tag_matcher"]

KIND_S1, KIND_S2, KIND_NESTED = "s1", "s2", "nested"
MASK56 = (1 << 56) - 1

define("smmu_iotlb_insert", ("world", "vmid", "asid", "kind", "iova", "size", "level", "pa"),
       "IOTLB fill after a walk (iova/size: the stage-1 block, or the stage-2 block for s2 entries)")
define("smmu_iotlb_evict", ("world", "vmid", "asid", "kind", "iova", "size", "policy"),
       "an IOTLB piece evicted by the replacement policy")
define("smmu_iotlb_inv", ("cause", "removed", "walk_removed", "over", "kept_by_hint"),
       "one invalidation (command or broadcast) and what it removed")


class Tag:
    """One partition of the TLB: every entry in `d` has these tags. `wc` is the walk cache of the tag."""
    __slots__ = ("world", "vmid", "asid", "aset", "kind", "shift", "d", "wc")

    def __init__(self, world: StreamWorld, vmid: int, asid: int | None, aset: bool, kind: str, shift: int):
        self.world, self.vmid, self.asid, self.aset, self.kind, self.shift = world, vmid, asid, aset, kind, shift
        self.d: dict[int, Entry] = {}
        self.wc: dict = {}

    @property
    def global_(self) -> bool:
        return self.asid is None and self.kind != KIND_S2

    def __repr__(self) -> str:
        return (f"Tag({self.world.value}, vmid={self.vmid}, asid={self.asid}, aset={self.aset}, "
                f"{self.kind}, shift={self.shift}, {len(self.d)} entries)")


def tag_matcher(worlds: frozenset, vmid: int | None, asid_mode: str, asid: int | None, kinds: frozenset,
                aset_exempt: bool = False) -> Callable[[Tag], bool]:
    """The tags an invalidation selects: of one of `worlds` and `kinds`, of `vmid` (None: any), and by ASID:
    `asid_mode` "all" (any), "asid" (exactly `asid`: global entries are kept), "va" (`asid` or global);
    `aset_exempt` spares tags of CD.ASET=1 contexts (broadcasts that carry an ASID, IHI 0070 3.17.6)."""
    def tag_pred(t: Tag) -> bool:
        if t.world not in worlds or t.kind not in kinds:
            return False
        if vmid is not None and t.vmid != vmid:
            return False
        if asid_mode == "asid" and t.asid != asid:
            return False
        if asid_mode == "va" and t.asid is not None and t.asid != asid:
            return False
        return not (aset_exempt and t.aset)
    return tag_pred


class Entry:
    """One cached piece. `pa | (addr & mask)` is the output for `addr`; pp/pu are the combined permissions."""
    __slots__ = ("pa", "mask", "pp", "pu", "size", "p1p", "p1u", "p2p", "p2u",
                 "va_lo", "va_hi", "lvl1", "gran1", "ipa", "ipa_lo", "ipa_hi", "lvl2", "gran2", "tag", "key", "dbm")

    def __init__(self, pa: int, size: int, pp: int, pu: int, *, p1: tuple[int, int] = (7, 7),
                 p2: tuple[int, int] = (7, 7), va: tuple[int, int, int, int] | None = None,
                 ipa: int = 0, s2: tuple[int, int, int, int] | None = None, dbm: bool = False):
        self.pa, self.size, self.mask, self.pp, self.pu = pa, size, size - 1, pp, pu
        self.dbm = dbm                      # from a writable-clean descriptor (HTTU): a write walks again
        self.p1p, self.p1u = p1
        self.p2p, self.p2u = p2
        # stage-1 block: (va_lo, va_hi) in the 56-bit canonical VA space, level, granule
        self.va_lo, self.va_hi, self.lvl1, self.gran1 = va if va is not None else (0, 0, 0, 0)
        self.ipa = ipa                      # IPA of this piece's base (nested and s2 entries)
        self.ipa_lo, self.ipa_hi, self.lvl2, self.gran2 = s2 if s2 is not None else (0, 0, 0, 0)
        self.tag: Tag | None = None
        self.key = 0

    def __repr__(self) -> str:
        return (f"Entry(pa={self.pa:#x}, size={self.size:#x}, pp={self.pp}, pu={self.pu}, "
                f"va=[{self.va_lo:#x},{self.va_hi:#x}) l{self.lvl1}, ipa=[{self.ipa_lo:#x},{self.ipa_hi:#x}) "
                f"l{self.lvl2})")


class IOTLB:
    """Tag registry + bounded store of entries. `TranslationCore` does the hit-path lookups itself
    (`tag.d.get(key)`) and counts hits/misses here."""

    POLICIES = ("fifo", "lru", "random")

    def __init__(self, capacity: int = 4096, policy: str = "fifo", *, seed: int = 0,
                 tracer: Tracer = NULL_TRACER, walk_cache: bool = False):
        if policy not in self.POLICIES:
            raise ValueError(f"IOTLB policy {policy!r} not one of {self.POLICIES}")
        if capacity < 1:
            raise ValueError(f"IOTLB capacity {capacity} must be >= 1")
        self.capacity, self.policy, self.tracer = capacity, policy, tracer
        self.lru = policy == "lru"
        self.walk_cache = walk_cache
        self._rng = random.Random(seed)
        self.tags: dict[tuple, Tag] = {}
        self._order: dict[Entry, None] = {}          # insertion (or recency) order of every piece
        self.hits = self.misses = self.inserts = self.evictions = 0
        self.invalidations: dict[str, dict[str, int]] = {}

    # -- tags ------------------------------------------------------------------------------------------------
    def tag(self, world: StreamWorld, vmid: int, asid: int | None, aset: bool, kind: str, shift: int) -> Tag:
        k = (world, vmid, asid, aset, kind, shift)
        t = self.tags.get(k)
        if t is None:
            t = self.tags[k] = Tag(*k)
        return t

    def __len__(self) -> int:
        return len(self._order)

    def entries(self) -> Iterable[tuple[Tag, Entry]]:
        for e in self._order:
            yield e.tag, e

    # -- fill / replacement ----------------------------------------------------------------------------------
    def insert(self, tag: Tag, key: int, e: Entry) -> None:
        old = tag.d.get(key)
        if old is not None:
            self._order.pop(old, None)
        elif len(self._order) >= self.capacity:
            self._evict()
        e.tag, e.key = tag, key
        tag.d[key] = e
        self._order[e] = None
        self.inserts += 1
        tr = self.tracer
        if "smmu_iotlb_insert" in tr.enabled:
            tr.emit("smmu_iotlb_insert", world=tag.world.value, vmid=tag.vmid, asid=tag.asid, kind=tag.kind,
                    iova=e.va_lo if tag.kind != KIND_S2 else e.ipa_lo,
                    size=(e.va_hi - e.va_lo) if tag.kind != KIND_S2 else (e.ipa_hi - e.ipa_lo),
                    level=e.lvl1 if tag.kind != KIND_S2 else e.lvl2, pa=e.pa)

    def touch(self, e: Entry) -> None:
        """LRU bookkeeping on a hit."""
        order = self._order
        del order[e]
        order[e] = None

    def _evict(self) -> None:
        if self.policy == "random":
            victim = self._rng.choice(tuple(self._order))
        else:
            victim = next(iter(self._order))
        self._remove(victim)
        self.evictions += 1
        tr = self.tracer
        if "smmu_iotlb_evict" in tr.enabled:
            t = victim.tag
            tr.emit("smmu_iotlb_evict", world=t.world.value, vmid=t.vmid, asid=t.asid, kind=t.kind,
                    iova=victim.va_lo, size=victim.size, policy=self.policy)

    def _remove(self, e: Entry) -> None:
        self._order.pop(e, None)
        t = e.tag
        if t is not None and t.d.get(e.key) is e:
            del t.d[e.key]

    # -- invalidation ----------------------------------------------------------------------------------------
    def invalidate(self, cause: str, tag_pred: Callable[[Tag], bool],
                   entry_pred: Callable[[Entry], bool] | None = None,
                   wc_pred: Callable[[Tag, tuple], bool] | None = None, *, walk_all: bool = False,
                   hint_pred: Callable[[Entry], bool] | None = None, count_op: bool = True) -> dict[str, int]:
        """Remove entries of tags selected by `tag_pred` for which `entry_pred` holds (all when None).
        `hint_pred(e)` False means a TTL/TG hint says the entry need not go (it is kept and counted).
        Walk-cache entries go when `walk_all`, or when `wc_pred(tag, key)` holds. Returns the counts."""
        removed = kept = wremoved = 0
        for t in list(self.tags.values()):
            if not tag_pred(t):
                continue
            if t.d:
                victims = []
                for k, e in t.d.items():
                    if entry_pred is None or entry_pred(e):
                        if hint_pred is not None and not hint_pred(e):
                            kept += 1
                            continue
                        victims.append(e)
                for e in victims:
                    self._remove(e)
                removed += len(victims)
            if t.wc:
                if walk_all:
                    wremoved += len(t.wc)
                    t.wc.clear()
                elif wc_pred is not None:
                    gone = [k for k in t.wc if wc_pred(t, k)]
                    for k in gone:
                        del t.wc[k]
                    wremoved += len(gone)
        res = {"removed": removed, "walk_removed": wremoved, "kept_by_hint": kept}
        if count_op:
            self.count(cause, **res)
        return res

    def count(self, cause: str, *, removed: int = 0, walk_removed: int = 0, kept_by_hint: int = 0,
              over: int = 0, ops: int = 1) -> None:
        c = self.invalidations.get(cause)
        if c is None:
            c = self.invalidations[cause] = {"ops": 0, "removed": 0, "walk_removed": 0, "over": 0,
                                             "kept_by_hint": 0}
        c["ops"] += ops
        c["removed"] += removed
        c["walk_removed"] += walk_removed
        c["over"] += over
        c["kept_by_hint"] += kept_by_hint
        tr = self.tracer
        if "smmu_iotlb_inv" in tr.enabled:
            tr.emit("smmu_iotlb_inv", cause=cause, removed=removed, walk_removed=walk_removed, over=over,
                    kept_by_hint=kept_by_hint)

    def flush(self, cause: str = "flush") -> int:
        n = len(self._order)
        for t in self.tags.values():
            t.d.clear()
            t.wc.clear()
        self._order.clear()
        self.count(cause, removed=n)
        return n

    def stats(self) -> dict:
        return {"entries": len(self._order), "capacity": self.capacity, "policy": self.policy,
                "hits": self.hits, "misses": self.misses, "inserts": self.inserts, "evictions": self.evictions,
                "walk_cache_entries": sum(len(t.wc) for t in self.tags.values()),
                "invalidations": {k: dict(v) for k, v in self.invalidations.items()}}
