"""Simulated KVM/arm64: VMs, vCPUs, vcpu_load/put around run slices, time-slicing, pinned VMIDs.

What matters here is which VMID each vCPU's DVM messages carry: `vcpu_load` runs the allocator's
`kvm_arm_vmid_update` for the vCPU's physical CPU and stores the result in `vcpu.vmid` (since Linux 6.14 the
update is done in `kvm_arch_vcpu_load`, the slice start here; before, just before guest entry - the same point in
a model without preemption), and `vcpu_put` clears the CPU's active VMID (`kvm_arm_vmid_clear_active`).

Two ways to drive it:
* `Kvm.schedule(rounds)` time-slices every vCPU of every VM over the `ncpus` physical CPUs (round robin), so
  many VMs on few CPUs with 8-bit VMIDs roll over for real;
* as a machine plugin (`machine.add_plugin(kvm)`): `slice_start(vcpu)` loads and sets `vcpu.vmid`,
  `slice_end(vcpu)` puts. Machine vCPUs need `.vm` and `.index` and a settable `.vmid`.

`destroy_vm` releases the VM's pins (as patch 5/5 of the pinned-VMID RFC, named in `vmid_policy.py`, does).
`force_rollover()` is the knob for tests.

Not modelled: vCPU threads, preemption inside a slice, KVM requests other than the VMID reload after a split
pin, stage-2 page tables (the machine maps guest RAM itself).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from devmodel.dvm import Interconnect
from devmodel.trace import NULL_TRACER, Tracer

from .vmid import VmidAllocator, VmidContext

__all__ = ["Kvm", "KvmVm", "KvmVcpu", "Slice"]


class KvmVcpu:
    """A KVM vCPU; `vmid` is the hardware VMID it ran with last (the one its TLBIs carry while loaded)."""

    __slots__ = ("vm", "index", "cpu", "vmid", "peer")

    def __init__(self, vm: "KvmVm", index: int, peer: Any = None):
        self.vm = vm
        self.index = index
        self.cpu: int | None = None   # physical CPU it is loaded on
        self.vmid = 0
        self.peer = peer              # the machine's vCPU object when used as a plugin

    @property
    def label(self) -> str:
        return f"{self.vm.name}/{self.index}"

    def __repr__(self) -> str:
        return f"KvmVcpu({self.label}, cpu={self.cpu}, vmid={self.vmid:#x})"


class KvmVm:
    """A VM: one VMID context (`vmid_ctx`), its vCPUs; `key` is the machine VM it stands for, if any."""

    def __init__(self, kvm: "Kvm", name: str, key: Any = None):
        self.kvm = kvm
        self.name = name
        self.key = key
        self.vmid_ctx: VmidContext = kvm.vmids.new_context(name)
        self.vcpus: list[KvmVcpu] = []
        self.destroyed = False

    @property
    def vmid(self) -> int:
        """The hardware VMID of the VM's current id (what a new nested domain would copy or pin)."""
        return self.kvm.vmids.hw_vmid(self.vmid_ctx)

    def add_vcpu(self, peer: Any = None) -> KvmVcpu:
        v = KvmVcpu(self, len(self.vcpus), peer)
        self.vcpus.append(v)
        return v

    def __repr__(self) -> str:
        return f"KvmVm({self.name}, vmid={self.vmid:#x}, vcpus={len(self.vcpus)})"


class Slice(tuple):
    """One scheduled run slice: (round, cpu, vcpu, vmid)."""
    __slots__ = ()

    round = property(lambda s: s[0])
    cpu = property(lambda s: s[1])
    vcpu = property(lambda s: s[2])
    vmid = property(lambda s: s[3])


class Kvm:
    """The host's KVM: owns the VMID allocator and every VM."""

    def __init__(self, vmid_bits: int = 16, ncpus: int = 1, *, interconnect: Interconnect | None = None,
                 tracer: Tracer = NULL_TRACER, split: bool = False, smmu_reserved: int = 0,
                 placement: Callable[[KvmVcpu], int] | None = None):
        self.vmids = VmidAllocator(vmid_bits, ncpus, interconnect=interconnect, tracer=tracer, split=split,
                                   smmu_reserved=smmu_reserved)
        self.vmids.vmid_listeners.append(self._on_vmid_change)
        self.ncpus = ncpus
        self.tracer = tracer
        self.vms: list[KvmVm] = []
        self.loaded: list[KvmVcpu | None] = [None] * ncpus   # which vCPU each physical CPU runs
        self.placement = placement
        self._by_key: dict[int, KvmVm] = {}
        self._by_peer: dict[int, KvmVcpu] = {}
        self._rr = 0       # round-robin cursor of schedule()
        self._next_cpu = 0

    # ---- VMs and vCPUs -----------------------------------------------------------------------------------
    def create_vm(self, name: str | None = None, nvcpus: int = 1, key: Any = None) -> KvmVm:
        vm = KvmVm(self, name if name is not None else f"vm{len(self.vms)}", key)
        for _ in range(nvcpus):
            vm.add_vcpu()
        self.vms.append(vm)
        if key is not None:
            self._by_key[id(key)] = vm
        return vm

    def destroy_vm(self, vm: KvmVm) -> None:
        """kvm_arch_destroy_vm: put any loaded vCPU, then release the VM's VMID pins."""
        if vm.destroyed:
            return
        for v in vm.vcpus:
            if v.cpu is not None:
                self.vcpu_put(v)
        self.vmids.destroy_context(vm.vmid_ctx)
        vm.destroyed = True
        self.vms.remove(vm)
        if vm.key is not None:
            self._by_key.pop(id(vm.key), None)

    def vcpu_load(self, vcpu: KvmVcpu, cpu: int) -> int:
        """Load `vcpu` on physical CPU `cpu` (putting whatever ran there) and return its VMID."""
        if vcpu.vm.destroyed:
            raise ValueError(f"vcpu_load of {vcpu.label}: its VM is destroyed")
        if not 0 <= cpu < self.ncpus:
            raise ValueError(f"physical CPU {cpu} out of range 0..{self.ncpus - 1}")
        if vcpu.cpu is not None and vcpu.cpu != cpu:
            self.vcpu_put(vcpu)
        prev = self.loaded[cpu]
        if prev is not None and prev is not vcpu:
            self.vcpu_put(prev)
        vmid = self.vmids.vcpu_load(vcpu.vm.vmid_ctx, cpu, vcpu.label)
        vcpu.cpu = cpu
        vcpu.vmid = vmid
        self.loaded[cpu] = vcpu
        if vcpu.peer is not None:
            vcpu.peer.vmid = vmid
        return vmid

    def vcpu_put(self, vcpu: KvmVcpu) -> None:
        if vcpu.cpu is None:
            return
        self.vmids.vcpu_put(vcpu.cpu)
        self.loaded[vcpu.cpu] = None
        vcpu.cpu = None

    def _on_vmid_change(self, ctx: VmidContext, old: int, new: int) -> None:
        # A split pin moved a VM to its pinned VMID: its loaded vCPUs now run with it.
        for v in self.loaded:
            if v is not None and v.vm.vmid_ctx is ctx:
                v.vmid = new
                if v.peer is not None:
                    v.peer.vmid = new

    # ---- pinned VMIDs (what the SMMU driver asks for) ------------------------------------------------------
    def pin_vmid(self, vm: KvmVm) -> int:
        return self.vmids.pin(vm.vmid_ctx)

    def unpin_vmid(self, vm: KvmVm) -> None:
        self.vmids.unpin(vm.vmid_ctx)

    def force_rollover(self) -> int:
        """Test knob: roll the VMID generation over now (throwaway contexts fill the map)."""
        return self.vmids.force_rollover()

    # ---- time-slicing ----------------------------------------------------------------------------------------
    def runnable(self) -> list[KvmVcpu]:
        return [v for vm in self.vms for v in vm.vcpus]

    def schedule(self, rounds: int = 1, body: Callable[[KvmVcpu, int], None] | None = None,
                 put_after: bool = False) -> list[Slice]:
        """Run `rounds` rounds; in each, every physical CPU switches to the next vCPU of the global round-robin
        queue that is not running elsewhere, and `body(vcpu, vmid)` runs for that slice. With
        `put_after`, each vCPU is put at the end of its slice (a CPU going idle between slices)."""
        out: list[Slice] = []
        for r in range(rounds):
            queue = self.runnable()
            if not queue:
                break
            taken: set[int] = set()
            for cpu in range(self.ncpus):
                for _ in range(len(queue)):
                    v = queue[self._rr % len(queue)]
                    self._rr += 1
                    if id(v) in taken or (v.cpu is not None and v.cpu != cpu):
                        continue
                    break
                else:
                    continue
                taken.add(id(v))
                vmid = self.vcpu_load(v, cpu)
                out.append(Slice((r, cpu, v, vmid)))
                if body is not None:
                    body(v, vmid)
                if put_after:
                    self.vcpu_put(v)
        return out

    # ---- machine plugin --------------------------------------------------------------------------------------
    def _kvm_vcpu(self, mvcpu: Any) -> KvmVcpu:
        kv = self._by_peer.get(id(mvcpu))
        if kv is None:
            vm = self._by_key.get(id(mvcpu.vm))
            if vm is None:
                name = getattr(mvcpu.vm, "name", None)
                vm = self.create_vm(name, nvcpus=0, key=mvcpu.vm)
            kv = vm.add_vcpu(mvcpu)
            self._by_peer[id(mvcpu)] = kv
        return kv

    def attach_vcpu(self, vcpu: Any) -> None:
        self._kvm_vcpu(vcpu)

    def cpu_for(self, kv: KvmVcpu) -> int:
        """The physical CPU a machine vCPU's slice runs on: `placement(kv)` or a fixed affinity by order."""
        if self.placement is not None:
            return self.placement(kv) % self.ncpus
        order = list(self._by_peer.values()).index(kv)
        return order % self.ncpus

    def slice_start(self, vcpu: Any) -> None:
        kv = self._kvm_vcpu(vcpu)
        self.vcpu_load(kv, self.cpu_for(kv))

    def slice_end(self, vcpu: Any) -> None:
        kv = self._by_peer.get(id(vcpu))
        if kv is not None:
            self.vcpu_put(kv)

    def kvm_vcpu_of(self, vcpu: Any) -> KvmVcpu | None:
        """The KVM vCPU standing for a machine vCPU."""
        return self._by_peer.get(id(vcpu))

    def vm_of(self, key: Any) -> KvmVm | None:
        """The KVM VM standing for a machine VM (created at its first vCPU)."""
        return self._by_key.get(id(key))

    def kvm_vcpus(self) -> Iterable[KvmVcpu]:
        return list(self._by_peer.values())
