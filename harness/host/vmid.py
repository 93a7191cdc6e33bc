"""The KVM/arm64 VMID allocator, with pinned VMIDs.

A model of Linux `arch/arm64/kvm/vmid.c` (v5.18+, the ASID-allocator algorithm) checked against torvalds/linux
at commit 100b4f09 (`flush_context`, `check_update_reserved_vmid`, `new_vmid`, `kvm_arm_vmid_update`,
`kvm_arm_vmid_clear_active`, `VMID_ACTIVE_INVALID`), plus pinned VMIDs modelled on the pinned ASIDs of
`arch/arm64/mm/context.c` (checked: `arm64_mm_context_get/put`, `pinned_asid_map`, `nr_pinned_asids`,
`max_pinned_asids = available - ncpus - 2`, `set_reserved_asid_bits` copying the pinned map into the map at
rollover, and `new_context` keeping a pinned context's index after the reserved check). Upstream KVM has no
pinned VMIDs; the pinned code follows what the ASID allocator does and what the pinned-VMID RFC and its review
propose (`vmid_policy.py` names the threads).

Ids are 64-bit: `generation | index`; the hardware VMID is `id & (NUM - 1)`; index 0 is never allocated.
The rollover's `TLBI ALLE1IS` (`__kvm_flush_vm_context`) goes through an optional DVM `Interconnect` with
`source=None`, followed by a DVM Sync, so SMMUs with BTM see it.

Two variants for the SMMU VMID policies (`vmid_policy.py`):
* `split=True` (the pinned-VMID RFC as posted): the rolling allocator uses the lower half only; `pin` gives the
  VM a VMID from the upper half (an ida that never rolls over) and the VM's vCPUs then run with it; the VMID is
  freed when the context is destroyed (its patch 5/5, "pinned vmid is released on VM exit"), after a
  VMID-scoped invalidation that stands for the stage-2 teardown's TLBIs.
* `smmu_reserved=r`: KVM never hands out the top `r` indices (the set the `restricted` policy gives the SMMU).

Not modelled: concurrency (the model is sequential, so the cmpxchg on the fast path always succeeds), the
I-cache part of `__kvm_flush_vm_context`, pKVM, nested-virt stage-2 MMUs (one context per VM).
"""
from __future__ import annotations

from typing import Callable

from devmodel.dvm import Interconnect
from devmodel.tlbi_types import Regime, Scope, Security, Share, Stage, TlbiOp
from devmodel.trace import NULL_TRACER, Tracer, define

__all__ = ["VmidAllocator", "VmidContext", "ALLE1IS", "vmalls12e1is"]

define("kvm_vmid_alloc", ("ctx", "id", "vmid", "generation", "how"),
       "new_vmid gave a context an id: how = reserved | pinned | reuse | new | split-pin")
define("kvm_vmid_rollover", ("generation", "rollovers", "reserved", "pinned"),
       "VMID generation bumped; reserved = hardware VMIDs kept for CPUs, then TLBI ALLE1IS + DSB")
define("kvm_vmid_pin", ("ctx", "vmid", "refcount", "nr_pinned"),
       "pin (arm64_mm_context_get-like): vmid 0 means the pin limit was reached")
define("kvm_vmid_unpin", ("ctx", "vmid", "refcount", "nr_pinned"), "unpin; refcount 0 clears the pinned bit")
define("kvm_vcpu_load", ("ctx", "vcpu", "cpu", "vmid", "fast"),
       "kvm_arm_vmid_update on vcpu load: the VMID in force on that CPU, fast = lock-free path")

# The host's rollover maintenance (`__kvm_flush_vm_context`: TLBI ALLE1IS; DSB ISH), built directly from the
# contract types. ALLE1IS = SYS #4, C8, C3, #4 (Arm ARM C5.5, TLBI ALLE1IS); all VMIDs, stages 1+2, EL1&0, NS.
ALLE1IS = TlbiOp(name="ALLE1IS", op1=4, crn=8, crm=3, op2=4, xt=None, shareability=Share.ISH, broadcast=True,
                 regime=Regime.EL10, security=Security.NS, stage=Stage.S12, scope=Scope.ALL, vmid=None,
                 asid=None, addr=None, size=None, leaf=False, ttl=0)


def vmalls12e1is(vmid: int) -> TlbiOp:
    """TLBI VMALLS12E1IS issued by the host for `vmid` (SYS #4, C8, C3, #6): stage 1+2 of one VMID."""
    return TlbiOp(name="VMALLS12E1IS", op1=4, crn=8, crm=3, op2=6, xt=None, shareability=Share.ISH,
                  broadcast=True, regime=Regime.EL10, security=Security.NS, stage=Stage.S12, scope=Scope.VMALL,
                  vmid=vmid, asid=None, addr=None, size=None, leaf=False, ttl=0)


class VmidContext:
    """`struct kvm_vmid` plus the pin refcount (one per VM; `id` 0 = never allocated)."""

    __slots__ = ("name", "id", "pinned", "split_vmid", "dead")

    def __init__(self, name: str):
        self.name = name
        self.id = 0            # generation | index, 0 before the first vcpu_load
        self.pinned = 0        # refcount (mm->context.pinned)
        self.split_vmid = 0    # split mode: the upper-half VMID this context holds, 0 if none
        self.dead = False

    def __repr__(self) -> str:
        return f"VmidContext({self.name}, id={self.id:#x}, pinned={self.pinned})"


class VmidAllocator:
    """Linux's KVM VMID allocator for `bits` (8 or 16) VMID bits and `ncpus` physical CPUs."""

    def __init__(self, bits: int = 16, ncpus: int = 1, *, interconnect: Interconnect | None = None,
                 tracer: Tracer = NULL_TRACER, split: bool = False, smmu_reserved: int = 0):
        if bits not in (8, 16):
            raise ValueError(f"VMID bits must be 8 or 16 (ID_AA64MMFR1_EL1.VMIDBits), got {bits}")
        num = 1 << bits
        if ncpus < 1:
            raise ValueError(f"ncpus must be >= 1, got {ncpus}")
        if split and smmu_reserved:
            raise ValueError("split and smmu_reserved are two different policies; choose one")
        self.bits = bits
        self.num = num
        self.mask = num - 1
        self.ncpus = ncpus
        self.split = split
        self.smmu_reserved = smmu_reserved
        # Indices the rolling allocator may hand out: [1, limit).
        self.limit = num // 2 if split else num - smmu_reserved
        # kvm_arm_vmid_alloc_init: WARN_ON(NUM_USER_VMIDS - 1 <= num_possible_cpus())
        if self.limit - 1 <= ncpus:
            raise ValueError(f"{self.limit - 1} allocatable VMIDs for {ncpus} CPUs: need more VMIDs than CPUs")
        self.interconnect = interconnect
        self.tracer = tracer
        self._gen = num                          # vmid_generation starts at VMID_FIRST_VERSION
        self.active_invalid = num                # VMID_ACTIVE_INVALID: generation 1, index 0
        self._map = bytearray(num)
        self._pinned_map = bytearray(num)
        self.active = [0] * ncpus               # per-CPU active_vmids
        self.reserved = [0] * ncpus             # per-CPU reserved_vmids
        self.cur_idx = 1
        self.rollovers = 0
        self.nr_pinned = 0
        if split:
            self.max_pinned = num - num // 2     # the whole upper half
            self._split_free = bytearray(num)    # upper-half ida: 1 = in use
        else:
            # asids_update_limit: available - num_possible_cpus() - 2 (index 0 and one free slot)
            self.max_pinned = self.limit - ncpus - 2
        self._contexts = 0
        self.vmid_listeners: list[Callable[[VmidContext, int, int], None]] = []
        self.last_fast = False                  # whether the last vcpu_load took the fast path

    # ---- small helpers -------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """The raw `vmid_generation` (a multiple of NUM; generation number = generation >> bits)."""
        return self._gen

    def gen_match(self, vid: int) -> bool:
        return not ((vid ^ self._gen) >> self.bits)

    def hw_vmid(self, ctx: VmidContext) -> int:
        """The hardware VMID of the context's id (id & mask); 0 before it ever ran."""
        return ctx.id & self.mask

    def pinned_vmids(self) -> set[int]:
        """Hardware VMIDs held by pinned contexts (rolling pins and split upper-half VMIDs)."""
        if self.split:
            return {i for i in range(self.num // 2, self.num) if self._split_free[i]}
        return {i for i in range(self.num) if self._pinned_map[i]}

    def is_pinned_vmid(self, vmid: int) -> bool:
        if self.split:
            return bool(self._split_free[vmid & self.mask]) if vmid >= self.num // 2 else False
        return bool(self._pinned_map[vmid & self.mask])

    def new_context(self, name: str | None = None) -> VmidContext:
        """A fresh `struct kvm_vmid` (id 0): gets an id at its first vcpu_load or pin."""
        self._contexts += 1
        return VmidContext(name if name is not None else f"vm{self._contexts}")

    # ---- vmid.c ----------------------------------------------------------------------------------------
    def _flush_context(self) -> None:
        # set_reserved_asid_bits: the map restarts as a copy of the pinned map (context.c), then each CPU's
        # active id (or, when 0 after an earlier rollover, its reserved one) is kept.
        self._map[:] = self._pinned_map
        for cpu in range(self.ncpus):
            v = self.active[cpu]
            self.active[cpu] = 0
            if v == 0:
                v = self.reserved[cpu]
            self._map[v & self.mask] = 1
            self.reserved[cpu] = v
        self.rollovers += 1
        if "kvm_vmid_rollover" in self.tracer.enabled:
            self.tracer.emit("kvm_vmid_rollover", generation=self._gen, rollovers=self.rollovers,
                             reserved=[v & self.mask for v in self.reserved], pinned=self.nr_pinned)
        # __kvm_flush_vm_context: broadcast TLBI ALLE1IS, then DSB ISH (a DVM Sync).
        if self.interconnect is not None:
            self.interconnect.tlbi(ALLE1IS, None)
            self.interconnect.sync(None)

    def _check_update_reserved(self, vid: int, newvid: int) -> bool:
        hit = False
        for cpu in range(self.ncpus):          # no early exit: every copy must move to the new generation
            if self.reserved[cpu] == vid:
                hit = True
                self.reserved[cpu] = newvid
        return hit

    def _new_vmid(self, ctx: VmidContext) -> int:
        vid = ctx.id
        gen = self._gen
        how = "new"
        if vid != 0:
            newvid = gen | (vid & self.mask)
            if self._check_update_reserved(vid, newvid):
                how = "reserved"
            elif ctx.pinned:                   # context.c: pinned keeps its index, its bit is already set
                how = "pinned"
            elif not self._map[vid & self.mask]:
                self._map[vid & self.mask] = 1
                how = "reuse"
            if how != "new":
                ctx.id = newvid
                self._trace_alloc(ctx, how)
                return newvid
        i = self._map.find(0, self.cur_idx, self.limit)
        if i < 0:
            self._gen += self.num              # out of VMIDs: bump the generation
            self._flush_context()
            i = self._map.find(0, 1, self.limit)   # more VMIDs than CPUs: always succeeds
            assert i > 0, "VMID allocator: no free index after rollover"
        self._map[i] = 1
        self.cur_idx = i
        ctx.id = self._gen | i
        self._trace_alloc(ctx, how)
        return ctx.id

    def _trace_alloc(self, ctx: VmidContext, how: str) -> None:
        if "kvm_vmid_alloc" in self.tracer.enabled:
            self.tracer.emit("kvm_vmid_alloc", ctx=ctx.name, id=ctx.id, vmid=ctx.id & self.mask,
                             generation=self._gen >> self.bits, how=how)

    def vcpu_load(self, ctx: VmidContext, cpu: int, vcpu: object = None) -> int:
        """kvm_arm_vmid_update for a vCPU of `ctx` loaded on `cpu`; returns the hardware VMID now in force."""
        if ctx.dead:
            raise ValueError(f"vcpu_load of destroyed context {ctx.name}")
        if ctx.split_vmid and not self.gen_match(ctx.id):
            # split: the upper half never rolls over; only the generation tag follows.
            ctx.id = self._gen | ctx.split_vmid
        vid = ctx.id
        old_active = self.active[cpu]
        # Fast path: active != 0 (VMID_ACTIVE_INVALID counts as set) and the generation matches; the
        # cmpxchg cannot fail in a sequential model.
        fast = old_active != 0 and self.gen_match(vid)
        if not fast:
            if not self.gen_match(vid):
                vid = self._new_vmid(ctx)
        self.active[cpu] = vid
        self.last_fast = fast
        hw = vid & self.mask
        if "kvm_vcpu_load" in self.tracer.enabled:
            self.tracer.emit("kvm_vcpu_load", ctx=ctx.name, vcpu=vcpu, cpu=cpu, vmid=hw, fast=fast)
        return hw

    def vcpu_put(self, cpu: int) -> None:
        """kvm_arm_vmid_clear_active: the CPU no longer holds a VMID (VMID_ACTIVE_INVALID)."""
        self.active[cpu] = self.active_invalid

    # ---- pinning (arm64_mm_context_get/put) -----------------------------------------------------------
    def pin(self, ctx: VmidContext) -> int:
        """Pin the context's VMID: returns the hardware VMID, or 0 when the pin limit is reached."""
        if ctx.dead:
            raise ValueError(f"pin of destroyed context {ctx.name}")
        if ctx.pinned:
            ctx.pinned += 1
            hw = ctx.split_vmid if self.split else ctx.id & self.mask
        elif self.nr_pinned >= self.max_pinned:
            hw = 0
        elif self.split:
            hw = self._split_pin(ctx)
        else:
            if not self.gen_match(ctx.id):
                self._new_vmid(ctx)            # stale or never allocated: get a current id first
            self.nr_pinned += 1
            self._pinned_map[ctx.id & self.mask] = 1
            ctx.pinned = 1
            hw = ctx.id & self.mask
        if "kvm_vmid_pin" in self.tracer.enabled:
            self.tracer.emit("kvm_vmid_pin", ctx=ctx.name, vmid=hw, refcount=ctx.pinned, nr_pinned=self.nr_pinned)
        return hw

    def unpin(self, ctx: VmidContext) -> None:
        """Drop one pin; the last one clears the pinned bit (the id stays valid until the next rollover).

        A destroyed context's pins were already released by `destroy_context`: unpin is then a no-op.
        """
        if ctx.dead:
            return
        if ctx.pinned <= 0:
            raise ValueError(f"unpin of {ctx.name}, which is not pinned (refcount underflow)")
        ctx.pinned -= 1
        if ctx.pinned == 0 and not self.split:
            self._pinned_map[ctx.id & self.mask] = 0
            self.nr_pinned -= 1
        # split: the upper-half VMID stays with the VM until it is destroyed (pinned-VMID RFC patch 5/5).
        if "kvm_vmid_unpin" in self.tracer.enabled:
            self.tracer.emit("kvm_vmid_unpin", ctx=ctx.name, vmid=self.hw_vmid(ctx), refcount=ctx.pinned,
                             nr_pinned=self.nr_pinned)

    def destroy_context(self, ctx: VmidContext) -> None:
        """VM destroy: release every pin the VM still holds (pinned-VMID RFC patch 5/5). The caller has put its
        vCPUs."""
        if ctx.dead:
            return
        for cpu in range(self.ncpus):
            if self.active[cpu] == ctx.id and ctx.id:
                raise ValueError(f"destroying {ctx.name} while it is loaded on CPU {cpu}")
        while ctx.pinned:
            self.unpin(ctx)
        if self.split and ctx.split_vmid:
            # The freed upper-half VMID may go to another VM at once (it never rolls over): invalidate it
            # first, as the VM's stage-2 teardown does with VMID-scoped TLBIs.
            if self.interconnect is not None:
                self.interconnect.tlbi(vmalls12e1is(ctx.split_vmid), None)
                self.interconnect.sync(None)
            self._split_free[ctx.split_vmid] = 0
            self.nr_pinned -= 1
            ctx.split_vmid = 0
        ctx.dead = True

    def _split_pin(self, ctx: VmidContext) -> int:
        """The pinned-VMID RFC (as posted): the first pin moves the VM to a VMID of the upper half (lowest free)."""
        i = self._split_free.find(0, self.num // 2, self.num)
        if i < 0:
            return 0
        self._split_free[i] = 1
        self.nr_pinned += 1
        old = ctx.id
        old_hw = old & self.mask
        ctx.split_vmid = i
        ctx.pinned = 1
        ctx.id = self._gen | i
        self._trace_alloc(ctx, "split-pin")
        if old:
            # vCPUs running with the old VMID switch to the pinned one (a KVM request on their next entry).
            for cpu in range(self.ncpus):
                if self.active[cpu] == old:
                    self.active[cpu] = ctx.id
                if self.reserved[cpu] == old:
                    self.reserved[cpu] = ctx.id
            for cb in self.vmid_listeners:
                cb(ctx, old_hw, i)
        return i

    # ---- test knob ---------------------------------------------------------------------------------------
    def force_rollover(self, name: str = "throwaway") -> int:
        """Allocate ids for throwaway contexts (never loaded) until the generation bumps; returns how many.

        Goes through `new_vmid` like any VM creation, so the rollover is the real one (reserved CPUs, pinned
        map, broadcast TLBI ALLE1IS).
        """
        start = self.rollovers
        n = 0
        while self.rollovers == start:
            ctx = VmidContext(f"{name}{n}")
            self._new_vmid(ctx)
            n += 1
        return n

    # ---- introspection for tests -------------------------------------------------------------------------
    def map_bits(self) -> set[int]:
        return {i for i in range(self.num) if self._map[i]}
