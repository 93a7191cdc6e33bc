"""`kvm-ordering`: the device is bound to iommufd before `KVM_DEV_VFIO_FILE_ADD` (seed 003's ordering point).

"We need a specific sequence from userspace: 1. Attach VFIO group to KVM (KVM_DEV_VFIO_GROUP_ADD) 2. Create
nesting IOMMU domain and attach the group to it ... Currently QEMU does 2 then 1, which would cause the SMMU to
allocate a separate VMID." The same SVA guest as `sva-btm`, but the VMM binds the device first: the device
carries no KVM when its vIOMMU is allocated (IOMMU_VIOMMU_ALLOC fails with ENODEV), so a policy that takes the
VMID from KVM cannot. The correct
behaviour is a clean, explained refusal (the guest's attach fails, no DMA runs); a policy that silently takes
another VMID lets the guest run and its DMA go stale (a silent failure).
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import ScenarioPlatform
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["KvmOrdering"]


class KvmOrdering(Scenario):
    name = "kvm-ordering"
    seed = "003"
    summary = "VFIO_DEVICE_BIND_IOMMUFD before KVM_DEV_VFIO_FILE_ADD: the nested VMID cannot come from KVM"
    vms_meaning = "VMs on the host (as in sva-btm)"
    default_vms = 3

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, rounds: int = 4, **_: Any) -> None:
        run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, kvm_first=False, tracer=tracer)
        res.note("order: VFIO_DEVICE_BIND_IOMMUFD, then KVM_DEV_VFIO_FILE_ADD")
        m = run.execute(res)
        err = run.plat.attach_errors.get("sva")
        m["attach_refused"] = int(err is not None)
        # The same order through the VMM's vSMMU set-up (harness/vmm.py setup_nested_vm): it allocates the
        # vIOMMU when the device is plugged, so the refusal comes before the guest starts.
        vp = ScenarioPlatform(res.policy, res.vmid_bits, btm=True)
        vp.add_vsmmu_guest("sva", "sva_vsmmu", params=[rounds, 0], kvm_first=False)
        verr = vp.attach_errors.get("sva")
        m["iommufd_refused"] = int(verr is not None)
        res.note("VMM vSMMU set-up, same order: " + (f"refused: {verr}" if verr else
                                                      f"accepted, vIOMMU VMID {vp.devices['sva'].nested_vm.vmid:#x}"))
        if err:
            res.error = err
            res.ok = m["rounds"] == 0 and run.outcome.exit_code == 2
            res.verdict = "refused cleanly at the nested attach: " + err
        elif m["stale_dma"]:
            res.ok = False
            res.verdict = (f"silent failure: the nested domain got VMID {run.plat.devices['sva'].vmid:#x} without "
                           f"KVM and {m['stale_dma']} DMA(s) went stale")
        else:
            res.ok = run.bad == 0 and m["rounds"] == rounds
            res.verdict = "the nested domain works without KVM's VMID (no stale DMA)"
