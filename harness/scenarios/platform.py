"""The board every scenario runs on: the machine, KVM, the TLBI trap, the physical SMMU, DMA test devices.

`ScenarioPlatform(policy, vmid_bits, btm=...)` builds, in this order (the order plugins see slices matters):

1. `harness.machine.Machine` (host bus, DVM interconnect, tracer);
2. `harness.host.kvm.Kvm` as a machine plugin (vcpu_load/put around every slice: `vcpu.vmid` is the VMID the
   allocator gives), configured the way the policy needs it (`split` allocator for `split`, a set kept for
   the SMMU for `restricted`);
3. `harness.trap.TlbiTrap` (guest TLBIs decoded with the vCPU's current VMID, broadcast on the interconnect);
4. the physical SMMUv3 model on the host bus at 0x0905_0000, attached to the interconnect (with IDR0.BTM=1 it
   applies broadcasts when the driver left CR2.PTM=0), programmed by `hoststack.SmmuHostDriver`;
5. per guest VM: a DMA test device passed through at IPA 0x0910_0000 (its own StreamID; its DMA goes through
   the SMMU on the host bus) and the scenario port `HostPort` at IPA 0x0911_0000.

Guest programs live in guest_fw/scenarios/ and are built with `harness.build.build_guest` (cached).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from devmodel.dmatest import DMATEST_BASE, DMATEST_SIZE, DmaTestDevice
from devmodel.smmuv3 import translate as _translate  # noqa: F401  (defines the smmu_* trace events)
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.trace import Tracer, define

from ..build import GUEST_FW, build_guest
from ..host.kvm import Kvm
from ..host.vmid_policy import VmidPolicy, make_policy
from ..machine import Machine
from ..trap import TlbiTrap
from .hoststack import AssignedDevice, SmmuHostDriver

__all__ = ["ScenarioPlatform", "HostPort", "guest_elf", "SMMU_PA", "PORT_IPA", "SCENARIO_GUESTS"]

SMMU_PA = 0x0905_0000
PORT_IPA = 0x0911_0000
PORT_SIZE = 0x1000
SCENARIO_GUESTS = GUEST_FW / "scenarios"
GUEST_RAM = 16 << 20

# port commands (guest_fw/scenarios/scn.h)
CMD_ATTACH_NESTED, CMD_REPORT, CMD_YIELD, CMD_DONE = 1, 2, 3, 5
OUT_FRESH, OUT_STALE, OUT_FAULT, OUT_OTHER = 0, 1, 2, 3
OUTCOME_NAMES = {OUT_FRESH: "fresh", OUT_STALE: "stale", OUT_FAULT: "fault", OUT_OTHER: "other"}
EIO, EINVAL = 5, 22

define("scenario_port", ("vm", "cmd", "arg0", "arg1", "arg2", "status"), "a guest's trapped scenario-port command")
define("scenario_report", ("vm", "index", "outcome", "value", "vmid_cpu", "vmid_ste", "rollovers"),
       "a guest reported what one DMA saw (with the VMIDs in force)")


def guest_elf(name: str) -> Path:
    """Build (cached) guest_fw/scenarios/<name>.c with the runtime and scn.h."""
    return build_guest([SCENARIO_GUESTS / f"{name}.c"], include_dirs=[SCENARIO_GUESTS], name=f"scn_{name}").path


class HostPort:
    """The scenario port (MMIO, one per VM): parameters in, reports and requests out; every access traps.

    Offsets (guest_fw/scenarios/scn.h): 0x00 CMD (W), 0x08/0x10/0x18 ARG0-2 (W), 0x20 STATUS (R),
    0x28 GATE (R), 0x30 INV (W: forward one TLBI_NH_VA, TLBI Xt format), 0x100 + 8i PARAM(i) (R)."""

    def __init__(self, name: str, params: list[int], handler: Callable[["HostPort", int, tuple], int],
                 on_inv: Callable[["HostPort", int], int] | None = None, gate: Callable[[], int] = lambda: 0):
        self.name = name
        self.params = list(params)
        self.handler = handler
        self.on_inv = on_inv
        self.gate = gate
        self.args = [0, 0, 0]
        self.status = 0
        self.traps = 0                      # every access is a VM exit to the VMM
        self.inv_traps = 0                  # exits spent forwarding invalidations
        self._inv_pending = False
        self._latch: dict[int, int] = {}

    # Unicorn delivers a 64-bit MMIO access as two 32-bit ones (offset, offset + 4): registers are 64 bits
    # wide, the low half is latched and the access completes (and counts as one trap) with its high half.
    def read(self, offset: int, size: int) -> int:
        reg, hi = offset & ~7, offset & 4
        if not hi:
            self.traps += 1
        val = self._read64(reg, first=not hi)
        return (val >> 32) & 0xFFFF_FFFF if hi else (val if size == 8 else val & 0xFFFF_FFFF)

    def _read64(self, reg: int, first: bool) -> int:
        if reg == 0x20:
            if first and self._inv_pending:  # the CMDQ_CONS poll that waits for the forwarded CMD_SYNC
                self.inv_traps += 1
                self._inv_pending = False
            return self.status
        if reg == 0x28:
            return self.gate()
        i = (reg - 0x100) // 8
        if reg >= 0x100 and i < len(self.params):
            return self.params[i]
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        reg, hi = offset & ~7, offset & 4
        if hi:
            value = (self._latch.get(reg, 0) & 0xFFFF_FFFF) | ((value & 0xFFFF_FFFF) << 32)
        else:
            self.traps += 1
            if size == 4:
                self._latch[reg] = value
                if reg in (0x00, 0x30):       # doorbells fire when the whole 64-bit value is there
                    return
        self._write64(reg, value)

    def _write64(self, reg: int, value: int) -> None:
        if reg in (0x08, 0x10, 0x18):
            self.args[(reg - 0x08) // 8] = value
        elif reg == 0x00:
            self.status = self.handler(self, value, tuple(self.args))
        elif reg == 0x30:
            self.inv_traps += 1             # the CMDQ_PROD write publishing TLBI_NH_VA + CMD_SYNC
            self._inv_pending = True
            self.status = self.on_inv(self, value) if self.on_inv is not None else EIO


class ScenarioPlatform:
    def __init__(self, policy: str, vmid_bits: int = 16, *, btm: bool = True, ncpus: int = 1,
                 tracer: Tracer | None = None, quantum: int = 20_000, overinvalidate_s2: bool = False,
                 smmu_reserved: int | None = None, on_move: Callable | None = None):
        if vmid_bits not in (8, 16):
            raise ValueError(f"VMID width {vmid_bits} (8 or 16)")
        self.policy_name = policy
        self.vmid_bits = vmid_bits
        num = 1 << vmid_bits
        self.machine = m = Machine(tracer=tracer, console=self._console, quantum=quantum,
                                   tcg_buffer_size=8 << 20)
        split = policy == "split"
        reserved = (smmu_reserved if smmu_reserved is not None else num // 16) if policy == "restricted" else 0
        self.kvm = Kvm(vmid_bits, ncpus, interconnect=m.interconnect, tracer=m.tracer, split=split,
                       smmu_reserved=reserved)
        m.add_plugin(self.kvm)
        self.trap = TlbiTrap(m.interconnect, tracer=m.tracer)
        m.add_plugin(self.trap)
        self.features = SmmuFeatures(btm=btm, vmid16=vmid_bits == 16)
        self.smmu = SMMUv3(m.bus, self.features, tracer=m.tracer, name="smmu0")
        if self.smmu.core is not None:
            self.smmu.core.overinvalidate_s2 = overinvalidate_s2
        m.add_device(SMMU_PA, MMIO_SIZE, self.smmu, "smmu0")
        m.interconnect.attach(self.smmu)
        kw: dict[str, Any] = {}
        if on_move is not None:
            kw["on_move"] = on_move
        self.policy: VmidPolicy = make_policy(policy, self.kvm.vmids, vmid_bits, btm=btm, **kw)
        self.driver = SmmuHostDriver(m.bus, self.smmu, self.policy, btm=btm)
        self.devices: dict[str, AssignedDevice] = {}
        self.dmatests: dict[str, DmaTestDevice] = {}
        self.ports: dict[str, HostPort] = {}
        self.output: dict[str, bytearray] = {}
        self.reports: list[dict] = []
        self.attach_errors: dict[str, str] = {}
        self.gate_value = 0

    def _console(self, vm: Any, data: bytes, stream: int) -> None:
        self.output.setdefault(vm.name, bytearray()).extend(data)

    # -- guests --------------------------------------------------------------------------------------------
    def add_guest(self, name: str, program: str, *, sid: int, params: list[int],
                  kvm_first: bool = True, handler: Callable | None = None) -> Any:
        """A VM running guest_fw/scenarios/<program>.c with a passed-through DMA test device (StreamID `sid`).

        `kvm_first`: KVM_DEV_VFIO_FILE_ADD before VFIO_DEVICE_BIND_IOMMUFD (the order that works)."""
        m = self.machine
        vm = m.add_vm(name, ncpus=1, ram_size=GUEST_RAM)
        vm.load(str(guest_elf(program)))
        dev = AssignedDevice(sid, vm)
        kvm_vm = self.kvm.vm_of(vm)
        if kvm_first:
            self.driver.kvm_file_add(dev, kvm_vm)
            self.driver.bind_iommufd(dev)
        else:
            self.driver.bind_iommufd(dev)
            self.driver.kvm_file_add(dev, kvm_vm)
        self.devices[name] = dev
        dmat = DmaTestDevice(m.bus, self.smmu.translate, sid=sid, tracer=m.tracer, name=f"{name}.dmatest")
        vm.add_device(DMATEST_BASE, DMATEST_SIZE, dmat, "dmatest")
        self.dmatests[name] = dmat
        port = HostPort(name, params, handler or self._port_cmd, self._port_inv, gate=lambda: self.gate_value)
        vm.add_device(PORT_IPA, PORT_SIZE, port, "scenario-port")
        self.ports[name] = port
        return vm

    def _port_cmd(self, port: HostPort, cmd: int, args: tuple) -> int:
        vm = self.machine_vm(port.name)
        status = 0
        if cmd == CMD_ATTACH_NESTED:
            status = self.attach_nested(port.name, args[0])
        elif cmd == CMD_REPORT:
            dev = self.devices[port.name]
            rec = dict(vm=port.name, index=args[0], outcome=OUTCOME_NAMES.get(args[1], "other"), value=args[2],
                       vmid_cpu=vm.vcpus[0].vmid, vmid_ste=dev.vmid,
                       rollovers=self.kvm.vmids.rollovers)
            self.reports.append(rec)
            if "scenario_report" in self.machine.tracer.enabled:
                self.machine.tracer.emit("scenario_report", **rec)
        elif cmd == CMD_YIELD:
            self.on_yield(port.name)            # the guest's WFI that follows ends the slice
        elif cmd == CMD_DONE:
            self.gate_value = max(self.gate_value, args[0])
        else:
            status = EINVAL
        if "scenario_port" in self.machine.tracer.enabled:
            self.machine.tracer.emit("scenario_port", vm=port.name, cmd=cmd, arg0=args[0], arg1=args[1],
                                     arg2=args[2], status=status)
        return status

    def on_yield(self, name: str) -> None:
        """Hook for scenarios (called inside the guest's slice, before it ends)."""

    def attach_nested(self, name: str, cd_ipa: int) -> int:
        from ..host.vmid_policy import PolicyError
        try:
            self.driver.attach_nested(self.devices[name], cd_ipa)
        except PolicyError as e:
            self.attach_errors[name] = str(e)
            return EIO
        return 0

    def _port_inv(self, port: HostPort, xt: int) -> int:
        dev = self.devices[port.name]
        if dev.mode != "nested":
            return EINVAL
        va = (xt & ((1 << 44) - 1)) << 12
        self.driver.invalidate_user(dev, xt >> 48, va)
        return 0

    def machine_vm(self, name: str) -> Any:
        return next(vm for vm in self.machine.vms if vm.name == name)

    def run(self, timeout: float = 60.0):
        return self.machine.run(timeout=timeout)

    # -- measurements --------------------------------------------------------------------------------------
    def reports_of(self, name: str) -> list[dict]:
        return [r for r in self.reports if r["vm"] == name]

    def smmu_broadcasts(self) -> int:
        return int(self.smmu.stats.get("btm_applied", 0))

    def over_invalidation(self) -> tuple[int, int]:
        """(broadcasts that reached a stage-2-only context not meant for them, entries they removed)."""
        core = self.smmu.core
        if core is None:
            return 0, 0
        hits = sum(s["over"] for s in core.btm.values())
        inv = core.iotlb.stats()["invalidations"]
        removed = sum(c["removed"] for k, c in inv.items() if k.endswith(":over"))
        return hits, removed
