"""SMMU VMID policies: each one's guarantee or known hole (the mailing-list threads
harness/host/vmid_policy.py names: pinned-VMID RFC and review, BTM review), and their preconditions."""
from __future__ import annotations

import pytest

from harness.host.kvm import Kvm
from harness.host.vmid_policy import POLICIES, PolicyError, SmmuVmidIda, make_policy


class Dom:
    """A stand-in stage-2-only SMMU domain."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Dom({self.name})"


def run(kvm, vm, cpu=0):
    """One slice of `vm` (load + put): returns the VMID its vCPU ran with."""
    vmid = kvm.vcpu_load(vm.vcpus[0], cpu)
    kvm.vcpu_put(vm.vcpus[0])
    return vmid


def churn_and_check(kvm, policy, rounds, per_round=60, ncpu=1):
    """Time-slice many short-lived VMs (rollovers) and return every KVM VMID they ran with."""
    seen = set()
    for r in range(rounds):
        for i in range(per_round):
            vm = kvm.create_vm(f"tmp{r}.{i}")
            seen.add(run(kvm, vm, i % ncpu))
            kvm.destroy_vm(vm)
        assert policy.aliases() == []
    return seen


# ---- private (upstream today) ------------------------------------------------------------------------------------

def test_private_never_aliases():
    kvm = Kvm(8, 1)
    p = make_policy("private", kvm.vmids, 8)
    vms = [kvm.create_vm(f"g{i}") for i in range(5)]
    got = [p.nested_vmid(vm) for vm in vms] + [p.s2_vmid(Dom(i)) for i in range(5)]
    assert got == list(range(1, 11))            # the ida: lowest free first
    p.release(vms[2], 3)
    assert p.s2_vmid(Dom("again")) == 3
    assert p.aliases() == []


def test_private_hole_private_vmid_equals_running_kvm_vmid():
    """BTM review: with BTM a private VMID equal to a running VM's KVM VMID takes that VM's broadcasts."""
    kvm = Kvm(8, 1)
    p = make_policy("private", kvm.vmids, 8)
    guest = kvm.create_vm("guest")
    kvm_vmid = kvm.vcpu_load(guest.vcpus[0], 0)
    s2 = p.s2_vmid(Dom("assigned-to-other-guest"))
    assert s2 == kvm_vmid == 1                   # nothing keeps them apart
    nested = p.nested_vmid(guest)
    assert nested != kvm_vmid                    # and the guest's own broadcasts miss its nested domain


# ---- unpinned (negative control for the pinned-VMID RFC) ------------------------------------------------------

def test_unpinned_loses_vmid_at_rollover():
    kvm = Kvm(8, 1)
    p = make_policy("unpinned", kvm.vmids, 8)
    vm = kvm.create_vm("guest")
    assert run(kvm, vm) == 1
    smmu_vmid = p.nested_vmid(vm)                # copied, not pinned
    assert smmu_vmid == 1
    kvm.force_rollover()                         # the guest is not running: its index is up for grabs
    assert run(kvm, vm) != smmu_vmid             # the guest's TLBIs now carry another VMID: stale IOTLB


def test_unpinned_aliases_live_private_vmid():
    kvm = Kvm(8, 1)
    p = make_policy("unpinned", kvm.vmids, 8)
    vm = kvm.create_vm("guest")
    run(kvm, vm)
    d = Dom("s2-only")
    assert p.s2_vmid(d) == 1
    assert p.nested_vmid(vm) == 1
    assert p.aliases() == [(1, [d, vm])]


# ---- split (the pinned-VMID RFC as posted) ---------------------------------------------------------------------

def test_split_pinned_vmid_survives_rollovers():
    kvm = Kvm(8, 2, split=True)
    p = make_policy("split", kvm.vmids, 8)
    vm = kvm.create_vm("guest")
    run(kvm, vm)
    v = p.nested_vmid(vm)
    assert v >= 0x80
    for _ in range(3):
        kvm.force_rollover()
        assert run(kvm, vm, 1) == v


def test_split_aliases_live_private_vmid():
    """Pinned-VMID review: the SMMU ida covers the upper half too, so a pin can equal a live private VMID."""
    kvm = Kvm(8, 1, split=True)
    p = make_policy("split", kvm.vmids, 8)
    doms = [Dom(i) for i in range(0x80)]
    assert [p.s2_vmid(d) for d in doms] == list(range(1, 0x81))   # stage-2-only domains up to 0x80
    vm = kvm.create_vm("guest")
    run(kvm, vm)
    assert p.nested_vmid(vm) == 0x80
    assert p.aliases() == [(0x80, [doms[0x7F], vm])]


# ---- restricted (pinned-VMID review) -------------------------------------------------------------------------

def test_restricted_reserve_never_aliases_nor_meets_kvm_vmids():
    kvm = Kvm(8, 2, smmu_reserved=16)
    p = make_policy("restricted", kvm.vmids, 8, mode="reserve")
    doms = [Dom(i) for i in range(16)]
    private = {p.s2_vmid(d) for d in doms}
    assert private == set(range(240, 256))
    with pytest.raises(PolicyError, match="exhausted"):
        p.s2_vmid(Dom("one too many"))
    nested = [kvm.create_vm(f"n{i}") for i in range(4)]
    for vm in nested:
        p.nested_vmid(vm)
    seen = churn_and_check(kvm, p, rounds=10, per_round=60, ncpu=2)
    assert kvm.vmids.rollovers >= 2
    assert not (seen & private)                   # no KVM VMID ever equals a private one: no over-invalidation
    assert {run(kvm, vm) for vm in nested} == {g.vmid for g in p.grants if g.kind == "nested"}


def test_restricted_move_on_collision():
    kvm = Kvm(8, 1)
    moves = []
    p = make_policy("restricted", kvm.vmids, 8, mode="move",
                    on_move=lambda d, old, new: moves.append((d, old, new)))
    d = Dom("s2-only")
    assert p.s2_vmid(d) == 1
    vm = kvm.create_vm("guest")
    assert run(kvm, vm) == 1                      # KVM gave the guest 1 as well (not a pin: no alias yet)
    assert p.nested_vmid(vm) == 1                 # the pin collides: the s2 domain moves first
    assert moves == [(d, 1, 2)]
    assert p.aliases() == []
    assert p.private_vmids() == {2} and not kvm.vmids.is_pinned_vmid(2)
    # New private VMIDs avoid pinned ones.
    assert p.s2_vmid(Dom("next")) == 3
    p.release(d, 2)
    p.release(vm, 1)
    assert kvm.vmids.nr_pinned == 0


def test_restricted_move_without_callback_refuses():
    kvm = Kvm(8, 1)
    p = make_policy("restricted", kvm.vmids, 8, mode="move")
    p.s2_vmid(Dom("s2"))
    vm = kvm.create_vm("guest")
    run(kvm, vm)
    with pytest.raises(PolicyError, match="on_move"):
        p.nested_vmid(vm)
    assert kvm.vmids.nr_pinned == 0               # the pin was given back


# ---- shared (the pinned-VMID review's other option) ----------------------------------------------------------

def test_shared_every_vmid_is_a_pinned_kvm_vmid():
    kvm = Kvm(8, 2)
    p = make_policy("shared", kvm.vmids, 8)
    doms = [Dom(i) for i in range(5)]
    s2 = [p.s2_vmid(d) for d in doms]
    nested_vms = [kvm.create_vm(f"n{i}") for i in range(3)]
    nested = [p.nested_vmid(vm) for vm in nested_vms]
    assert set(s2 + nested) == kvm.vmids.pinned_vmids()
    seen = churn_and_check(kvm, p, rounds=10, per_round=60, ncpu=2)
    assert kvm.vmids.rollovers >= 2
    assert not (seen & set(s2))                   # no VM ever runs with a stage-2-only domain's VMID
    assert [run(kvm, vm) for vm in nested_vms] == nested
    for d, v in zip(doms, s2):
        p.release(d, v)
    assert kvm.vmids.pinned_vmids() == set(nested)


def test_shared_pin_limit_is_an_error():
    kvm = Kvm(8, 1)
    p = make_policy("shared", kvm.vmids, 8)
    for i in range(kvm.vmids.max_pinned):
        p.s2_vmid(Dom(i))
    with pytest.raises(PolicyError, match="pin limit"):
        p.s2_vmid(Dom("over"))


# ---- preconditions ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unpinned", "split", "restricted", "shared"])
def test_sharing_policies_need_equal_widths(name):
    kvm = Kvm(8, 1, split=(name == "split"), smmu_reserved=8 if name == "restricted" else 0)
    with pytest.raises(PolicyError, match="widths differ"):
        make_policy(name, kvm.vmids, 16)
    with pytest.raises(PolicyError, match="needs the KVM"):
        make_policy(name, None, 16)


def test_other_preconditions():
    assert make_policy("private", None, 16).name == "private"   # upstream needs no KVM
    with pytest.raises(PolicyError, match="split its VMID space"):
        make_policy("split", Kvm(16, 1).vmids, 16)
    with pytest.raises(PolicyError, match="smmu_reserved"):
        make_policy("restricted", Kvm(16, 1).vmids, 16)
    with pytest.raises(PolicyError, match="not the split one"):
        make_policy("shared", Kvm(16, 1, split=True).vmids, 16)
    with pytest.raises(PolicyError, match="unknown VMID policy"):
        make_policy("greedy", None, 16)
    with pytest.raises(PolicyError, match="no KVM VMID context"):
        make_policy("shared", Kvm(16, 1).vmids, 16).nested_vmid(object())
    assert sorted(POLICIES) == ["private", "restricted", "shared", "split", "unpinned"]


def test_ida_errors():
    ida = SmmuVmidIda(8)
    v = ida.alloc()
    ida.free(v)
    with pytest.raises(ValueError, match="freed twice"):
        ida.free(v)
    with pytest.raises(ValueError, match="does not fit"):
        SmmuVmidIda(8, lo=0)
