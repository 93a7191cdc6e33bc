"""`no-btm-forwarding`: the SVA workload without BTM; invalidations forwarded through the vSMMU (seed 002).

Seed 002's nested stage: the guest owns stage 1 and "propagates guest TLB invalidations" to the host. Without
BTM (IDR0.BTM=0, so CR2.PTM stays 1 and broadcasts are ignored) the guest driver must send TLBI_NH_VA on its
vSMMU after each CPU TLBI: one trapped CMDQ_PROD write and one trapped CMDQ_CONS poll (two VM exits), and the
host rewrites the VMID to the vIOMMU's and issues TLBI_NH_VA + CMD_SYNC on the physical queue
(IOMMU_HWPT_INVALIDATE). The same guest and host run again with BTM for comparison (no exits, no commands,
but correct only when the policy makes the VMIDs match).

Metrics: `vm_exits_per_invalidation`, `host_commands_per_invalidation` of the forwarding run next to
`btm_vm_exits_per_invalidation`, `btm_stale_dma` of the BTM run. `ok` is about the forwarding run.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["NoBtmForwarding"]


class NoBtmForwarding(Scenario):
    name = "no-btm-forwarding"
    seed = "002"
    summary = "the SVA workload without BTM: guest invalidations forwarded through the vSMMU command queue"
    vms_meaning = "VMs on the host (as in sva-btm)"
    default_vms = 3
    sweep_vms = (1, 2, 3, 4, 6)

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, rounds: int = 6, **_: Any) -> None:
        fwd = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, btm=False, forward=True, tracer=tracer)
        commands_before = fwd.plat.driver.commands
        m = fwd.execute(res)
        err = fwd.plat.attach_errors.get("sva")
        invals = m["rounds"]
        port = fwd.plat.ports["sva"]
        cmds = fwd.plat.driver.commands - commands_before
        attach_cmds = 4 if not err else 0     # nested attach: TLBI_S12_VMALL + SYNC, CFGI_STE + SYNC
        m["host_commands_per_invalidation"] = (cmds - attach_cmds) / invals if invals else 0.0
        m["forwarded_invalidations"] = port.inv_traps // 2
        btm_res = ScenarioResult(res.scenario, res.policy, res.vmid_bits, res.vms)
        btm = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, btm=True, forward=False)
        btm.execute(btm_res)
        bm = btm_res.metrics
        m["btm_stale_dma"] = bm["stale_dma"]
        m["btm_vm_exits_per_invalidation"] = bm["vm_exits_per_invalidation"]
        m["btm_broadcast_invalidations"] = bm["broadcast_invalidations"]
        res.note(f"BTM run for comparison: {bm['stale_dma']} stale DMA(s), "
                 f"{bm['vm_exits_per_invalidation']:.2f} VM exits per invalidation")
        if err:
            res.error = err
            res.ok = False
            res.verdict = "the nested attach failed: " + err
            return
        res.ok = m["stale_dma"] == 0 and fwd.bad == 0 and invals == rounds and fwd.outcome.exit_code == 0
        res.verdict = (f"forwarding: {m['vm_exits_per_invalidation']:.2f} VM exits and "
                       f"{m['host_commands_per_invalidation']:.2f} host commands per guest invalidation, "
                       f"{m['stale_dma']} stale; BTM: 0 exits, {bm['stale_dma']} stale")
