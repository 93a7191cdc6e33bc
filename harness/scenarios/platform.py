"""The board every scenario runs on: the machine, the real host stack (KVM, the host SMMUv3 driver, iommufd and,
for guests that drive their own vSMMU, the VMM of `harness/vmm.py`), the TLBI trap and the DMA test devices.

`ScenarioPlatform(policy, vmid_bits, btm=...)` builds, in this order (the order plugins see slices matters):

1. `harness.machine.Machine` (host bus, DVM interconnect, tracer);
2. `harness.vmm.setup_host`: the physical SMMUv3 model on the host bus at 0x0905_0000 (IDR0.BTM = `btm`, a DVM
   participant when `btm`), the MSI doorbell, host memory, `harness.host.kvm.Kvm` inserted first among the
   machine plugins (vcpu_load/put around every slice: `vcpu.vmid` is the VMID the allocator gives), configured
   the way the policy needs it (`split` allocator for `split`, a set kept for the SMMU for `restricted`), the
   VMID policy, the host driver `harness.host.smmu_driver.SmmuDriver` (CR2.PTM=0 when `btm`: it takes part in
   broadcast TLB maintenance) and an `harness.host.iommufd.Iommufd` context;
3. `harness.trap.TlbiTrap` (guest TLBIs decoded with the vCPU's current VMID, broadcast on the interconnect);
4. per guest VM the scenario port `HostPort` at IPA 0x0911_0000 and an assigned DMA test device (its own
   physical StreamID on the host bus, its DMA through the physical SMMU, its MMIO passed through at IPA
   0x0910_0000), assigned in one of two ways:

   * `add_guest` (the guest has no vSMMU; the VMM drives iommufd itself): before the guest starts,
     `KVM_DEV_VFIO_FILE_ADD` and `VFIO_DEVICE_BIND_IOMMUFD` (in the order asked for), `IOAS_ALLOC`, `IOAS_MAP`
     of the VM's RAM at its IPA and a nest-parent `HWPT_ALLOC`; the device stays blocked (abort STE) until the
     scenario attaches it: `attach_s2` (the nest parent attached directly: a stage-2-only STE whose VMID is
     the policy's `s2_vmid`) or `attach_nested` (`VIOMMU_ALLOC` - the VMID is the policy's `nested_vmid` -,
     `VDEVICE_ALLOC`, a nested `HWPT_ALLOC` from a stage-1 vSTE whose S1ContextPtr is the guest's CD table IPA,
     attach). A guest asks for `attach_nested` with the port's ATTACH_NESTED command, a hypercall to the VMM
     standing for what a vSMMU's CFGI_STE would trigger; the VM has run by then, so KVM has given it a VMID
     (Linux allocates it at the first vcpu_load). The port's INV doorbell is a paravirtual invalidation: the
     VMM issues `IOMMU_HWPT_INVALIDATE` with the guest's TLBI_NH_VA.
   * `add_vsmmu_guest` (the guest drives its own vSMMU with guest_fw/lib/vsmmu.c): `harness.vmm.setup_nested_vm`
     after the VM ran once (the device is hot-plugged into a booted VM, which has a KVM VMID).

Guest programs live in guest_fw/scenarios/ and are built with `harness.build.build_guest` (cached).
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from devmodel.dmatest import DMATEST_BASE, DMATEST_SIZE, DmaTestDevice
from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.trace import Tracer, define

from ..build import GUEST_FW, RUNTIME_DIR, build_guest
from ..host.iommufd import IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_ARM_SMMUV3, IommufdError
from ..machine import Machine
from ..trace.session import for_machine
from ..trap import TlbiTrap
from ..vmm import DEFAULT_VSID, AssignedMmio, NestedVm, setup_host, setup_nested_vm

__all__ = ["ScenarioPlatform", "HostPort", "Assigned", "guest_elf", "vsmmu_guest_elf", "SMMU_PA", "PORT_IPA",
           "SCENARIO_GUESTS", "errno_message", "RECOVERABLE_FEATURES"]

SMMU_PA = 0x0905_0000
PORT_IPA = 0x0911_0000
PORT_SIZE = 0x1000
SCENARIO_GUESTS = GUEST_FW / "scenarios"
GUEST_RAM = 16 << 20
#: the physical SMMU of the guest-SVA scenarios (sva-iopf, sva-ats, sva-dirty): stalls (IDR0.STALL_MODEL 0b00),
#: ATS with PRI (a 2^6-entry PRI queue at most) and HTTU access + dirty (IDR0.HTTU 0b10)
RECOVERABLE_FEATURES = dict(stall_model=0, ats=True, pri=True, priqs=6, httu=2)

# port commands (guest_fw/scenarios/scn.h)
CMD_ATTACH_NESTED, CMD_REPORT, CMD_YIELD, CMD_DONE = 1, 2, 3, 5
OUT_FRESH, OUT_STALE, OUT_FAULT, OUT_OTHER = 0, 1, 2, 3
OUTCOME_NAMES = {OUT_FRESH: "fresh", OUT_STALE: "stale", OUT_FAULT: "fault", OUT_OTHER: "other"}
EIO, EINVAL = _errno.EIO, _errno.EINVAL

define("scenario_port", ("vm", "cmd", "arg0", "arg1", "arg2", "status"), "a guest's trapped scenario-port command")
define("scenario_report", ("vm", "index", "outcome", "value", "vmid_cpu", "vmid_ste", "rollovers"),
       "a guest reported what one DMA saw (with the VMIDs in force: the vCPU's and the device's STE's)")


def errno_message(e: OSError) -> str:
    """A refused ioctl as a kernel developer reads it, `-ENODEV: reason`, not Python's `[Errno 19] reason`."""
    name = _errno.errorcode.get(e.errno) if e.errno else None
    return f"-{name}: {e.strerror}" if name else str(e.strerror or e)


def guest_elf(name: str) -> Path:
    """Build (cached) guest_fw/scenarios/<name>.c with the runtime and scn.h."""
    return build_guest([SCENARIO_GUESTS / f"{name}.c"], include_dirs=[SCENARIO_GUESTS], name=f"scn_{name}").path


def vsmmu_guest_elf(name: str) -> Path:
    """Build (cached) guest_fw/scenarios/<name>.c linked with the guest vSMMU driver and page tables."""
    return build_guest([SCENARIO_GUESTS / f"{name}.c", RUNTIME_DIR / "vsmmu.c", RUNTIME_DIR / "pgtable.c"],
                       include_dirs=[SCENARIO_GUESTS], name=f"scn_{name}").path


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
        self.inv_host_cmds = 0              # commands (CMD_SYNCs included) the host driver issued for them
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


@dataclass(eq=False)
class Assigned:
    """A DMA test device assigned to a VM through VFIO/iommufd: the iommufd handles the VMM holds."""
    name: str
    vm: Any
    dma: DmaTestDevice
    psid: int
    vsid: int
    dev: Any = None                  # iommufd VfioDevice
    dev_id: int = 0
    ioas: int = 0
    s2_hwpt: int = 0                 # the nest-parent HWPT (stage 2 of the VM's RAM)
    viommu: int = 0
    vdevice: int = 0
    nested_hwpt: int = 0
    mode: str = "blocked"            # blocked | s2 | nested | vsmmu
    nested_vm: NestedVm | None = None
    vmid: int | None = None          # the VMID in the device's STE (S2VMID), read back after each attach


class ScenarioPlatform:
    def __init__(self, policy: str, vmid_bits: int = 16, *, btm: bool = True, ncpus: int = 1,
                 tracer: Tracer | None = None, quantum: int = 20_000, overinvalidate_s2: bool = False,
                 smmu_reserved: int | None = None, features: dict | None = None):
        if vmid_bits not in (8, 16):
            raise ValueError(f"VMID width {vmid_bits} (8 or 16)")
        self.policy_name = policy
        self.vmid_bits = vmid_bits
        num = 1 << vmid_bits
        self.machine = m = Machine(tracer=tracer, console=self._console, quantum=quantum,
                                   tcg_buffer_size=8 << 20)
        reserved = (smmu_reserved if smmu_reserved is not None else num // 16) if policy == "restricted" else 0
        self.host = setup_host(m, policy=policy, btm=btm, vmid_bits=vmid_bits, ncpus=ncpus,
                               features=SmmuFeatures(btm=btm, vmid16=vmid_bits == 16, **(features or {})),
                               kvm_kw=dict(split=policy == "split", smmu_reserved=reserved))
        self.kvm = self.host.kvm
        self.policy = self.host.policy
        self.smmu = self.host.smmu
        self.driver = self.host.driver
        self.ictx = self.host.ictx
        if self.smmu.core is not None:
            self.smmu.core.overinvalidate_s2 = overinvalidate_s2
        self.trap = TlbiTrap(m.interconnect, tracer=m.tracer)
        m.add_plugin(self.trap)
        for sink in m.tracer.sinks:          # trace files opened before this machine: PC/vCPU annotation
            if hasattr(sink, "bind"):
                sink.bind(where=self.trap.where, **for_machine(m))
        self.devices: dict[str, Assigned] = {}
        self.ports: dict[str, HostPort] = {}
        self.output: dict[str, bytearray] = {}
        self.reports: list[dict] = []
        self.attach_errors: dict[str, str] = {}     # VM -> why the host refused its device set-up or attach
        self.not_started: set[str] = set()           # VMs whose set-up failed before they could start
        self.snapshots: dict[str, dict] = {}
        self.gate_value = 0

    def _console(self, vm: Any, data: bytes, stream: int) -> None:
        self.output.setdefault(vm.name, bytearray()).extend(data)

    # -- guests --------------------------------------------------------------------------------------------
    def _new_vm(self, name: str, elf: Path, params: list[int], handler: Callable | None) -> Any:
        vm = self.machine.add_vm(name, ncpus=1, ram_size=GUEST_RAM)
        vm.load(str(elf))
        port = HostPort(name, params, handler or self._port_cmd, self._port_inv, gate=lambda: self.gate_value)
        vm.add_device(PORT_IPA, PORT_SIZE, port, "scenario-port")
        self.ports[name] = port
        return vm

    def add_guest(self, name: str, program: str, *, params: list[int], kvm_first: bool = True,
                  handler: Callable | None = None, vsid: int = DEFAULT_VSID) -> Any:
        """A VM running guest_fw/scenarios/<program>.c with an assigned DMA test device, bound to iommufd with
        its nest-parent HWPT allocated and DMA blocked (module docstring). `kvm_first`: KVM_DEV_VFIO_FILE_ADD
        before VFIO_DEVICE_BIND_IOMMUFD (the order that works)."""
        vm = self._new_vm(name, guest_elf(program), params, handler)
        host, ictx, m = self.host, self.ictx, self.machine
        psid = host.next_psid
        host.next_psid += 1
        dma = DmaTestDevice(m.bus, self.smmu.translate, sid=psid, tracer=m.tracer, name=f"{name}.dmatest")
        m.add_device(host.next_dma_pa, DMATEST_SIZE, dma, f"{name}.dmatest")
        host.next_dma_pa += DMATEST_SIZE
        vm.add_device(DMATEST_BASE, DMATEST_SIZE, AssignedMmio(dma, vsid), "dmatest")
        a = Assigned(name, vm, dma, psid, vsid)
        self.devices[name] = a
        kvm_vm = self.kvm.vm_of(vm)
        a.dev = ictx.open_device(psid, f"{name}.dmatest")
        if kvm_first:
            ictx.kvm_dev_vfio_file_add(kvm_vm, a.dev)
            a.dev_id = ictx.bind(a.dev)
        else:
            a.dev_id = ictx.bind(a.dev)
            ictx.kvm_dev_vfio_file_add(kvm_vm, a.dev)
        a.ioas = ictx.ioas_alloc()
        ictx.ioas_map(a.ioas, length=vm.ram.size, pa=vm.ram_pa, iova=vm.ram_ipa)
        a.s2_hwpt = ictx.hwpt_alloc(a.dev_id, a.ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
        return vm

    def add_vsmmu_guest(self, name: str, program: str, *, params: list[int], kvm_first: bool = True,
                        advertise_btm: str = "pinned", handler: Callable | None = None, **vmm_kw: Any) -> Any:
        """A VM running guest_fw/scenarios/<program>.c with guest_fw/lib/vsmmu.c: `harness.vmm.setup_nested_vm`
        gives it a vSMMU and an assigned DMA test device (`advertise_btm`: see `setup_nested_vm`). The VM has
        run once before (KVM gave it a VMID at its first vcpu_load), as for a device hot-plugged into a booted
        VM. A set-up the host refuses is recorded in `attach_errors` and the VM never starts. `vmm_kw` go to
        `setup_nested_vm` (`ats`, `iopf`, `httu`: what the vSMMU offers)."""
        vm = self._new_vm(name, vsmmu_guest_elf(program), params, handler)
        kv = self.kvm.vm_of(vm)
        self.kvm.vcpu_load(kv.vcpus[0], 0)
        self.kvm.vcpu_put(kv.vcpus[0])
        try:
            nv = setup_nested_vm(self.machine, vm, self.host, kvm_before_bind=kvm_first, advertise_btm=advertise_btm,
                                 **vmm_kw)
        except IommufdError as e:
            self.attach_errors[name] = errno_message(e)
            self.not_started.add(name)
            return vm
        a = Assigned(name, vm, nv.dma, nv.psid, nv.vsid, nv.dev, nv.dev_id, nv.ioas, nv.s2_hwpt, nv.viommu,
                     mode="vsmmu", nested_vm=nv)
        self.devices[name] = a
        self._read_vmid(a)
        return vm

    # -- the VMM's iommufd calls ------------------------------------------------------------------------------
    def _read_vmid(self, a: Assigned) -> int | None:
        """The S2VMID of the device's STE as the host driver wrote it (None: no stage 2 in the STE)."""
        ste = self.driver.read_ste(a.dev.master)
        a.vmid = ste.s2vmid if ste.v and ste.config in (stemod.CONFIG_S2, stemod.CONFIG_NESTED) else None
        return a.vmid

    def attach_s2(self, name: str) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT of the nest-parent HWPT: a stage-2-only STE (IOVA = IPA); the driver
        takes the domain's VMID from the policy (`s2_vmid`) at this first attach. Returns that VMID."""
        a = self.devices[name]
        self.ictx.device_attach(a.dev_id, a.s2_hwpt)
        a.mode = "s2"
        return self._read_vmid(a)

    def attach_nested(self, name: str, cd_ipa: int, s1cdmax: int = 0) -> int:
        """IOMMU_VIOMMU_ALLOC (VMID: the policy's `nested_vmid` of the KVM the device had at bind),
        IOMMU_VDEVICE_ALLOC, nested IOMMU_HWPT_ALLOC from a stage-1 vSTE (S1ContextPtr = `cd_ipa`, S1CDMax =
        `s1cdmax`, cacheable walks), attach. Returns 0, or the errno of the refused call (recorded in `attach_errors`)."""
        a = self.devices[name]
        ictx = self.ictx
        vste = stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_S1, s1fmt=0, s1contextptr=cd_ipa, s1cdmax=s1cdmax,
                                        s1cir=1, s1cor=1, s1csh=3))
        try:
            if not a.viommu:
                a.viommu = ictx.viommu_alloc(a.dev_id, a.s2_hwpt)
                a.vdevice = ictx.vdevice_alloc(a.viommu, a.dev_id, a.vsid)
            hwpt = ictx.hwpt_alloc(a.dev_id, a.viommu, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=vste[:16])
            ictx.device_attach(a.dev_id, hwpt)
        except IommufdError as e:
            self.attach_errors[name] = errno_message(e)
            return e.errno or EIO
        if a.nested_hwpt:
            ictx.destroy(a.nested_hwpt)
        a.nested_hwpt, a.mode = hwpt, "nested"
        self._read_vmid(a)
        return 0

    def _port_inv(self, port: HostPort, xt: int) -> int:
        """The paravirtual invalidation: IOMMU_HWPT_INVALIDATE with the guest's TLBI_NH_VA (VMID 0: the kernel
        puts the vIOMMU's), as a vSMMU would after the guest's TLBI_NH_VA + CMD_SYNC."""
        a = self.devices.get(port.name)
        if a is None or a.mode != "nested":
            return EINVAL
        raw = cmds.encode("TLBI_NH_VA", vmid=0, asid=xt >> 48, addr=(xt & ((1 << 44) - 1)) << 12, leaf=1)
        st = self.driver.stats
        before = st["cmds"] + st["syncs"]
        try:
            self.ictx.hwpt_invalidate(a.viommu, [raw])
        except IommufdError as e:
            return e.errno or EIO
        finally:
            port.inv_host_cmds += st["cmds"] + st["syncs"] - before
        return 0

    # -- the port ------------------------------------------------------------------------------------------------
    def _port_cmd(self, port: HostPort, cmd: int, args: tuple) -> int:
        vm = self.machine_vm(port.name)
        status = 0
        a = self.devices.get(port.name)
        if cmd == CMD_ATTACH_NESTED:
            ok = a is not None and a.mode != "vsmmu" and args[1] < 32
            status = self.attach_nested(port.name, args[0], args[1]) if ok else EINVAL
        elif cmd == CMD_REPORT:
            if a is not None and a.nested_vm is not None and args[0] == 0 and port.name not in self.snapshots:
                self.snapshots[port.name] = a.nested_vm.vsmmu.snapshot()   # set-up done: count the rounds only
            rec = dict(vm=port.name, index=args[0], outcome=OUTCOME_NAMES.get(args[1], "other"), value=args[2],
                       vmid_cpu=vm.vcpus[0].vmid, vmid_ste=self._read_vmid(a) if a is not None else None,
                       rollovers=self.kvm.vmids.rollovers)
            self.reports.append(rec)
            if "scenario_report" in self.machine.tracer.enabled:
                self.machine.tracer.emit("scenario_report", **rec)
        elif cmd == CMD_YIELD:
            self.on_yield(port.name)            # the guest's WFI that follows ends the slice ...
            for v in vm.vcpus:                  # ... and the host wakes it again (a KVM vcpu kick)
                self.machine.scheduler.kick(v)
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

    def machine_vm(self, name: str) -> Any:
        return next(vm for vm in self.machine.vms if vm.name == name)

    def run(self, timeout: float = 60.0):
        if self.not_started:
            from ..exits import Kind, Outcome          # the VMM could not set a VM up: nothing starts
            why = "; ".join(self.attach_errors[n] for n in sorted(self.not_started))
            return Outcome(Kind.EXIT, "VMM set-up failed: " + why, 125)
        return self.machine.run(timeout=timeout)

    # -- measurements --------------------------------------------------------------------------------------
    def reports_of(self, name: str) -> list[dict]:
        return [r for r in self.reports if r["vm"] == name]

    def vsmmu_cost(self, name: str) -> dict[str, float]:
        """The vSMMU's counters since the guest's first round (see `VSmmu.cost`); {} without a vSMMU."""
        a = self.devices.get(name)
        if a is None or a.nested_vm is None:
            return {}
        return a.nested_vm.vsmmu.cost(self.snapshots.get(name))

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
