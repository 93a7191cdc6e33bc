"""SMMU VMID policies: where the VMID of a nested (guest-SVA) domain and of a stage-2-only domain comes from.

| policy       | nested domain (BTM: guest TLBIs must hit it)  | stage-2-only domain                          |
|--------------|------------------------------------------------|----------------------------------------------|
| `private`    | SMMU ida 1..NUM-1 (upstream today)             | SMMU ida 1..NUM-1                            |
| `unpinned`   | the VM's current KVM VMID, copied, not pinned  | SMMU ida 1..NUM-1                            |
| `split`      | KVM pin from the upper half (pinned-VMID RFC)  | SMMU ida 1..NUM-1                            |
| `restricted` | KVM pin (pinned-VMID review)                   | ida over a set KVM never hands out           |
|              |                                                | (`reserve`), or ida avoiding pins + a live   |
|              |                                                | STE move on collision (`move`)               |
| `shared`     | KVM pin                                        | KVM pin of a context of its own (review)     |

Known holes, shown by tests: `private` - a guest's broadcasts carry its KVM VMID, which matches the SMMU context
only by accident, and any private VMID equal to a running VM's KVM VMID takes that VM's broadcasts (BTM
review); `unpinned` - the KVM VMID changes at rollover and the SMMU keeps the old one (why the pinned-VMID RFC
exists), and it can equal a live private VMID; `split` - the upper half of the SMMU ida overlaps the pinned half,
so a pin can equal a live private VMID (the alias the pinned-VMID review describes); `restricted` in `move` mode
- a private VMID may still equal an unpinned KVM VMID, so with BTM it is over-invalidated (no alias: only pinned
VMIDs enter the SMMU).

Upstream's SMMU VMID ida is `ida_alloc_range(&smmu->vmid_map, 1, (1 << vmid_bits) - 1)` (VMID 0 is for bypass
STEs; checked in torvalds/linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c `arm_smmu_domain_finalise_s2` and
arm-smmu-v3-iommufd.c `arm_vsmmu_init`): lowest free id first, as `SmmuVmidIda` does.

The mailing-list threads named above (Linux kernel lists):
* pinned-VMID RFC: Shameer Kolothum's series "KVM: ARM64: Add support for pinned VMIDs" / "iommu/arm-smmu-v3:
  Use pinned VMID for NESTED stage with BTM" / "KVM: arm64: Make sure pinned vmid is released on VM exit"
  (kvmarm, 2021): KVM's VMID space split in halves, the upper half pinned and never rolled over.
* pinned-VMID review: Jean-Philippe Brucker's reply to it (July 2021): pinned VMIDs collide with stage-2-only
  domains' private VMIDs; options: restrict the SMMU ida to a set KVM never uses, move a live STE, or one common
  allocator; a nesting container through /dev/iommu "must come with a KVM context".
* BTM review: the review of "iommu/arm-smmu-v3: Enable broadcast TLB maintenance" (SVA series v7 13/24,
  May 2020): with BTM, stage-2 contexts take every invalidation by VMID of the CPUs.

Interface for the host SMMU driver (docs/DESIGN.md, "Host VMID API"): `nested_vmid(vm)`, `s2_vmid(domain)`,
`release(owner, vmid)`, the `on_move(domain, old, new)` callback, `aliases()`.
"""
from __future__ import annotations

import errno as _errno

from typing import Any, Callable

from .vmid import VmidAllocator, VmidContext

__all__ = ["PolicyError", "SmmuVmidIda", "VmidPolicy", "PrivatePolicy", "UnpinnedPolicy", "SplitPolicy",
           "RestrictedPolicy", "SharedPolicy", "POLICIES", "make_policy"]

MoveCallback = Callable[[Any, int, int], None]


class PolicyError(Exception):
    """A policy's precondition does not hold (errno EINVAL), or it ran out of VMIDs (errno ENOSPC)."""

    def __init__(self, msg: str, errno: int = _errno.EINVAL):
        super().__init__(msg)
        self.errno = errno


class SmmuVmidIda:
    """The SMMU driver's private VMID ida: lowest free id in [lo, hi] (upstream: 1..NUM-1)."""

    def __init__(self, bits: int, lo: int = 1, hi: int | None = None):
        self.bits = bits
        self.lo = lo
        self.hi = (1 << bits) - 1 if hi is None else hi
        if not 1 <= self.lo <= self.hi < (1 << bits):
            raise ValueError(f"SMMU VMID range [{self.lo}, {self.hi}] does not fit 1..{(1 << bits) - 1}")
        self._used = bytearray(1 << bits)

    def alloc(self, avoid: Callable[[int], bool] | None = None) -> int:
        i = self._used.find(0, self.lo, self.hi + 1)
        while i >= 0 and avoid is not None and avoid(i):
            i = self._used.find(0, i + 1, self.hi + 1)
        if i < 0:
            raise PolicyError(f"SMMU VMID space [{self.lo}, {self.hi}] exhausted (-ENOSPC)", _errno.ENOSPC)
        self._used[i] = 1
        return i

    def free(self, vmid: int) -> None:
        if not self._used[vmid]:
            raise ValueError(f"SMMU VMID {vmid:#x} freed twice")
        self._used[vmid] = 0

    def in_use(self, vmid: int) -> bool:
        return bool(self._used[vmid])


def _ctx_of(vm: Any) -> VmidContext:
    if isinstance(vm, VmidContext):
        return vm
    ctx = getattr(vm, "vmid_ctx", None)
    if ctx is None:
        raise PolicyError(f"{vm!r} has no KVM VMID context: attach the device to KVM first "
                          "(KVM_DEV_VFIO_FILE_ADD before binding to iommufd, pinned-VMID review)")
    return ctx


class _Grant:
    __slots__ = ("vmid", "kind", "owner", "key", "pinned_ctx")

    def __init__(self, vmid: int, kind: str, owner: Any, key: Any, pinned_ctx: VmidContext | None):
        self.vmid = vmid
        self.kind = kind              # "nested" | "s2"
        self.owner = owner            # the VM (nested) or the domain (s2)
        self.key = key                # identity of the address space the VMID tags
        self.pinned_ctx = pinned_ctx  # KVM context pinned for this grant, if any


class VmidPolicy:
    """Base class. Subclasses set `name`, `needs_kvm`, and implement `_nested` / `_s2` / `_check`."""

    name = "?"
    needs_kvm = True

    def __init__(self, kvm_vmids: VmidAllocator | None = None, smmu_vmid_bits: int = 16, *,
                 btm: bool = True, on_move: MoveCallback | None = None):
        if smmu_vmid_bits not in (8, 16):
            raise PolicyError(f"{self.name}: SMMU VMID width must be 8 or 16 (IDR0.VMID16), got {smmu_vmid_bits}")
        self.kvm = kvm_vmids
        self.bits = smmu_vmid_bits
        self.btm = btm
        self.on_move = on_move
        self.grants: list[_Grant] = []
        self.check()

    # ---- preconditions -------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise PolicyError naming the first precondition that does not hold."""
        if self.needs_kvm:
            if self.kvm is None:
                raise PolicyError(f"{self.name}: needs the KVM VMID allocator")
            if self.kvm.bits != self.bits:
                raise PolicyError(f"{self.name}: VMID widths differ (KVM {self.kvm.bits} bits, SMMU {self.bits} "
                                  "bits); a VMID shared between KVM and the SMMU needs equal widths")
        self._check()

    def _check(self) -> None:
        pass

    # ---- driver interface -----------------------------------------------------------------------------------
    def nested_vmid(self, vm: Any) -> int:
        """VMID for a nested (guest stage 1 over a stage-2 parent) domain or vIOMMU of `vm`. May pin."""
        vmid, pinned = self._nested(vm)
        self.grants.append(_Grant(vmid, "nested", vm, ("vm", id(_key_of(vm))), pinned))
        return vmid

    def s2_vmid(self, domain: Any) -> int:
        """VMID for a stage-2-only domain (no guest stage 1, e.g. a nest parent attached directly)."""
        vmid, pinned = self._s2(domain)
        self.grants.append(_Grant(vmid, "s2", domain, ("dom", id(domain)), pinned))
        return vmid

    def release(self, owner: Any, vmid: int) -> None:
        """Give back a VMID obtained for `owner`, once its STEs are torn down and invalidated."""
        for i, g in enumerate(self.grants):
            if g.owner is owner and g.vmid == vmid:
                break
        else:
            raise ValueError(f"{self.name}: VMID {vmid:#x} was not granted to {owner!r}")
        del self.grants[i]
        self._release(g)

    # ---- views for checks ---------------------------------------------------------------------------------------
    def live(self) -> dict[int, list[_Grant]]:
        out: dict[int, list[_Grant]] = {}
        for g in self.grants:
            out.setdefault(g.vmid, []).append(g)
        return out

    def aliases(self) -> list[tuple[int, list[Any]]]:
        """VMIDs that tag two different address spaces in the SMMU at once (the cross-VM alias of the
        pinned-VMID review)."""
        out = []
        for vmid, gs in self.live().items():
            keys = {g.key for g in gs}
            if len(keys) > 1:
                out.append((vmid, [g.owner for g in gs]))
        return out

    def private_vmids(self) -> set[int]:
        """VMIDs of stage-2-only domains (those not coming from a VM's KVM VMID)."""
        return {g.vmid for g in self.grants if g.kind == "s2"}

    # ---- subclass hooks -----------------------------------------------------------------------------------------
    def _nested(self, vm: Any) -> tuple[int, VmidContext | None]:
        raise NotImplementedError

    def _s2(self, domain: Any) -> tuple[int, VmidContext | None]:
        raise NotImplementedError

    def _release(self, g: _Grant) -> None:
        raise NotImplementedError

    def _pin(self, ctx: VmidContext) -> int:
        vmid = self.kvm.pin(ctx)
        if vmid == 0:
            raise PolicyError(f"{self.name}: KVM pin limit reached ({self.kvm.nr_pinned}/{self.kvm.max_pinned})",
                              _errno.ENOSPC)
        return vmid


def _key_of(vm: Any) -> Any:
    return getattr(vm, "vmid_ctx", vm)


class PrivatePolicy(VmidPolicy):
    """Upstream today: every SMMU VMID from the SMMU's own ida."""

    name = "private"
    needs_kvm = False

    def __init__(self, kvm_vmids: VmidAllocator | None = None, smmu_vmid_bits: int = 16, **kw):
        super().__init__(kvm_vmids, smmu_vmid_bits, **kw)
        self.ida = SmmuVmidIda(self.bits)

    def _nested(self, vm):
        return self.ida.alloc(), None

    def _s2(self, domain):
        return self.ida.alloc(), None

    def _release(self, g):
        self.ida.free(g.vmid)


class UnpinnedPolicy(PrivatePolicy):
    """Negative control for the pinned-VMID RFC: a nested domain copies the VM's KVM VMID without pinning it."""

    name = "unpinned"
    needs_kvm = True

    def _nested(self, vm):
        ctx = _ctx_of(vm)
        if ctx.id == 0:
            raise PolicyError(f"{self.name}: {ctx.name} has no KVM VMID yet (it never ran)")
        return self.kvm.hw_vmid(ctx), None

    def _release(self, g):
        if g.kind == "s2":
            self.ida.free(g.vmid)


class SplitPolicy(PrivatePolicy):
    """The pinned-VMID RFC as posted: pins from KVM's upper half; stage-2-only domains private over all of it."""

    name = "split"
    needs_kvm = True

    def _check(self):
        if not self.kvm.split:
            raise PolicyError(f"{self.name}: the KVM allocator must split its VMID space "
                              "(kvm-arm.pinned_vmid_enable; VmidAllocator(split=True))")

    def _nested(self, vm):
        ctx = _ctx_of(vm)
        return self._pin(ctx), ctx

    def _release(self, g):
        if g.kind == "s2":
            self.ida.free(g.vmid)
        else:
            self.kvm.unpin(g.pinned_ctx)


class RestrictedPolicy(VmidPolicy):
    """The pinned-VMID review: nested domains get pinned KVM VMIDs; stage-2-only domains never share a VMID
    with a pin.

    mode="reserve": private VMIDs come from the top `kvm_vmids.smmu_reserved` indices, which KVM never hands
    out, so they never equal any KVM VMID (pinned or not; no over-invalidation either).
    mode="move": private VMIDs come from 1..NUM-1 avoiding pinned VMIDs; when a new pin lands on a live private
    VMID, the stage-2 domain gets a fresh one and `on_move(domain, old, new)` is called before the pin is
    returned. The driver implements it: write the STE with the new VMID, CFGI_STE, CMD_SYNC, then
    TLBI_S12_VMALL of the old VMID, CMD_SYNC.
    """

    name = "restricted"

    def __init__(self, kvm_vmids: VmidAllocator | None = None, smmu_vmid_bits: int = 16, *,
                 mode: str = "reserve", **kw):
        self.mode = mode
        super().__init__(kvm_vmids, smmu_vmid_bits, **kw)
        if mode == "reserve":
            num = 1 << self.bits
            self.ida = SmmuVmidIda(self.bits, lo=num - self.kvm.smmu_reserved, hi=num - 1)
        else:
            self.ida = SmmuVmidIda(self.bits)
        self.moves: list[tuple[Any, int, int]] = []

    def _check(self):
        if self.mode not in ("reserve", "move"):
            raise PolicyError(f"{self.name}: mode must be 'reserve' or 'move', got {self.mode!r}")
        if self.mode == "reserve" and self.kvm.smmu_reserved <= 0:
            raise PolicyError(f"{self.name}: mode 'reserve' needs KVM to keep a set for the SMMU "
                              "(VmidAllocator(smmu_reserved=N), N > 0)")
        if self.kvm.split:
            raise PolicyError(f"{self.name}: needs the pinned-ASID-style KVM allocator, not the split one")

    def _nested(self, vm):
        ctx = _ctx_of(vm)
        vmid = self._pin(ctx)
        if self.mode == "move":
            for g in self.grants:
                if g.kind == "s2" and g.vmid == vmid:
                    if self.on_move is None:
                        self.kvm.unpin(ctx)
                        raise PolicyError(f"{self.name}: pin {vmid:#x} collides with a live private VMID and no "
                                          "on_move callback is set to move the STE")
                    new = self.ida.alloc(avoid=self.kvm.is_pinned_vmid)
                    self.on_move(g.owner, vmid, new)
                    self.moves.append((g.owner, vmid, new))
                    g.vmid = new
                    self.ida.free(vmid)
        return vmid, ctx

    def _s2(self, domain):
        if self.mode == "move":
            return self.ida.alloc(avoid=self.kvm.is_pinned_vmid), None
        return self.ida.alloc(), None

    def _release(self, g):
        if g.kind == "s2":
            self.ida.free(g.vmid)
        else:
            self.kvm.unpin(g.pinned_ctx)


class SharedPolicy(VmidPolicy):
    """The pinned-VMID review's other option: one allocator; every SMMU VMID is a pinned KVM VMID."""

    name = "shared"

    def _check(self):
        if self.kvm.split:
            raise PolicyError(f"{self.name}: needs the pinned-ASID-style KVM allocator, not the split one")
        if self.kvm.max_pinned <= 0:
            raise PolicyError(f"{self.name}: KVM allows no pinned VMIDs (max_pinned={self.kvm.max_pinned})")

    def _nested(self, vm):
        ctx = _ctx_of(vm)
        return self._pin(ctx), ctx

    def _s2(self, domain):
        ctx = self.kvm.new_context(f"smmu-s2-{id(domain):x}")
        return self._pin(ctx), ctx

    def _release(self, g):
        self.kvm.unpin(g.pinned_ctx)
        if g.kind == "s2":
            self.kvm.destroy_context(g.pinned_ctx)


POLICIES: dict[str, type[VmidPolicy]] = {p.name: p for p in
                                         (PrivatePolicy, UnpinnedPolicy, SplitPolicy, RestrictedPolicy,
                                          SharedPolicy)}


def make_policy(name: str, kvm_vmids: VmidAllocator | None = None, smmu_vmid_bits: int = 16,
                **kw: Any) -> VmidPolicy:
    """Build a policy by name (`private`, `unpinned`, `split`, `restricted`, `shared`)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise PolicyError(f"unknown VMID policy {name!r} (choose from {', '.join(POLICIES)})") from None
    return cls(kvm_vmids, smmu_vmid_bits, **kw)
