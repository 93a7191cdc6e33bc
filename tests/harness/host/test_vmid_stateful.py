"""Stateful property test of the KVM VMID allocator through the simulated KVM (invariants of Linux
arch/arm64/kvm/vmid.c and of pinned ASIDs in arch/arm64/mm/context.c).

Random create/load/put/pin/unpin/destroy/churn/rollover sequences on several CPUs, 8-bit VMIDs so rollovers are
frequent. Checked after every step:
* hardware VMID = id & mask, never 0 for a loaded vCPU; a vCPU's VMID is its VM's VMID while it stays loaded;
* uniqueness: the VMs in force (current-generation ids, loaded vCPUs, pins) hold distinct hardware VMIDs;
* a pinned VMID never changes, across any number of rollovers;
* the pin limit (nr_pinned <= max_pinned; a new pin returns 0 exactly at the limit, which `crowd_pins`
  reaches) and balanced pins (nr_pinned and the
  pinned map match the VMs' refcounts; destroy drops them);
* a broadcast TLBI ALLE1IS (then a Sync) reaches the DVM before an index moves to another VM.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule

from devmodel.dvm import Interconnect
from harness.host.kvm import Kvm

NCPUS = 3


class Recorder:
    """DVM participant logging what the host broadcasts (the conftest fixture's twin, usable outside fixtures)."""

    dvm_name = "recorder"

    def __init__(self):
        self.log = []

    def dvm_tlbi(self, op, msg):
        self.log.append(("tlbi", op))

    def dvm_sync(self, sync):
        self.log.append(("sync", sync))

    def tlbis(self, name=None):
        return [op for kind, op in self.log if kind == "tlbi" and (name is None or op.name == name)]


class VmidMachine(RuleBasedStateMachine):
    bits = 8

    def __init__(self):
        super().__init__()
        self.ic = Interconnect()
        self.rec = Recorder()
        self.ic.attach(self.rec)
        self.kvm = Kvm(self.bits, NCPUS, interconnect=self.ic)
        self.a = self.kvm.vmids
        # context.c max_pinned_asids: available - num_possible_cpus() - 2 (index 0 and one free slot)
        assert self.a.max_pinned == (1 << self.bits) - NCPUS - 2
        self.pins: dict[int, int] = {}          # id(vm) -> pins we hold
        self.pinned_hw: dict[int, int] = {}     # id(vm) -> hardware VMID at first pin
        self.holder: dict[int, tuple[int, int]] = {}   # index -> (id(ctx), broadcasts seen when last in force)
        self.n = 0

    vms = Bundle("vms")

    # ---- rules ---------------------------------------------------------------------------------------------
    @rule(target=vms, nvcpus=st.integers(1, 3))
    def create(self, nvcpus):
        self.n += 1
        return self.kvm.create_vm(f"vm{self.n}", nvcpus)

    @rule(vm=vms, data=st.data())
    def load(self, vm, data):
        if vm.destroyed:
            return
        vcpu = data.draw(st.sampled_from(vm.vcpus))
        cpu = data.draw(st.integers(0, NCPUS - 1))
        vmid = self.kvm.vcpu_load(vcpu, cpu)
        assert vmid == vm.vmid_ctx.id & self.a.mask
        self._note_in_force()

    @rule(vm=vms)
    def put(self, vm):
        for v in vm.vcpus:
            self.kvm.vcpu_put(v)

    @rule(vm=vms)
    def pin(self, vm):
        if vm.destroyed:
            return
        was_pinned = vm.vmid_ctx.pinned > 0
        at_limit = self.a.nr_pinned >= self.a.max_pinned
        hw = self.kvm.pin_vmid(vm)
        if hw == 0:
            assert at_limit and not was_pinned
            return
        assert was_pinned or not at_limit, "a new pin past the limit must return 0"
        assert hw == self.a.hw_vmid(vm.vmid_ctx)
        k = id(vm)
        if self.pins.get(k, 0) == 0:
            self.pinned_hw[k] = hw
        else:
            assert hw == self.pinned_hw[k]
        self.pins[k] = self.pins.get(k, 0) + 1
        self._note_in_force()

    @rule(vm=vms)
    def unpin(self, vm):
        k = id(vm)
        if vm.destroyed or self.pins.get(k, 0) == 0:
            return
        self.kvm.unpin_vmid(vm)
        self.pins[k] -= 1

    @rule(vm=consumes(vms))
    def destroy(self, vm):
        self.kvm.destroy_vm(vm)
        self.pins.pop(id(vm), None)
        self.pinned_hw.pop(id(vm), None)

    @rule(target=vms, slack=st.integers(0, 2))
    def crowd_pins(self, slack):
        """Pin new VMs up to the limit (8-bit: max_pinned = 256 - NCPUS - 2, which random `pin`s never reach):
        every pin below the limit succeeds, the next new VM's pin returns 0; then `slack` of them are unpinned
        again, so later `pin`s run at or just below the limit."""
        made = []
        while self.a.nr_pinned < self.a.max_pinned:
            self.n += 1
            vm = self.kvm.create_vm(f"crowd{self.n}")
            hw = self.kvm.pin_vmid(vm)
            assert hw == self.a.hw_vmid(vm.vmid_ctx) != 0, "a pin below the limit must succeed"
            self.pins[id(vm)] = 1
            self.pinned_hw[id(vm)] = hw
            made.append(vm)
        self._note_in_force()
        self.n += 1
        probe = self.kvm.create_vm(f"probe{self.n}")
        assert self.kvm.pin_vmid(probe) == 0 and probe.vmid_ctx.pinned == 0, "a pin past the limit must fail"
        for vm in made[:slack]:
            self.kvm.unpin_vmid(vm)
            self.pins[id(vm)] = 0
        return multiple(*made, probe)

    @rule(n=st.integers(1, 120), cpu=st.integers(0, NCPUS - 1))
    def churn(self, n, cpu):
        """Short-lived VMs run one slice each on `cpu` and go away (uses indices the natural way)."""
        for _ in range(n):
            vm = self.kvm.create_vm("tmp")
            self.kvm.vcpu_load(vm.vcpus[0], cpu)
            self._note_in_force()
            self.kvm.destroy_vm(vm)

    @rule()
    def rollover(self):
        before = self.a.rollovers
        self.kvm.force_rollover()
        assert self.a.rollovers == before + 1

    # ---- bookkeeping ---------------------------------------------------------------------------------------
    def _in_force(self):
        """(ctx, index) of every VM that holds its VMID now."""
        out = {}
        for vm in self.kvm.vms:
            c = vm.vmid_ctx
            loaded = any(v.cpu is not None for v in vm.vcpus)
            if c.id and (self.a.gen_match(c.id) or loaded or c.pinned):
                out[id(c)] = (c, c.id & self.a.mask)
        return out

    def _note_in_force(self):
        seen = len(self.rec.tlbis("ALLE1IS"))
        for k, (c, idx) in self._in_force().items():
            prev = self.holder.get(idx)
            if prev is not None and prev[0] != k:
                # Index moved to another VM: a broadcast must have come after the old holder's last use.
                assert seen > prev[1], f"index {idx} reused by {c.name} without a TLBI ALLE1IS"
            self.holder[idx] = (k, seen)

    # ---- invariants ----------------------------------------------------------------------------------------
    @invariant()
    def broadcasts_match_rollovers(self):
        kinds = [k for k, _ in self.rec.log]
        assert kinds == ["tlbi", "sync"] * self.a.rollovers
        assert all(op.name == "ALLE1IS" and op.vmid is None for op in self.rec.tlbis())

    @invariant()
    def loaded_vcpus_carry_their_vms_vmid(self):
        for vm in self.kvm.vms:
            for v in vm.vcpus:
                if v.cpu is not None:
                    assert v.vmid != 0
                    assert v.vmid == self.a.hw_vmid(vm.vmid_ctx)
                    assert self.kvm.loaded[v.cpu] is v

    @invariant()
    def unique_in_force(self):
        f = self._in_force()
        idxs = [idx for _, idx in f.values()]
        assert len(idxs) == len(set(idxs)), sorted(idxs)
        assert 0 not in idxs
        # The map covers every one of them in this generation.
        bits = self.a.map_bits()
        assert set(idxs) <= bits | {idx for c, idx in f.values() if not self.a.gen_match(c.id)}

    @invariant()
    def pins_hold(self):
        live_pinned = [vm for vm in self.kvm.vms if vm.vmid_ctx.pinned]
        assert self.a.nr_pinned == len(live_pinned) <= self.a.max_pinned
        assert self.a.pinned_vmids() == {self.a.hw_vmid(vm.vmid_ctx) for vm in live_pinned}
        for vm in self.kvm.vms:
            k = id(vm)
            assert vm.vmid_ctx.pinned == self.pins.get(k, 0)
            if self.pins.get(k, 0):
                assert self.a.hw_vmid(vm.vmid_ctx) == self.pinned_hw[k]


VmidMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestVmidAllocator = VmidMachine.TestCase


class VmidMachineLong(VmidMachine):
    pass


@pytest.mark.slow
def test_vmid_allocator_long():
    """Long property run (~35 s); the root conftest skips `slow` tests unless -m slow selects them."""
    VmidMachineLong.TestCase.settings = settings(max_examples=1000, stateful_step_count=100, deadline=None,
                                                 suppress_health_check=[HealthCheck.too_slow])
    VmidMachineLong.TestCase().runTest()
