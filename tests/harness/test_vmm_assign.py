"""`harness.vmm.attach_nest_parent`: the one device assignment both VMMs use (the vSMMU's `setup_nested_vm`
and the virtio-iommu's `setup_viommu_vm`): the VM's KVM VM, the cdev bound with KVM's file, guest RAM in an
IOAS at its IPA, the device attached to the nest-parent HWPT on it."""
from __future__ import annotations

import pytest

from harness.machine import Machine
from harness.viommu import setup_viommu_vm
from harness.vmm import DEFAULT_VSID, DMATEST_IPA, assign_dma_device, attach_nest_parent, setup_host, setup_nested_vm


@pytest.mark.parametrize("kvm_before_bind", [True, False])
def test_the_device_is_attached_to_the_vms_stage_2(kvm_before_bind):
    m = Machine(tcg_buffer_size=8 << 20)
    vm = m.add_vm("vm0", ram_size=16 << 20)
    host = setup_host(m, policy="private")
    psid, dma, _mmio = assign_dma_device(m, vm, host, None, DEFAULT_VSID, DMATEST_IPA)
    kvm_vm, dev, dev_id, ioas, s2 = attach_nest_parent(host, vm, psid, dma, kvm_before_bind)
    ictx = host.ictx
    assert host.kvm.vm_of(vm) is kvm_vm and dev.sid == psid and dev.dev_id == dev_id
    assert dev.kvm is kvm_vm and (dev.bound_kvm is kvm_vm) == kvm_before_bind
    hwpt = ictx.objects[s2]
    assert hwpt.nest_parent and dev.hwpt is hwpt and hwpt.ioas is ictx.objects[ioas]
    assert ictx.objects[ioas].maps[vm.ram_ipa][:2] == (vm.ram.size, vm.ram_pa)


def test_both_vmms_assign_alike():
    got = []
    for setup in (lambda m, vm: setup_nested_vm(m, vm, policy="private"),
                  lambda m, vm: setup_viommu_vm(m, vm, setup_host(m, policy="private"))):
        m = Machine(tcg_buffer_size=8 << 20)
        vm = m.add_vm("vm0", ram_size=16 << 20)
        v = setup(m, vm)
        hwpt = v.host.ictx.objects[v.s2_hwpt]
        got.append((hwpt.nest_parent, hwpt.ioas is v.host.ictx.objects[v.ioas], v.dev.kvm is v.kvm_vm,
                    v.dev.bound_kvm is v.kvm_vm))             # (the vIOMMU may re-attach the device after)
    assert got[0] == got[1] == (True, True, True, True)
