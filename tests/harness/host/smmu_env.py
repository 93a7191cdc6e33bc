"""Test board for the host SMMU driver and iommufd: a host bus with the SMMUv3 model, an MSI doorbell, the
driver's host memory, a DMA test device, and guests (RAM at a host PA, the same RAM at IPA 0x4000_0000, a
KVM VM). No Unicorn: guest-side tables are written through the guest's IPA bus, as guest code would."""
from __future__ import annotations

from devmodel.bus import Bus
from devmodel.dmatest import CMD_READ64, CMD_WRITE64, DMATEST_BASE, DMATEST_SIZE, DmaTestDevice
from devmodel.pagetable import PageAllocator, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.trace import ListSink, Tracer
from harness.host.iommufd import IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_ARM_SMMUV3, Iommufd
from harness.host.kvm import Kvm
from harness.host.smmu_driver import DOORBELL_BASE, HostMemory, MsiDoorbell, SmmuDriver
from harness.host.vmid_policy import make_policy

SMMU_BASE = 0x0905_0000
RAM_IPA = 0x4000_0000
GUEST_RAM = 16 << 20
IOVA = 0x7_0000_0000


class Guest:
    """A VM as the host sees it: RAM at `pa` (host bus) and at `ipa` (its own bus), a KVM VM."""

    def __init__(self, board: "Board", name: str, pa: int, size: int = GUEST_RAM):
        self.name, self.pa, self.size, self.ipa_base = name, pa, size, RAM_IPA
        self.ram = board.bus.add_ram(pa, size, f"{name}.ram")
        self.ipa = Bus()
        self.ipa.add_ram(RAM_IPA, size, "ram", self.ram)
        self.kvm_vm = board.kvm.create_vm(name) if board.kvm is not None else None
        # guest page-table/CD pool: the top 4 MiB of its RAM (IPAs)
        self.alloc = PageAllocator(self.ipa, RAM_IPA + size - (4 << 20), 4 << 20)

    def run_once(self, board: "Board", cpu: int = 0) -> int:
        """One vCPU slice (gives the VM a KVM VMID)."""
        v = board.kvm.vcpu_load(self.kvm_vm.vcpus[0], cpu)
        board.kvm.vcpu_put(self.kvm_vm.vcpus[0])
        return v

    def s1_tables(self, ias: int = 48) -> PageTableBuilder:
        return PageTableBuilder(self.ipa, self.alloc, granule=4096, stage=1, ias=ias)

    def write_cd(self, b: PageTableBuilder, asid: int, at_ipa: int | None = None, **kw) -> int:
        """A guest CD for `b` (in guest RAM unless `at_ipa`); returns its IPA."""
        ipa = self.alloc(64, 64) if at_ipa is None else at_ipa
        cd = CD.Cd(v=1, aa64=1, t0sz=b.tsz, tg0=0, ir0=1, or0=1, sh0=3, epd1=1, tg1=2, ips=5, asid=asid,
                   r=1, a=1, ttb0=b.ttb, **kw)
        self.ipa.write_bytes(ipa, CD.encode(cd))
        return ipa


def vste(cd_ipa: int, config: int = S.CONFIG_S1, **kw) -> tuple[int, int]:
    """A guest STE's words 0 and 1 (what QEMU passes in struct iommu_hwpt_arm_smmuv3)."""
    raw = S.encode(S.Ste(v=1, config=config, s1contextptr=cd_ipa, **kw))
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")


class Board:
    def __init__(self, features: SmmuFeatures = SmmuFeatures(), *, policy: str = "private", vmid_bits: int = 16,
                 kvm: bool = True, ncpus: int = 2, smmu_reserved: int = 0, split: bool = False,
                 policy_kw: dict | None = None, msi_doorbell: bool = True, connect_irq: bool = True,
                 trace: bool = True, **drv_kw):
        self.bus = Bus()
        self.sink = ListSink()
        self.tracer = Tracer(sinks=[self.sink])
        if trace:
            self.tracer.enable_all()
        self.wired: list[str] = []
        self.connect_irq = connect_irq
        self.smmu = SMMUv3(self.bus, features, tracer=self.tracer, irq=self._wired)
        self.bus.add_device(SMMU_BASE, MMIO_SIZE, self.smmu, "smmu0")
        self.doorbell = MsiDoorbell() if msi_doorbell else None
        if self.doorbell is not None:
            self.bus.add_device(DOORBELL_BASE, MsiDoorbell.SIZE, self.doorbell, "its")
        self.mem = HostMemory(self.bus)
        self.kvm = Kvm(vmid_bits, ncpus, smmu_reserved=smmu_reserved, split=split) if kvm else None
        pol = make_policy(policy, self.kvm.vmids if self.kvm else None, vmid_bits, **(policy_kw or {}))
        self.driver = SmmuDriver(self.bus, SMMU_BASE, self.mem, vmid_policy=pol, doorbell=self.doorbell,
                                 tracer=self.tracer, **drv_kw)
        self.ictx = Iommufd(self.driver)
        self.guests: list[Guest] = []
        self.dma: dict[int, DmaTestDevice] = {}

    def _wired(self, line: str) -> None:
        self.wired.append(line)
        drv = getattr(self, "driver", None)
        if drv is not None and self.connect_irq:
            drv.wired_irq(line)

    def guest(self, name: str) -> Guest:
        g = Guest(self, name, 0x1_0000_0000 * (len(self.guests) + 1))
        self.guests.append(g)
        return g

    def dmadev(self, sid: int) -> DmaTestDevice:
        """A DMA test device with StreamID `sid` on the host bus (one MMIO window per device)."""
        d = DmaTestDevice(self.bus, self.smmu.translate, sid=sid, tracer=self.tracer, name=f"dma{sid:#x}")
        self.bus.add_device(DMATEST_BASE + len(self.dma) * DMATEST_SIZE, DMATEST_SIZE, d)
        self.dma[sid] = d
        return d

    def dma_read(self, sid: int, iova: int) -> tuple[int, int, int]:
        """READ64 through the device's MMIO: (status, data, fault_type)."""
        d = self.dma[sid]
        d.write(0x10, iova, 8)
        d.write(0x1C, CMD_READ64, 4)
        return d.read(0x04, 4), d.read(0x20, 8), d.read(0x30, 4)

    def dma_write(self, sid: int, iova: int, value: int) -> tuple[int, int]:
        d = self.dma[sid]
        d.write(0x10, iova, 8)
        d.write(0x20, value, 8)
        d.write(0x1C, CMD_WRITE64, 4)
        return d.read(0x04, 4), d.read(0x30, 4)

    def events(self, name: str):
        return self.sink.of(name)


def nest_parent(ic, g, dev_id: int, vsid: int) -> tuple[int, int]:
    """The guest's RAM in an IOAS, a nesting-parent stage-2 HWPT attached to the device, a vIOMMU over it and
    the device's vDEVICE at `vsid`; returns (s2 hwpt, viommu)."""
    ioas = ic.ioas_alloc()
    ic.ioas_map(ioas, g.size, g.pa, iova=RAM_IPA)
    s2 = ic.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    ic.device_attach(dev_id, s2)
    viommu = ic.viommu_alloc(dev_id, s2)
    ic.vdevice_alloc(viommu, dev_id, vsid)
    return s2, viommu


def nested_setup(b, g, sid, vsid, *, kvm_first=True, asid=5, depth=16):
    """The QEMU smmuv3-accel sequence; returns (dev, dev_id, s2 hwpt, viommu, nested hwpt, vEVENTQ, guest S1)."""
    ic = b.ictx
    dev = ic.open_device(sid)
    if kvm_first:
        ic.kvm_dev_vfio_file_add(g.kvm_vm, dev)
    dev_id = ic.bind(dev)
    if not kvm_first:
        ic.kvm_dev_vfio_file_add(g.kvm_vm, dev)
    s2, viommu = nest_parent(ic, g, dev_id, vsid)
    _, q = ic.veventq_alloc(viommu, depth=depth)
    t = g.s1_tables()
    t.map(IOVA, RAM_IPA + 0x10_0000, 0x4000)
    cd = g.write_cd(t, asid=asid)
    nested = ic.hwpt_alloc(dev_id, viommu, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=vste(cd))
    ic.device_attach(dev_id, nested)
    b.dmadev(sid)
    return dev, dev_id, s2, viommu, nested, q, t
