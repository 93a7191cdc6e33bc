"""The scenario board on the real VMM stack: `harness.vmm.setup_host` / `setup_nested_vm` (host SMMU driver
`harness/host/smmu_driver.py`, iommufd `harness/host/iommufd.py`, the VMM's vSMMU `harness/vsmmu.py`) instead of
`hoststack.py`'s stand-in.

The guest (guest_fw/scenarios/sva_vsmmu.c, linked with guest_fw/lib/vsmmu.c) drives its vSMMU like a Linux
guest: probe, stream table, CFGI_STE of a stage-1 vSTE (the VMM turns it into a nested IOMMU_HWPT_ALLOC), and -
unless the vSMMU advertises BTM - TLBI_NH_VA + CMD_SYNC on the vSMMU's command queue after each CPU TLBI. The
vSMMU's own accounting (`VSmmu.cost()`) gives VM exits and host commands per guest invalidation.

Interface: the subset of `ScenarioPlatform` that `sva_btm.SvaRun` uses (`machine`, `kvm`, `policy`, `smmu`,
`ports`, `devices[name].vmid`, `attach_errors`, `reports_of`, `run`, `smmu_broadcasts`, `on_yield`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devmodel.smmuv3 import translate as _translate  # noqa: F401  (defines the smmu_* trace events)
from devmodel.trace import Tracer

from ..build import RUNTIME_DIR, build_guest
from ..machine import Machine
from ..trap import TlbiTrap
from .platform import GUEST_RAM, PORT_IPA, PORT_SIZE, SCENARIO_GUESTS, HostPort, ScenarioPlatform

__all__ = ["IommufdPlatform"]


@dataclass
class _Dev:
    vmid: int | None
    nested: Any = None            # harness.vmm.NestedVm


class IommufdPlatform(ScenarioPlatform):
    def __init__(self, policy: str, vmid_bits: int = 16, *, btm: bool = True, ncpus: int = 1,
                 tracer: Tracer | None = None, quantum: int = 20_000, smmu_reserved: int | None = None):
        from ..vmm import setup_host
        self.policy_name = policy
        self.vmid_bits = vmid_bits
        num = 1 << vmid_bits
        self.machine = m = Machine(tracer=tracer, console=self._console, quantum=quantum,
                                   tcg_buffer_size=8 << 20)
        reserved = (smmu_reserved if smmu_reserved is not None else num // 16) if policy == "restricted" else 0
        self.host = setup_host(m, policy=policy, btm=btm, vmid_bits=vmid_bits, ncpus=ncpus,
                               kvm_kw=dict(split=policy == "split", smmu_reserved=reserved))
        self.kvm = self.host.kvm
        self.policy = self.host.policy
        self.smmu = self.host.smmu
        self.trap = TlbiTrap(m.interconnect, tracer=m.tracer)
        m.add_plugin(self.trap)
        self.devices: dict[str, Any] = {}
        self.dmatests: dict[str, Any] = {}
        self.ports: dict[str, HostPort] = {}
        self.output: dict[str, bytearray] = {}
        self.reports: list[dict] = []
        self.attach_errors: dict[str, str] = {}
        self.gate_value = 0
        self.nested: dict[str, Any] = {}
        self.snapshots: dict[str, dict] = {}

    def add_guest(self, name: str, program: str, *, sid: int = 0, params: list[int],
                  kvm_first: bool = True, handler: Any = None) -> Any:
        from ..host.iommufd import IommufdError
        from ..vmm import setup_nested_vm
        m = self.machine
        vm = m.add_vm(name, ncpus=1, ram_size=GUEST_RAM)
        elf = build_guest([SCENARIO_GUESTS / f"{program}.c", RUNTIME_DIR / "vsmmu.c", RUNTIME_DIR / "pgtable.c"],
                          include_dirs=[SCENARIO_GUESTS], name=f"scn_{program}").path
        vm.load(str(elf))
        port = HostPort(name, params, handler or self._port_cmd, None, gate=lambda: self.gate_value)
        vm.add_device(PORT_IPA, PORT_SIZE, port, "scenario-port")
        self.ports[name] = port
        # The VM has booted (run once: KVM gave it a VMID) before the VMM hot-plugs the device.
        kv = self.kvm.vm_of(vm)
        self.kvm.vcpu_load(kv.vcpus[0], 0)
        self.kvm.vcpu_put(kv.vcpus[0])
        try:
            nv = setup_nested_vm(m, vm, self.host, kvm_before_bind=kvm_first)
        except IommufdError as e:
            self.attach_errors[name] = str(e)
            self.devices[name] = _Dev(None)
            return vm
        self.nested[name] = nv
        self.devices[name] = _Dev(nv.vmid, nv)
        self.dmatests[name] = nv.dma
        return vm

    def _port_cmd(self, port: HostPort, cmd: int, args: tuple) -> int:
        nv = self.nested.get(port.name)
        if nv is not None and cmd == 2 and args[0] == 0 and port.name not in self.snapshots:
            self.snapshots[port.name] = nv.vsmmu.snapshot()      # set-up done: count the rounds only
        return super()._port_cmd(port, cmd, args)

    def vsmmu_cost(self, name: str) -> dict[str, float]:
        """The vSMMU's counters since the guest's first round (see `VSmmu.cost`)."""
        nv = self.nested.get(name)
        if nv is None:
            return {}
        return nv.vsmmu.cost(self.snapshots.get(name))

    def run(self, timeout: float = 60.0):
        if self.attach_errors:                  # the VMM could not set the VM up: it never starts
            from ..exits import Kind, Outcome
            return Outcome(Kind.EXIT, "VMM set-up failed: " + "; ".join(self.attach_errors.values()), 125)
        return super().run(timeout)

    def smmu_broadcasts(self) -> int:
        return int(self.smmu.stats.get("btm_applied", 0))
