"""`no-btm-forwarding`: the SVA workload without BTM; invalidations forwarded through the vSMMU (seed 002).

Eric Auger's SMMUv3 nested-stage series (linux-iommu; scenario label seed 002): the guest owns stage 1 and
"propagates guest TLB invalidations" to the host. This scenario runs on the VMM's vSMMU
(`ScenarioPlatform.add_vsmmu_guest`: harness/vmm.py, harness/vsmmu.py, the host driver and iommufd): the guest
(guest_fw/scenarios/sva_vsmmu.c + guest_fw/lib/vsmmu.c) installs a stage-1 vSTE whose CD shares its CPU tables,
and after every TLBI VAE1IS + DSB ISH sends TLBI_NH_VA + CMD_SYNC on its vSMMU unless the
vSMMU advertises BTM. Without BTM (physical IDR0.BTM=0, broadcasts ignored) every guest invalidation costs VM
exits (vSMMU register accesses: CMDQ_PROD, the queue reads of the driver) and an IOMMU_HWPT_INVALIDATE that puts
TLBI_NH_VA + CMD_SYNC (VMID rewritten) on the physical queue. The same guest then runs with host BTM on: the VMM
advertises BTM to the guest only when the vIOMMU's VMID is the VM's pinned KVM VMID; then the guest's TLBIs reach
the SMMU directly (no exits), otherwise it keeps forwarding.

Metrics (per guest CPU invalidation, from `VSmmu.cost()` since the first round): `vm_exits_per_invalidation`,
`host_commands_per_invalidation` of the no-BTM run; `btm_vm_exits_per_invalidation`, `btm_stale_dma`,
`btm_guest_forwards` of the BTM run. `ok` is about the no-BTM run (correct: no stale DMA). With `stack="port"`
the guest has no vSMMU (guest_fw/scenarios/sva_btm.c): it forwards through the scenario port's INV doorbell, a
paravirtual invalidation (one trapped write, one trapped status read) that the VMM turns into the same
IOMMU_HWPT_INVALIDATE, and in the BTM run it relies on BTM blindly (no VMM tells it whether that is safe).
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["NoBtmForwarding"]


def _costs(run: SvaRun, res: ScenarioResult) -> tuple[float, float, int]:
    """(VM exits, host commands, forwarded commands) per guest CPU invalidation of one run."""
    rounds = res.metrics["rounds"]
    plat = run.plat
    if not rounds:
        return 0.0, 0.0, 0
    if run.stack == "vsmmu":
        c = plat.vsmmu_cost("sva")
        return c.get("vm_exits", 0) / rounds, c.get("host_cmds", 0) / rounds, int(c.get("guest_invalidations", 0))
    port = plat.ports["sva"]
    return port.inv_traps / rounds, port.inv_host_cmds / rounds, port.inv_traps // 2


class NoBtmForwarding(Scenario):
    name = "no-btm-forwarding"
    seed = "002"
    summary = "the SVA workload without BTM: guest invalidations forwarded through the vSMMU command queue"
    vms_meaning = "VMs on the host (as in sva-btm)"
    default_vms = 3
    options = {"stack": (("vsmmu", "port"), "vsmmu",
                         "vsmmu: forwarding through the vSMMU's command queue; port: a paravirtual hypercall")}
    sweep_vms = (1, 2, 3, 4, 6)

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, rounds: int = 6,
             stack: str = "vsmmu", **_: Any) -> None:
        fwd = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, btm=False, forward=True, tracer=tracer,
                     stack=stack)
        m = fwd.execute(res)
        exits, cmds, fwds = _costs(fwd, res)
        m.update(vm_exits_per_invalidation=exits, host_commands_per_invalidation=cmds, forwarded_invalidations=fwds)
        btm_res = ScenarioResult(res.scenario, res.policy, res.vmid_bits, res.vms)
        btm = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, btm=True, forward=False, stack=stack)
        btm.execute(btm_res)
        bexits, bcmds, bfwds = _costs(btm, btm_res)
        bm = btm_res.metrics
        m.update(btm_stale_dma=bm["stale_dma"], btm_vm_exits_per_invalidation=bexits,
                 btm_host_commands_per_invalidation=bcmds, btm_guest_forwards=bfwds,
                 btm_broadcast_invalidations=bm["broadcast_invalidations"])
        res.note(f"stack: {stack}; no-BTM run: {fwds} command(s) forwarded for {m['rounds']} guest TLBI(s)")
        res.note(f"BTM run: {bfwds} forwarded, {bm['broadcast_invalidations']} broadcast(s) applied by the SMMU, "
                 f"{bm['stale_dma']} stale DMA(s)")
        err = fwd.plat.attach_errors.get("sva")
        if err:
            res.error = err
            res.ok = False
            res.verdict = "the nested set-up failed: " + err
            return
        res.ok = m["stale_dma"] == 0 and fwd.bad == 0 and m["rounds"] == rounds and fwd.outcome.exit_code == 0
        res.verdict = (f"no BTM: {exits:.2f} VM exits and {cmds:.2f} host commands per guest invalidation, "
                       f"{m['stale_dma']} stale; with BTM: {bexits:.2f} exits, {bm['stale_dma']} stale")
