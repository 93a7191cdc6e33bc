"""The legacy VFIO nested-stage names of Eric Auger's "SMMUv3 Nested Stage Setup" RFC v3 (VFIO_TYPE1_NESTING_IOMMU
with VFIO_IOMMU_SET_PASID_TABLE, VFIO_IOMMU_CACHE_INVALIDATE, VFIO_IOMMU_BIND_MSI, on v5.0-rc1; never merged)
as a thin layer over `iommufd.py` (the same code paths):

| nested-stage RFC (VFIO_TYPE1_NESTING_IOMMU)   | here                                                      |
|-----------------------------------------------|-----------------------------------------------------------|
| container + VFIO_IOMMU_MAP_DMA / UNMAP_DMA    | IOAS + nest-parent HWPT; `map_dma` / `unmap_dma`          |
| VFIO_IOMMU_SET_PASID_TABLE (set_pasid_table)  | vIOMMU + vDEVICE + nested HWPT from the config + attach   |
| detach (config abort / unset)                 | `detach_pasid_table`: back to the stage-2-only parent     |
| VFIO_IOMMU_CACHE_INVALIDATE (cache_invalidate)| `struct iommu_cache_invalidate_info` -> SMMU commands ->  |
|                                               | IOMMU_HWPT_INVALIDATE (VMID and SID enforced there)       |
| VFIO_IOMMU_BIND_MSI (bind_guest_msi)          | stage-2 map of the guest doorbell IPA -> the host doorbell|
| fault region + VFIO_PCI_DMA_FAULT_IRQ_INDEX   | vEVENTQ records -> `FaultRecord`s; `fault_eventfd` called |

Names and fields follow that v3 series (`struct iommu_pasid_table_config`,
`struct iommu_cache_invalidate_info`, IOMMU_CACHE_INV_TYPE_*, IOMMU_INV_GRANU_*). Errors are `IommufdError`.

Not modelled: PASID-table formats other than SMMUv3, the mmap of the fault region (a list here), per-device
MSI doorbells (one host doorbell), PRI page responses.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import Callable

from devmodel.pagetable import PERM_W
from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.fault import EventType

from .iommufd import (IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_ARM_SMMUV3, Iommufd, IommufdError, VEventQ,
                      VfioDevice)
from .smmu_driver import GITS_TRANSLATER

__all__ = ["VfioNested", "PasidTableConfig", "CacheInvalidateInfo", "FaultRecord",
           "IOMMU_PASID_CONFIG_TRANSLATE", "IOMMU_PASID_CONFIG_BYPASS", "IOMMU_PASID_CONFIG_ABORT",
           "IOMMU_CACHE_INV_TYPE_IOTLB", "IOMMU_CACHE_INV_TYPE_DEV_IOTLB", "IOMMU_CACHE_INV_TYPE_PASID",
           "IOMMU_INV_GRANU_DOMAIN", "IOMMU_INV_GRANU_PASID", "IOMMU_INV_GRANU_ADDR",
           "IOMMU_INV_ADDR_FLAGS_PASID", "IOMMU_INV_ADDR_FLAGS_ARCHID", "IOMMU_INV_ADDR_FLAGS_LEAF"]

IOMMU_PASID_CONFIG_TRANSLATE, IOMMU_PASID_CONFIG_BYPASS, IOMMU_PASID_CONFIG_ABORT = 1, 2, 3
IOMMU_CACHE_INV_TYPE_IOTLB, IOMMU_CACHE_INV_TYPE_DEV_IOTLB, IOMMU_CACHE_INV_TYPE_PASID = 1, 2, 4
IOMMU_INV_GRANU_DOMAIN, IOMMU_INV_GRANU_PASID, IOMMU_INV_GRANU_ADDR = 0, 1, 2
IOMMU_INV_ADDR_FLAGS_PASID, IOMMU_INV_ADDR_FLAGS_ARCHID, IOMMU_INV_ADDR_FLAGS_LEAF = 1, 2, 4

_CFG = {IOMMU_PASID_CONFIG_TRANSLATE: stemod.CONFIG_S1, IOMMU_PASID_CONFIG_BYPASS: stemod.CONFIG_BYPASS,
        IOMMU_PASID_CONFIG_ABORT: stemod.CONFIG_ABORT}


@dataclass(frozen=True)
class PasidTableConfig:
    """`struct iommu_pasid_table_config` (SMMUv3 format): the guest's CD table and how to use it."""
    base_ptr: int                  # guest IPA of the CD table (STE.S1ContextPtr)
    pasid_bits: int = 0            # STE.S1CDMax
    config: int = IOMMU_PASID_CONFIG_TRANSLATE
    s1fmt: int = 0
    s1dss: int = 0


@dataclass(frozen=True)
class CacheInvalidateInfo:
    """`struct iommu_cache_invalidate_info`: `cache` is a mask of IOMMU_CACHE_INV_TYPE_*; for ADDR granularity
    `addr`, `granule_size`, `nb_granules`; `archid` is the ASID, `pasid` the SubstreamID."""
    cache: int
    granularity: int
    pasid: int = 0
    archid: int = 0
    flags: int = 0
    addr: int = 0
    granule_size: int = 4096
    nb_granules: int = 1


@dataclass(frozen=True)
class FaultRecord:
    """One entry of the fault region (`struct iommu_fault` unrecoverable part)."""
    reason: str                    # event name (F_TRANSLATION, C_BAD_CD, ...)
    sid: int                       # the vSID
    pasid: int | None
    addr: int
    fetch_addr: int
    read: bool


class VfioNested:
    """A device assigned with nested translation, driven through the nested-stage RFC's names. `vm_kvm` is linked
    (KVM_DEV_VFIO_FILE_ADD) before the bind, so policies that pin the VM's VMID work."""

    def __init__(self, ictx: Iommufd, dev: VfioDevice, vm_kvm: object = None, vsid: int | None = None,
                 fault_depth: int = 64):
        self.ictx, self.dev = ictx, dev
        if vm_kvm is not None and dev.dev_id is None:
            ictx.kvm_dev_vfio_file_add(vm_kvm, dev)
        self.dev_id = dev.dev_id if dev.dev_id is not None else ictx.bind(dev)
        self.ioas = ictx.ioas_alloc()
        self.parent = ictx.hwpt_alloc(self.dev_id, self.ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
        ictx.device_attach(self.dev_id, self.parent)
        self.vsid = dev.sid if vsid is None else vsid
        self.viommu: int | None = None
        self.nested: int | None = None
        self.fault_depth = fault_depth
        self.fault_queue: VEventQ | None = None
        self.fault_eventfd: Callable[[int], None] | None = None
        self.fault_region: list[FaultRecord] = []
        self.msi_bindings: dict[int, tuple[int, int]] = {}      # giova -> (gpa, size)

    # -- stage 2 (VFIO_IOMMU_MAP_DMA) -----------------------------------------------------------------------
    def map_dma(self, iova: int, pa: int, size: int) -> None:
        self.ictx.ioas_map(self.ioas, size, pa, iova=iova)

    def unmap_dma(self, iova: int, size: int) -> int:
        return self.ictx.ioas_unmap(self.ioas, iova, size)

    # -- set_pasid_table ----------------------------------------------------------------------------------------
    def _ensure_viommu(self) -> int:
        if self.viommu is None:
            self.viommu = self.ictx.viommu_alloc(self.dev_id, self.parent)
            self.ictx.vdevice_alloc(self.viommu, self.dev_id, self.vsid)
            _, self.fault_queue = self.ictx.veventq_alloc(self.viommu, depth=self.fault_depth)
        return self.viommu

    def set_pasid_table(self, cfg: PasidTableConfig) -> None:
        """VFIO_IOMMU_SET_PASID_TABLE: bind the guest's stage-1 configuration (its CD table at an IPA)."""
        if cfg.config not in _CFG:
            raise IommufdError(_errno.EINVAL, f"set_pasid_table: config {cfg.config} unknown")
        v = self._ensure_viommu()
        f = stemod.STE_LAYOUT
        w = f.pack(v=1, config=_CFG[cfg.config], s1fmt=cfg.s1fmt, s1contextptr=cfg.base_ptr,
                   s1cdmax=cfg.pasid_bits, s1dss=cfg.s1dss)
        old = self.nested
        self.nested = self.ictx.hwpt_alloc(self.dev_id, v, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3,
                                           data=(w & (1 << 64) - 1, (w >> 64) & (1 << 64) - 1))
        self.ictx.device_attach(self.dev_id, self.nested)
        if old is not None:
            self.ictx.destroy(old)

    def detach_pasid_table(self) -> None:
        """Back to stage 2 only (the guest disabled its SMMU)."""
        self.ictx.device_attach(self.dev_id, self.parent)
        if self.nested is not None:
            self.ictx.destroy(self.nested)
            self.nested = None

    # -- cache_invalidate -------------------------------------------------------------------------------------
    def cache_invalidate(self, info: CacheInvalidateInfo) -> int:
        """VFIO_IOMMU_CACHE_INVALIDATE -> SMMU commands (as `arm_smmu_cache_invalidate` in the nested-stage
        RFC), issued through IOMMU_HWPT_INVALIDATE so the VMID and the StreamID are enforced there. Returns
        entries."""
        if self.viommu is None:
            raise IommufdError(_errno.EINVAL, "cache_invalidate: no PASID table bound")
        out: list[bytes] = []
        if info.cache & IOMMU_CACHE_INV_TYPE_IOTLB:
            if info.granularity == IOMMU_INV_GRANU_DOMAIN:
                out.append(cmds.encode("TLBI_NSNH_ALL"))
            elif info.granularity == IOMMU_INV_GRANU_PASID:
                out.append(cmds.encode("TLBI_NH_ASID", asid=info.archid))
            elif info.granularity == IOMMU_INV_GRANU_ADDR:
                leaf = int(bool(info.flags & IOMMU_INV_ADDR_FLAGS_LEAF))
                for i in range(info.nb_granules):
                    a = info.addr + i * info.granule_size
                    if info.flags & IOMMU_INV_ADDR_FLAGS_ARCHID:
                        out.append(cmds.encode("TLBI_NH_VA", asid=info.archid, addr=a, leaf=leaf))
                    else:
                        out.append(cmds.encode("TLBI_NH_VAA", addr=a, leaf=leaf))
            else:
                raise IommufdError(_errno.EINVAL, f"cache_invalidate: granularity {info.granularity} unknown")
        if info.cache & IOMMU_CACHE_INV_TYPE_PASID:
            if info.granularity == IOMMU_INV_GRANU_DOMAIN:
                out.append(cmds.encode("CFGI_CD_ALL", sid=self.vsid))
            else:
                out.append(cmds.encode("CFGI_CD", sid=self.vsid, ssid=info.pasid, leaf=1))
        if info.cache & IOMMU_CACHE_INV_TYPE_DEV_IOTLB:
            if not self.ictx.driver.caps.ats:
                raise IommufdError(_errno.EOPNOTSUPP, "cache_invalidate: DEV_IOTLB without ATS (IDR0.ATS=0)")
            out.append(cmds.encode("ATC_INV", sid=self.vsid, ssid=info.pasid, ssv=int(bool(info.pasid)),
                                   addr=info.addr & ~0xFFF, size=0))
        if not out:
            raise IommufdError(_errno.EINVAL, f"cache_invalidate: cache mask {info.cache:#x} selects nothing")
        return self.ictx.hwpt_invalidate(self.viommu, out)

    # -- bind_guest_msi ---------------------------------------------------------------------------------------------
    def bind_guest_msi(self, giova: int, gpa: int, size: int = 4096) -> None:
        """VFIO_IOMMU_BIND_MSI: the guest's stage 1 maps `giova` to its virtual doorbell at `gpa`; map `gpa` at
        stage 2 onto the host's MSI doorbell frame so device MSIs reach the physical ITS (dma-iommu's MSI
        cookie in the nested-stage RFC). The doorbell is MMIO, so this is a host-internal stage-2 mapping, not
        IOAS_MAP."""
        drv = self.ictx.driver
        if drv.doorbell is None:
            raise IommufdError(_errno.ENODEV, "bind_guest_msi: the platform has no MSI doorbell")
        if giova in self.msi_bindings:
            raise IommufdError(_errno.EEXIST, f"bind_guest_msi: {giova:#x} already bound")
        dom = self.ictx.hwpt_domain(self.parent)
        frame = (drv.doorbell_pa + GITS_TRANSLATER) & ~0xFFF
        try:
            drv.map(dom, gpa & ~0xFFF, frame, 4096, PERM_W)
        except ValueError as e:
            raise IommufdError(_errno.EINVAL, f"bind_guest_msi: {e}") from None
        self.msi_bindings[giova] = (gpa, size)

    def unbind_guest_msi(self, giova: int) -> None:
        gpa, _size = self.msi_bindings.pop(giova)
        self.ictx.driver.unmap(self.ictx.hwpt_domain(self.parent), gpa & ~0xFFF, 4096)

    # -- fault reporting -------------------------------------------------------------------------------------------
    def read_faults(self) -> list[FaultRecord]:
        """Move new vEVENTQ records into the fault region; call `fault_eventfd(n)` when there are new ones."""
        if self.fault_queue is None:
            return []
        new = []
        for ve in self.fault_queue.read():
            ev = ve.event
            if ev is None:
                new.append(FaultRecord("LOST_EVENTS", self.vsid, None, 0, 0, False))
                continue
            try:
                reason = EventType(ev.type).name
            except ValueError:
                reason = f"EVT_{ev.type:#04x}"
            new.append(FaultRecord(reason, ev.sid, ev.ssid if ev.ssv else None, ev.input_addr, ev.fetch_addr,
                                   bool(ev.rnw)))
        self.fault_region += new
        if new and self.fault_eventfd is not None:
            self.fault_eventfd(len(new))
        return new
