"""Simulated KVM: time-slicing many VMs on few CPUs, vcpu_load/put, destroy, the machine-plugin hooks."""
from __future__ import annotations

from harness.host.kvm import Kvm


def test_timeslicing_rolls_over_8bit_and_vmids_stay_consistent(dvm):
    ic, rec = dvm
    kvm = Kvm(8, ncpus=2, interconnect=ic)
    for i in range(300):                       # more VMs than 8-bit VMIDs, on two physical CPUs
        kvm.create_vm(f"g{i}", nvcpus=1 + i % 2)
    running: dict[int, tuple] = {}

    def body(vcpu, vmid):
        # What the vCPU's DVM messages would carry is the allocator's VMID for its VM.
        assert vmid == vcpu.vmid == kvm.vmids.hw_vmid(vcpu.vm.vmid_ctx) != 0
        running[vcpu.cpu] = (vcpu.vm, vmid)
        # Two CPUs: the other one is running something else right now.
        other = kvm.loaded[1 - vcpu.cpu]
        if other is not None:
            if other.vm is vcpu.vm:
                assert other.vmid == vmid      # vCPUs of one VM share its VMID
            else:
                assert other.vmid != vmid      # different VMs never share one at the same time

    slices = kvm.schedule(rounds=600, body=body)
    assert len(slices) == 1200
    assert kvm.vmids.rollovers >= 2
    assert len(rec.tlbis("ALLE1IS")) == kvm.vmids.rollovers


def test_vcpu_load_put_and_context_switch():
    kvm = Kvm(16, ncpus=1)
    a, b = kvm.create_vm("a", 2), kvm.create_vm("b")
    assert kvm.vcpu_load(a.vcpus[0], 0) == 1
    assert kvm.vcpu_load(b.vcpus[0], 0) == 2      # switching on CPU 0 puts a/0 first
    assert a.vcpus[0].cpu is None and kvm.loaded[0] is b.vcpus[0]
    kvm.vcpu_put(b.vcpus[0])
    assert kvm.vmids.active[0] == kvm.vmids.active_invalid and kvm.loaded == [None]


def test_destroy_vm_releases_pins_and_puts_vcpus():
    kvm = Kvm(8, ncpus=2)
    vm = kvm.create_vm("pinned", 2)
    kvm.vcpu_load(vm.vcpus[1], 1)
    assert kvm.pin_vmid(vm) == 1 and kvm.pin_vmid(vm) == 1
    assert kvm.vmids.nr_pinned == 1
    kvm.destroy_vm(vm)
    assert kvm.vmids.nr_pinned == 0 and not kvm.vmids.pinned_vmids()
    assert kvm.loaded == [None, None] and vm not in kvm.vms
    kvm.force_rollover()                        # index 1 is free again after a rollover
    other = kvm.create_vm("other")
    assert kvm.vcpu_load(other.vcpus[0], 0) != 0


def test_force_rollover_knob(dvm):
    ic, rec = dvm
    kvm = Kvm(16, ncpus=4, interconnect=ic)
    vm = kvm.create_vm()
    kvm.vcpu_load(vm.vcpus[0], 3)
    gen = kvm.vmids.generation
    kvm.force_rollover()
    assert kvm.vmids.generation == gen + 0x1_0000 and kvm.vmids.rollovers == 1
    assert [k for k, _ in rec.log] == ["tlbi", "sync"]
    assert kvm.vcpu_load(vm.vcpus[0], 0) == 1   # was active on CPU 3: kept


def test_split_pin_updates_loaded_vcpus():
    kvm = Kvm(8, ncpus=2, split=True)
    vm = kvm.create_vm("nested", 2)
    kvm.vcpu_load(vm.vcpus[0], 0)
    kvm.vcpu_load(vm.vcpus[1], 1)
    assert vm.vcpus[0].vmid == 1
    assert kvm.pin_vmid(vm) == 0x80
    assert [v.vmid for v in vm.vcpus] == [0x80, 0x80]


# ---- as a machine plugin, with stand-in vCPU objects ------------------------------------------------------------

class FakeVm:
    def __init__(self, name):
        self.name = name


class FakeVcpu:
    def __init__(self, vm, index):
        self.vm, self.index, self.vmid = vm, index, 0


def test_plugin_slices_set_vcpu_vmid(dvm):
    ic, rec = dvm
    kvm = Kvm(8, ncpus=2, interconnect=ic)
    vms = [FakeVm(f"m{i}") for i in range(150)]
    vcpus = [FakeVcpu(vm, j) for j in range(2) for vm in vms]
    for v in vcpus:
        kvm.attach_vcpu(v)
    assert len(kvm.vms) == 150 and kvm.vm_of(vms[5]).name == "m5"
    churn = [FakeVcpu(FakeVm(f"short{i}"), 0) for i in range(300)]   # short-lived VMs force rollovers
    for r in range(3):                          # the machine's round robin: one slice per vCPU
        for v in vcpus + churn[r * 100:(r + 1) * 100]:
            kvm.slice_start(v)
            kv = kvm.vm_of(v.vm)
            assert v.vmid == kv.vmid != 0        # the VMID the vCPU's TLBIs carry
            assert kvm.loaded.count(kvm.kvm_vcpu_of(v)) == 1
            kvm.slice_end(v)
            assert kvm.kvm_vcpu_of(v).cpu is None and kvm.loaded == [None, None]
    assert kvm.vmids.rollovers >= 1 and len(rec.tlbis("ALLE1IS")) == kvm.vmids.rollovers
    assert all(a in (0, kvm.vmids.active_invalid) for a in kvm.vmids.active)
    # A VM created lazily at its first slice works as well.
    late = FakeVcpu(FakeVm("late"), 0)
    kvm.slice_start(late)
    assert late.vmid == kvm.vm_of(late.vm).vmid != 0
    kvm.slice_end(late)
