"""`sva-ats`: with BTM the SMMU's TLB follows the guest's `TLBI VAE1IS`, but the device's ATC does not.

The SVA guest (guest_fw/scenarios/sva_ats.c + guest_fw/lib/vsmmu.c) installs a vSTE with EATS=0b01 on a vSMMU
that offers ATS (harness/vmm.py `ats=True`): the host driver writes the nested STE with EATS=0b01 and enables
ATS at the function (`arm_smmu_enable_ats`, after invalidating its ATC), so the DMA test device asks the SMMU
for translations (ATS Translation Requests, answered with the nested translation) and caches them in its ATC.
Each round (as sva-btm) the guest repoints a PTE and invalidates: TLBI VAE1IS + DSB ISH, which BTM delivers
to the SMMU's TLB when the VMM advertises BTM (its vIOMMU's VMID is the VM's pinned KVM VMID), else also a
TLBI_NH_VA + CMD_SYNC on the vSMMU; and, by default, CMD_ATC_INV + CMD_SYNC, which the VMM forwards with
IOMMU_HWPT_INVALIDATE (vSID -> SID) and the physical SMMU sends to the device as an ATS Invalidate Request.
`atc_inv="no"` is a guest that trusts BTM (or its TLBI_NH_VA) alone: neither reaches the ATC, the device's next
read uses its cached translation and sees the old page - `stale_dma` > 0, `ok: false`. Linux issues
ATC_INV after the TLB invalidation for SVA (`arm_smmu_mm_arch_invalidate_secondary_tlbs` ->
`arm_smmu_atc_inv_domain`) even with BTM, for this reason.

Metrics: `stale_dma`, `rounds`, `vm_exits_per_invalidation` (vSMMU exits per round: TLBI_NH_VA without BTM,
ATC_INV), `atc_invalidations` (ATS Invalidate Requests the device received),
`atc_hits` (translations the device took from its ATC), `ats_requests` (Translation Requests it sent),
`btm_advertised`.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import RECOVERABLE_FEATURES
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["SvaAts"]


class SvaAts(Scenario):
    name = "sva-ats"
    seed = "001"
    summary = ("guest SVA with ATS: BTM (or TLBI_NH_VA) invalidates the SMMU's TLB but not the device's ATC; "
               "without CMD_ATC_INV the device reads stale data through its ATC")
    vms_meaning = "VMs on the host (the SVA VM + others time-sliced with it)"
    default_vms = 2
    options = {"atc_inv": (("yes", "no"), "yes", "the guest sends CMD_ATC_INV after its TLB invalidation")}

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, atc_inv: str = "yes", rounds: int = 4,
             **_: Any) -> None:
        if atc_inv not in ("yes", "no"):
            raise ValueError(f"atc_inv must be yes or no, not {atc_inv!r}")
        run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, tracer=tracer, stack="vsmmu",
                     program="sva_ats", params=[rounds, int(atc_inv == "yes")], features=RECOVERABLE_FEATURES,
                     vmm_kw=dict(ats=True))
        m = run.execute(res)
        a = run.plat.devices.get("sva")
        dev = a.dma if a is not None else None
        cost = run.plat.vsmmu_cost("sva")                 # since the first round
        m.update(vm_exits_per_invalidation=cost.get("vm_exits", 0) / m["rounds"] if m["rounds"] else 0.0,
                 atc_invalidations=dev.read(0x5C, 4) if dev is not None else 0,
                 atc_hits=dev.atc.hits if dev is not None else 0,
                 ats_requests=int(run.plat.smmu.stats.get("ats_success", 0)),
                 btm_advertised=int(bool(a.nested_vm.vsmmu.features.btm)) if a is not None else 0)
        res.note(f"guest {'sends' if atc_inv == 'yes' else 'does not send'} CMD_ATC_INV; BTM "
                 f"{'advertised' if m['btm_advertised'] else 'not advertised (the guest forwards TLBI_NH_VA)'}; "
                 f"{m['ats_requests']} ATS translation(s), {m['atc_hits']} ATC hit(s), "
                 f"{m['atc_invalidations']} ATS invalidation(s) at the device")
        err = run.plat.attach_errors.get("sva")
        if err:
            res.error, res.ok, res.verdict = err, False, "the nested set-up failed: " + err
            return
        res.ok = m["stale_dma"] == 0 and run.bad == 0 and m["rounds"] == rounds and run.outcome.exit_code == 0 \
            and m["pinned_vmid_changes"] == 0
        if m["stale_dma"]:
            res.verdict = (f"stale DMA through the device's ATC in {m['stale_dma']} of {m['rounds']} rounds: the "
                           "TLB invalidation does not reach the ATC, only CMD_ATC_INV does")
        elif res.ok:
            res.verdict = (f"every DMA after the invalidation saw the new page: CMD_ATC_INV emptied the ATC "
                           f"({m['atc_invalidations']} ATS invalidations)")
        else:
            res.verdict = "the guest did not complete every round correctly"
