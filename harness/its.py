"""The GICv3 ITS of a VM and the MSI plumbing around it (docs/gic.md "ITS on the board").

* Where: QEMU virt's `VIRT_GIC_ITS`, 0x0808_0000, 128 KiB (control frame + translation frame; GITS_TRANSLATER at
  0x0809_0040), on every GICv3 VM (QEMU creates it unless `its=off`), in the device tree as `arm,gic-v3-its`
  with `msi-controller` and `#msi-cells = <1>` (the DeviceID). The model is `devmodel.gic.Its` over the VM's GIC,
  reading its tables through the VM's IPA bus, so one VM's ITS never sees another VM's memory or interrupts.
* Who writes it: a vCPU's store to GITS_TRANSLATER is an MSI of DeviceID 0 (QEMU: a CPU's requester ID is 0);
  a bus master's write (`Bus.write_from`) carries its requester ID as the DeviceID.
* DeviceIDs on this board: a device's StreamID (the identity msi-map of QEMU virt's PCIe host bridge, as Linux
  applies it: RID = StreamID = DeviceID); the VM's vSMMU sends its own MSIs (event queue, GERROR, CMD_SYNC) with
  `SMMU_MSI_DEVID`, described by an `msi-parent = <&its SMMU_MSI_DEVID>` in the tree. QEMU virt gives its SMMUv3
  no MSI (no `msi-parent`; QEMU's SMMU signals wired SPIs only), so the number is ours: 0x1000, outside the
  StreamIDs the board hands out and inside one 64 KiB page of a flat device table (8-byte DTEs).
* The assigned DMA test device's MSI goes through the SMMU (devmodel/dmatest.py): the guest maps its doorbell
  IOVA to the vITS translation frame GPA in its stage 1, the VMM has made iommufd map that GPA to the physical
  doorbell in stage 2 (`Iommufd.set_sw_msi` to the vITS frame, then `prepare_msi` when the device's MSI is
  enabled), and the host routes MSIs of the device's physical StreamID to this ITS as the guest's vSID
  (`harness.host.msi.HostIts`). See harness/vmm.py.
"""
from __future__ import annotations

from typing import Any

from devmodel.gic.its import GITS_TRANSLATER, ITS_SIZE, Its

__all__ = ["VIRT_GITS", "VIRT_GITS_TRANSLATER", "VIRT_GITS_TRANSLATION_PAGE", "SMMU_MSI_DEVID", "add_its", "vm_its"]

VIRT_GITS = 0x0808_0000                               # hw/arm/virt.c VIRT_GIC_ITS
VIRT_GITS_TRANSLATER = VIRT_GITS + GITS_TRANSLATER    # 0x0809_0040
VIRT_GITS_TRANSLATION_PAGE = VIRT_GITS_TRANSLATER & ~0xFFF
SMMU_MSI_DEVID = 0x1000


def vm_its(vm: Any) -> Its | None:
    """The VM's ITS, if it has one (a GICv3 VM)."""
    return getattr(getattr(vm, "gic", None), "its", None)


def add_its(gic: Any) -> Its:
    """Create the ITS of a VM's GICv3 (`harness.gic.VmGic` of version 3) and map it at VIRT_GITS."""
    vm = gic.vm
    its = Its(gic.model, log=getattr(vm.machine, "log", None), name=f"{vm.name}.its", cpu_device_id=0)
    gic.attach_its(VIRT_GITS, ITS_SIZE, its, "its")
    return its
