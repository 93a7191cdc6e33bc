"""`over-invalidation`: guests' broadcast TLBIs hitting stage-2-only SMMU contexts that share their VMID
(seed 001: "stage-2 translation contexts are now affected by all invalidations by VMID").

Setup: `vms` VMs, each running guest_fw/scenarios/over_inval.c with a DMA test device the VMM attached, before
the guest starts, to its nest-parent HWPT through iommufd (a stage-2-only STE: IOVA = IPA, host stage 2,
S2VMID = the policy's `s2_vmid`, taken by the host driver at that attach). SMMU: IDR0.BTM=1,
CR2.PTM=0, and - like implementations that invalidate by VMID - a stage-1 broadcast for VMID v also removes
the stage-2-only entries tagged v (`TranslationCore(overinvalidate_s2=True)`; architecturally such entries
"need not" be invalidated, so every one removed is over-invalidation). The VMs are time-sliced on the host
CPUs by KVM; each round a guest DMAs `pages` pages through its device, then changes `tlbis` of its own CPU
mappings with TLBI VAE1IS + DSB ISH.

Measured: broadcasts the SMMU applied, broadcasts that reached a stage-2-only context (`over`), and the
entries they removed (`over_invalidated_entries`): they come back as misses and walks on the next DMA.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import ScenarioPlatform
from .result import ScenarioResult

__all__ = ["OverInvalidation"]


class OverInvalidation(Scenario):
    name = "over-invalidation"
    seed = "001"
    summary = ("CPU-side broadcast TLBIs of N guests reaching stage-2-only SMMU contexts that share their "
               "VMID: entries removed that no one asked to remove")
    vms_meaning = "VMs, each with a stage-2-only assigned device"
    default_vms = 3
    sweep_vms = (1, 2, 3, 4, 6)

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, rounds: int = 3, pages: int = 8,
             tlbis: int = 4, **_: Any) -> None:
        plat = ScenarioPlatform(res.policy, res.vmid_bits, btm=True, tracer=tracer, overinvalidate_s2=True,
                                quantum=5_000)
        names = []
        for i in range(res.vms):
            name = f"vm{i}"
            plat.add_guest(name, "over_inval", params=[rounds, pages, tlbis, i + 1])
            plat.attach_s2(name)
            names.append(name)
        out = plat.run()
        hits, removed = plat.over_invalidation()
        reps = plat.reports
        wrong = sum(r["value"] for r in reps if r["outcome"] == "other")
        faults = sum(r["value"] for r in reps if r["outcome"] == "fault")
        iotlb = plat.smmu.core.iotlb.stats() if plat.smmu.core is not None else {}
        m = res.metrics
        m.update(over_invalidated_entries=removed, over_invalidating_broadcasts=hits,
                 broadcast_invalidations=plat.smmu_broadcasts(), cross_vm_dma=wrong, dma_faults=faults,
                 rollovers=plat.kvm.vmids.rollovers, iotlb_misses=iotlb.get("misses", 0),
                 guest_tlbis=sum(p.params[0] * p.params[2] for p in plat.ports.values()))
        kvm = plat.kvm
        ctx_vmids = {n: plat.devices[n].vmid for n in names}
        pairs = []
        for n in names:
            kv = kvm.vm_of(plat.machine_vm(n))
            k = kv.vmid if kv is not None else 0
            victims = [o for o, v in ctx_vmids.items() if v == k]
            pairs.append(f"{n}: KVM VMID {k:#x}, device S2VMID {ctx_vmids[n]:#x}"
                         + (f", its broadcasts hit {'/'.join(victims)}'s context" if victims else ""))
        for p in pairs:
            res.note(p)
        res.note(f"guests: {out.message}")
        done = len(reps) == rounds * res.vms
        res.ok = removed == 0 and hits == 0 and wrong == 0 and faults == 0 and done and out.exit_code == 0
        if removed or hits:
            res.verdict = (f"{hits} broadcast(s) reached stage-2-only contexts and removed {removed} entries "
                           f"no one asked to remove ({res.vms} VM(s))")
        elif res.ok:
            res.verdict = "no stage-2-only context shares a VMID with a running VM: nothing over-invalidated"
        else:
            res.verdict = "the guests' DMA did not complete correctly"
