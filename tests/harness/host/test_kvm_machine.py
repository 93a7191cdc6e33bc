"""KVM as a plugin of the real harness machine: every slice runs with the VMID the allocator gives."""
from __future__ import annotations

import struct

import pytest

pytest.importorskip("unicorn")
machine_mod = pytest.importorskip("harness.machine")

from harness.host.kvm import Kvm  # noqa: E402

B_SELF = struct.pack("<I", 0x14000000)      # b .   (spin until the instruction budget ends the run)


class SliceLog:
    """Added after KVM: records the VMID each vCPU carries while its slice runs."""

    def __init__(self, kvm):
        self.kvm = kvm
        self.seen = []

    def slice_start(self, vcpu):
        kv = self.kvm.kvm_vcpu_of(vcpu)
        self.seen.append((vcpu.vm.name, vcpu.vmid, kv.cpu))
        assert vcpu.vmid == kv.vm.vmid != 0


def test_kvm_plugin_drives_vcpu_vmid():
    m = machine_mod.Machine(quantum=50, tcg_buffer_size=4 << 20)
    kvm = Kvm(8, ncpus=1, interconnect=m.interconnect)
    m.add_plugin(kvm)
    log = SliceLog(kvm)
    m.add_plugin(log)
    for i in range(2):
        vm = m.add_vm(f"g{i}", ram_size=1 << 20, vmid=0x77)   # the machine's own VMID is overridden by KVM
        vm.load_code(vm.ram_ipa, B_SELF)
    m.run(max_insns=400)
    assert {name for name, _, _ in log.seen} == {"g0", "g1"}
    vmids = {name: vmid for name, vmid, _ in log.seen}
    assert vmids == {"g0": 1, "g1": 2}
    assert all(cpu == 0 for _, _, cpu in log.seen)
    assert kvm.loaded == [None]                 # every slice_end put its vCPU
