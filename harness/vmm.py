"""The VMM side of a nested-SMMU VM in one call: host SMMUv3 + host driver + KVM + iommufd, a DMA test device
assigned to the VM (MMIO passed through, DMA through the physical SMMU with its physical StreamID), and the
VM's vSMMU (`harness.vsmmu.VSmmu`), wired in the order QEMU's accelerated vSMMU does it
(`hw/arm/smmuv3-accel.c`; the iommufd calls as Linux Documentation/userspace-api/iommufd.rst describes them):

    KVM_DEV_VFIO_FILE_ADD -> VFIO_DEVICE_BIND_IOMMUFD -> IOAS_ALLOC + IOAS_MAP(guest RAM at its IPA)
    -> HWPT_ALLOC(NEST_PARENT) -> attach (stage 2 only) -> VIOMMU_ALLOC -> VEVENTQ_ALLOC -> vSMMU at IPA
    0x0905_0000 -> VDEVICE_ALLOC(vSID) + abort/bypass nested HWPTs -> attach per the guest's (disabled) vSMMU

    from harness.machine import Machine
    from harness.vmm import setup_nested_vm
    m = Machine()
    vm = m.add_vm("vm0")
    nv = setup_nested_vm(m, vm, policy="shared", btm=False)   # nv.host is reused for a second VM:
    nv2 = setup_nested_vm(m, m.add_vm("vm1"), host=nv.host)
    vm.load(elf); m.run(); nv.vsmmu.cost()

The guest sees its device's vSID when it reads the DMA test device's SID register (the IORT ID mapping of a
real board); the register is read-only for the guest, since a device's StreamID is fixed by the hardware.

The device is bound with its PCIe function controls (`harness.host.pcie.DmaTestFunction`: the host enables ATS
at the attach of a nested HWPT whose vSTE asked for it, and PRI with its I/O page faults) and as a device that
may stall (firmware's `dma-can-stall`). `ats=True` lets the vSMMU offer ATS (guest ATC_INV forwarded);
`iopf=True` allocates an iommufd fault object (IOMMU_FAULT_QUEUE_ALLOC), gives it to every nested HWPT of the
vSMMU (IOMMU_HWPT_FAULT_ID_VALID) and lets the vSMMU offer the host's stall model and, with ATS, PRI;
`httu=True` passes the host's IDR0.HTTU on. The host's features come from `setup_host(features=...)`.

MSIs (a VM with an ITS, harness/its.py): before the device's MSI is enabled the VMM moves iommufd's SW_MSI
window to the vITS translation frame (IOMMU_OPTION_SW_MSI_START/SIZE = 0x0809_0000, one page), so that
`prepare_msi` (the host's `iommu_dma_prepare_msi` when VFIO enables the MSI) maps the physical doorbell (the
host ITS's GITS_TRANSLATER page) at that GPA in the stage-2 parent: the guest's doorbell IOVA, mapped by its
own stage 1 to the vITS GPA, then reaches the physical doorbell through the host's stage 2 (gIOVA -> gDB ->
hDB). The VMM registers the MSI route of the device's physical StreamID to the VM's ITS as its vSID
(`HostIts.route`: KVM_SET_GSI_ROUTING with KVM_MSI_VALID_DEVID + the vector's irqfd), and the vSMMU's own MSIs
carry `SMMU_MSI_DEVID`. `NestedVm.msi_iova` is the doorbell's address in stage 2.

Not modelled: several devices per VM (call `attach_device` on the vSMMU for more), PCI topology, VFIO's
emulation of the MSI capability (the guest programs the device's MSI address and data itself: the DeviceID
from the bus, stage 2 and the routes keep it to its own ITS), VM teardown in reverse order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devmodel.dmatest import DMATEST_BASE, DMATEST_SIZE, DmaTestDevice
from devmodel.dmatest import REGS as DMATEST_REGS
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3
from devmodel.smmuv3.regs import SmmuFeatures

from .host.iommufd import IOMMU_HWPT_ALLOC_NEST_PARENT, MAX_FAULT_GROUPS, Iommufd
from .host.kvm import Kvm, KvmVm
from .host.pcie import DmaTestFunction
from .host.msi import HostIts
from .host.smmu_driver import DOORBELL_BASE, GITS_TRANSLATER, HostMemory, SmmuDriver
from .host.vmid_policy import make_policy
from .its import SMMU_MSI_DEVID, VIRT_GITS_TRANSLATION_PAGE, vm_its
from .vsmmu import VSMMU_IPA, VSmmu, vsmmu_features

__all__ = ["NestedHost", "NestedVm", "AssignedMmio", "setup_host", "setup_nested_vm", "offers_btm", "assign_dma_device", "attach_nest_parent",
           "HOST_SMMU_PA", "DMATEST_IPA", "DEFAULT_VSID", "FIRST_PSID"]

HOST_SMMU_PA = 0x0905_0000         # the physical SMMU on the host bus (host PA)
DMATEST_IPA = DMATEST_BASE         # where the guest sees its assigned DMA test device
DEFAULT_VSID = 0x10
FIRST_PSID = 0x20                  # physical StreamIDs handed to assigned devices: 0x20, 0x21, ...
_SID_OFF = next(r.offset for r in DMATEST_REGS if r.name == "SID")


class AssignedMmio:
    """The guest's window onto an assigned device's MMIO (VFIO region mmap'ed into the VM): every access goes
    to the host device, except the SID register, which reads as the vSID and ignores stores."""

    def __init__(self, dev: Any, vsid: int):
        self.dev, self.vsid = dev, vsid
        self.sid_writes_ignored = 0

    def read(self, offset: int, size: int) -> int:
        if offset == _SID_OFF and size == 4:
            return self.vsid
        return self.dev.read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        if _SID_OFF <= offset < _SID_OFF + 4:
            self.sid_writes_ignored += 1
            return
        self.dev.write(offset, value, size)


@dataclass
class NestedHost:
    """The host half, shared by every VM of the machine."""
    machine: Any
    smmu: SMMUv3
    mem: HostMemory
    doorbell: HostIts
    driver: SmmuDriver
    kvm: Kvm
    policy: Any
    ictx: Iommufd
    btm: bool
    next_psid: int = FIRST_PSID
    next_dma_pa: int = DMATEST_BASE


@dataclass
class NestedVm:
    """Handles of one VM's nested set-up."""
    host: NestedHost
    vm: Any
    kvm_vm: KvmVm
    vsmmu: VSmmu
    dma: DmaTestDevice
    mmio: AssignedMmio
    dev: Any                      # iommufd VfioDevice
    dev_id: int
    ioas: int
    s2_hwpt: int
    viommu: int
    veventq_id: int
    vsid: int
    psid: int
    vmid: int                     # the vIOMMU's VMID (what the physical SMMU tags this VM's entries with)
    fault_id: int = 0             # the iommufd fault object (iopf=True), 0 without one
    fault_queue: Any = None
    its: Any = None               # the VM's ITS its device's MSIs are routed to (None: no MSI set-up)
    msi_iova: int = 0             # the physical doorbell's address in the VM's stage 2 (the vITS GPA)
    extra: dict = field(default_factory=dict)


def setup_host(machine: Any, *, policy: str = "shared", btm: bool = False, vmid_bits: int = 16, ncpus: int = 2,
               features: SmmuFeatures | None = None, policy_kw: dict | None = None, kvm_kw: dict | None = None,
               driver_kw: dict | None = None) -> NestedHost:
    """Physical SMMUv3 at HOST_SMMU_PA on the machine's host bus (IDR0.BTM = `btm`; a DVM participant when
    `btm`), an MSI doorbell, the host driver (BTM used when `btm`: the board says DVM reaches the SMMU), KVM as
    a machine plugin (VMIDs per slice), the VMID `policy` (harness.host.vmid_policy) and an iommufd context."""
    feats = features if features is not None else SmmuFeatures(btm=btm)
    holder: dict[str, SmmuDriver] = {}

    def wired(line: str) -> None:
        drv = holder.get("driver")
        if drv is not None:
            drv.wired_irq(line)

    smmu = SMMUv3(machine.bus, feats, tracer=machine.tracer, name="smmu0", irq=wired)
    machine.add_device(HOST_SMMU_PA, MMIO_SIZE, smmu, "smmu0")
    doorbell = HostIts(machine.tracer)
    machine.add_device(DOORBELL_BASE, HostIts.SIZE, doorbell, "its")
    mem = HostMemory(machine.bus)
    if btm:
        machine.interconnect.attach(smmu)
    kvm = Kvm(vmid_bits, ncpus, interconnect=machine.interconnect, tracer=machine.tracer, **(kvm_kw or {}))
    machine.plugins.insert(0, kvm)          # before plugins that read vcpu.vmid in slice_start
    for v in machine.vcpus:
        kvm.attach_vcpu(v)
    pol = make_policy(policy, kvm.vmids, vmid_bits, btm=btm, **(policy_kw or {}))
    driver = SmmuDriver(machine.bus, HOST_SMMU_PA, mem, dvm_capable=btm, vmid_policy=pol, doorbell=doorbell,
                        tracer=machine.tracer, **(driver_kw or {}))
    holder["driver"] = driver
    machine.add_plugin(driver.iopf)         # the host's iopf workqueue runs between vCPU slices
    ictx = Iommufd(driver, tracer=machine.tracer)
    return NestedHost(machine, smmu, mem, doorbell, driver, kvm, pol, ictx, btm)


def offers_btm(host: NestedHost, kvm_vm: KvmVm, vmid: int, advertise_btm: str) -> bool:
    """Whether the VMM tells the guest its broadcast TLBIs reach the physical SMMU (vSMMU IDR0.BTM,
    virtio-iommu PSTF_F_BTM): "pinned" only when the host uses BTM and the vIOMMU's VMID is the VM's pinned
    KVM VMID; "host" whenever the host uses BTM (a naive VMM); "never"."""
    if advertise_btm not in ("pinned", "host", "never"):
        raise ValueError(f"advertise_btm must be 'pinned', 'host' or 'never', not {advertise_btm!r}")
    kvmids = host.kvm.vmids
    shares_kvm_vmid = kvmids.is_pinned_vmid(vmid) and kvmids.hw_vmid(kvm_vm.vmid_ctx) == vmid
    return host.driver.caps.use_btm and (shares_kvm_vmid if advertise_btm == "pinned" else advertise_btm == "host")


def assign_dma_device(machine: Any, vm: Any, host: NestedHost, psid: int | None, vsid: int,
                  ipa: int) -> tuple[int, DmaTestDevice, AssignedMmio]:
    """A DMA test device on the host bus (physical StreamID `psid`, the next free one by default), its MMIO
    passed through into `vm` at `ipa`."""
    if psid is None:
        psid = host.next_psid
        host.next_psid += 1
    dma = DmaTestDevice(machine.bus, host.smmu.translate, sid=psid, tracer=machine.tracer,
                        name=f"{vm.name}.dmatest")
    machine.add_device(host.next_dma_pa, DMATEST_SIZE, dma, f"{vm.name}.dmatest")
    host.next_dma_pa += DMATEST_SIZE
    mmio = AssignedMmio(dma, vsid)
    vm.add_device(ipa, DMATEST_SIZE, mmio, "dmatest")
    return psid, dma, mmio


def attach_nest_parent(host: NestedHost, vm: Any, psid: int, dma: DmaTestDevice, kvm_before_bind: bool
                       ) -> tuple[KvmVm, Any, int, int, int]:
    """The VMM's half of assigning the device at `psid` to `vm` whatever the vIOMMU: the VM's KVM VM (its
    first vCPU attached), the device's cdev opened and bound (KVM_DEV_VFIO_FILE_ADD before the bind, or after
    it with `kvm_before_bind=False`), an IOAS mapping guest RAM at its IPA and the nest-parent HWPT on it (the
    VM's stage 2), the device attached to it (boot bypass). (kvm_vm, dev, dev_id, ioas, s2 HWPT)."""
    ictx = host.ictx
    if vm.vcpus:
        host.kvm.attach_vcpu(vm.vcpus[0])
    kvm_vm = host.kvm.vm_of(vm)
    if kvm_vm is None:
        kvm_vm = host.kvm.create_vm(vm.name, nvcpus=0, key=vm)
    dev = ictx.open_device(psid, f"{vm.name}.dmatest", pcie=DmaTestFunction(dma), can_stall=True)
    if kvm_before_bind:
        ictx.kvm_dev_vfio_file_add(kvm_vm, dev)
    dev_id = ictx.bind(dev)
    if not kvm_before_bind:
        ictx.kvm_dev_vfio_file_add(kvm_vm, dev)
    ioas = ictx.ioas_alloc()
    ictx.ioas_map(ioas, length=vm.ram.size, pa=vm.ram_pa, iova=vm.ram_ipa)
    s2 = ictx.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    ictx.device_attach(dev_id, s2)
    return kvm_vm, dev, dev_id, ioas, s2


def setup_nested_vm(machine: Any, vm: Any, host: NestedHost | None = None, *, policy: str = "shared",
                    btm: bool = False, vsid: int = DEFAULT_VSID, psid: int | None = None,
                    kvm_before_bind: bool = True, batch: bool = False, mask_ste: bool = False,
                    vsmmu_ipa: int = VSMMU_IPA, dmatest_ipa: int = DMATEST_IPA, veventq_depth: int = 64,
                    advertise_btm: str = "pinned", ats: bool = False, iopf: bool = False, httu: bool = False,
                    fault_depth: int = MAX_FAULT_GROUPS, its: Any = None, **host_kw: Any) -> NestedVm:
    """Give `vm` a vSMMU and an assigned DMA test device (see the module docstring). `host` is reused when
    given (its policy/btm win), else created with `setup_host(machine, policy=, btm=, **host_kw)`.
    `kvm_before_bind=False` does bind before KVM_DEV_VFIO_FILE_ADD: with a policy that needs the VM's pinned
    VMID, VIOMMU_ALLOC then fails with ENODEV (an `IommufdError` raised from here).
    `advertise_btm` decides the vSMMU's IDR0.BTM: "pinned" (default) only when the host uses BTM and the
    vIOMMU's VMID is the VM's pinned KVM VMID (the guest's broadcasts then really hit its entries); "host"
    whenever the host uses BTM, whatever the VMID (what a naive VMM does: the guest then relies on broadcasts
    that carry its KVM VMID while the SMMU tags its entries with the vIOMMU's); "never". `ats`, `iopf`,
    `httu`, `fault_depth`: the module docstring. `its`: the ITS the device's MSIs go to (default: the VM's
    own, `harness.its.vm_its`; a VM without one, a GICv2 VM, gets no MSI set-up)."""
    if advertise_btm not in ("pinned", "host", "never"):
        raise ValueError(f"advertise_btm must be 'pinned', 'host' or 'never', not {advertise_btm!r}")
    if host is None:
        host = setup_host(machine, policy=policy, btm=btm, **host_kw)
    ictx = host.ictx
    psid, dma, mmio = assign_dma_device(machine, vm, host, psid, vsid, dmatest_ipa)
    kvm_vm, dev, dev_id, ioas, s2 = attach_nest_parent(host, vm, psid, dma, kvm_before_bind)
    viommu = ictx.viommu_alloc(dev_id, s2)
    vmid = ictx.viommu_vmid(viommu)
    q_id, q = ictx.veventq_alloc(viommu, depth=veventq_depth)
    fault_id, fq = ictx.fault_queue_alloc(max_groups=fault_depth) if iopf else (0, None)
    feats = vsmmu_features(host.driver.caps, btm=offers_btm(host, kvm_vm, vmid, advertise_btm), ats=ats, iopf=iopf,
                           httu=httu)
    vs = VSmmu(vm, ictx, viommu, veventq=q, features=feats, tracer=machine.tracer, name=f"{vm.name}.vsmmu",
               batch=batch, mask_ste=mask_ste, fault_queue=fq, fault_id=fault_id)
    vm.add_device(vsmmu_ipa, MMIO_SIZE, vs, "vsmmu")
    vs.attach_device(vsid, dev_id)
    machine.add_plugin(vs)
    its = vm_its(vm) if its is None else its
    msi_iova = _wire_msi(host, vm, its, vs, dev_id, psid, vsid) if its is not None else 0
    return NestedVm(host, vm, kvm_vm, vs, dma, mmio, dev, dev_id, ioas, s2, viommu, q_id, vsid, psid, vmid,
                    fault_id, fq, its, msi_iova)


def _wire_msi(host: NestedHost, vm: Any, its: Any, vs: VSmmu, dev_id: int, psid: int, vsid: int) -> int:
    """The device's MSI as a VMM sets it up (module docstring): the SW_MSI window at the vITS translation frame,
    the physical doorbell mapped there when the MSI is enabled, the route psid -> (VM's ITS, vsid); the vSMMU's
    MSIs carry SMMU_MSI_DEVID. Returns the doorbell's IOVA in stage 2."""
    ictx = host.ictx
    window = (VIRT_GITS_TRANSLATION_PAGE, 0x1000)
    if ictx.sw_msi != window:                   # one window per iommufd context: the first VM's VMM sets it
        ictx.set_sw_msi(*window)
    iova = ictx.prepare_msi(dev_id, DOORBELL_BASE + GITS_TRANSLATER)
    host.doorbell.route(psid, its, vsid, vm.name)
    vs.msi_requester = SMMU_MSI_DEVID
    return iova
