"""What a VM's device tree describes, read from what the VM really has (`board_spec(vm)` -> `BoardSpec`).

The tree itself is harness/devicetree.py's (QEMU 7.2 virt's layout); this module only looks at a `VM`: its
RAM range, its vCPUs (their MPIDRs, as the guest reads them), the EL they start at (the PSCI conduit), and
the MMIO devices mapped in its IPA space:

* an SMMUv3 (the VMM's vSMMU or a passed-through physical one: any `devmodel.smmuv3.device.SMMUv3`) becomes
  `/smmuv3@BASE` with QEMU virt's wired SPIs;
* a DMA test device (`devmodel.dmatest.DmaTestDevice`, or the VMM's `AssignedMmio` window onto one) becomes
  `/dmatest@BASE` with `iommus = <&smmu SID>` when the VM sees an SMMU (SID = what its SID register reads
  at boot: the vSID for an assigned device), none otherwise;
* a virtio-iommu plugged into one of the VM's virtio-mmio transports (`harness.viommu`) marks that
  transport's node as the IOMMU (`#iommu-cells = <1>`); a DMA test device whose SID is one of its endpoint
  IDs gets `iommus = <&viommu ID>` instead of the SMMU's;
* the PCIe host bridge (harness/pci.py) is described when the VM has one (every VM does, as QEMU virt);
* the PL011 is always described (QEMU virt has one at 0x0900_0000; a VM built without a console still
  gets the node, as a QEMU guest with `-serial none` does).

Device classes are looked up in `sys.modules`: a class whose module was never imported has no instance, and
`smmu-harness run` does not pay for importing the SMMU model to find out. New device kinds (virtio-mmio
transports, the GIC) add a line to `_describe`.

GIC: the VM's own (`vm.gic_version`, harness/gic.py: GICv2 for up to 8 vCPUs as QEMU virt's default, GICv3
above or when asked), unless the caller says otherwise. CPU compatible: `CPU_COMPATIBLE[cpu]` (`-cpu max` is described as QEMU 7.2 does).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .devicetree import CPU_COMPATIBLE, BoardSpec, DmaDeviceSpec, SmmuSpec

if TYPE_CHECKING:
    from .machine import VM

__all__ = ["board_spec"]

_DMATEST_SID = 0x08          # devmodel/dmatest.py register map: SID


def _instance(obj: Any, module: str, cls: str) -> bool:
    mod = sys.modules.get(module)
    return mod is not None and isinstance(obj, getattr(mod, cls))


def _describe(vm: "VM") -> tuple[SmmuSpec | None, list[tuple[int, int, int]]]:
    """(the SMMU the VM sees, [(base, size, sid)] of its DMA test devices) from its IPA space."""
    smmu, dmas = None, []
    for region in vm.ipa.regions:
        if region.is_ram:
            continue
        dev = region.target
        if _instance(dev, "devmodel.smmuv3.device", "SMMUv3"):
            smmu = SmmuSpec(base=region.base, msi_devid=getattr(dev, "msi_requester", None))
        elif _instance(dev, "devmodel.dmatest", "DmaTestDevice") or (
                _instance(dev, "harness.vmm", "AssignedMmio")
                and _instance(getattr(dev, "dev", None), "devmodel.dmatest", "DmaTestDevice")):
            dmas.append((region.base, region.size, dev.read(_DMATEST_SID, 4)))
    return smmu, dmas


def _viommu(vm: "VM") -> tuple[int | None, frozenset[int]]:
    """(transport index, endpoint IDs) of the virtio-iommu plugged into the VM's transports, (None, {}) if none."""
    board = getattr(vm, "virtio", None)
    for index, dev in board.plugged(build=False) if board is not None else ():
        if _instance(dev, "devmodel.virtio.iommu.device", "VirtioIommu"):
            return index, frozenset(dev.endpoints)
    return None, frozenset()


def _iommu_of(sid: int, smmu: SmmuSpec | None, viommu: int | None, endpoints: frozenset[int]) -> str | None:
    if viommu is not None and sid in endpoints:
        return "viommu"
    return "smmu" if smmu else None


def board_spec(vm: "VM", *, bootargs: str = "", cpu: str = "max", gic_version: int | None = None,
               initrd: tuple[int, int] | None = None) -> BoardSpec:
    """The `BoardSpec` of `vm` (see the module docstring); `bootargs` and the `initrd` range go to /chosen."""
    smmu, dmas = _describe(vm)
    viommu, endpoints = _viommu(vm)
    ncpus = len(vm.vcpus)
    return BoardSpec(ram=((vm.ram_ipa, vm.ram.size),), cpus=ncpus, mpidrs=tuple(v.mpidr for v in vm.vcpus),
                     cpu_compatible=CPU_COMPATIBLE[cpu], start_el=vm.start_el,
                     gic_version=gic_version or vm.gic_version, smmu=smmu,
                     dma_devices=tuple(DmaDeviceSpec(base, size, _iommu_of(sid, smmu, viommu, endpoints), sid)
                                       for base, size, sid in dmas),
                     virtio_iommu=viommu, bootargs=bootargs, initrd=initrd,
                     pcie=getattr(vm, "pcie", None) is not None)
