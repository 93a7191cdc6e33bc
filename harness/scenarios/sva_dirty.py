"""`sva-dirty`: the device writes through page tables it shares with the CPU, the SMMU marks them dirty (HTTU),
and the guest must find every dirty page to write it back, under each VMID policy.

The guest (guest_fw/scenarios/dirty.h) maps its pages writable-clean (DBM=1, AP[2]=1) in its own CPU tables
and gives the SMMU a CD on those tables with HA=HD=1; the physical SMMU has IDR0.HTTU=0b10. Each round the
device writes some pages: the SMMU's walk makes each written page writable-dirty (AP[2] cleared, by a
compare-and-swap the CPU would see, through the host's stage 2 as a stage-2 write). The guest then scans its
PTEs, "writes back" the dirty pages (checks their data) and cleans them (AP[2]=1), and invalidates: TLBI
VAE1IS + DSB ISH. The next round's writes must mark the pages dirty again - which needs the SMMU to walk again,
so its TLB must have dropped the writable-dirty entries: with `stack="port"` (default, as sva-btm) the guest
relies on BTM alone, and where the broadcast's VMID (the vCPU's KVM VMID) is not the STE's (private, unpinned
after a rollover) the stale entry lets the device write without setting the dirty state: the guest misses
that page (`missed_dirty`), a write-back that would lose data. With `stack="vsmmu"` the guest drives its
vSMMU (which offers HTTU) and forwards TLBI_NH_VA + CMD_SYNC unless the VMM advertises BTM.

Metrics: `missed_dirty` (pages written in a round and not found dirty; also `stale_dma`), `spurious_dirty`
(found dirty, not written, or with wrong data), `dirty_found`, `pages_written`, `httu_updates` (descriptor
updates the SMMU made), `rounds`. `ok`: no page missed or spurious in any round.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import RECOVERABLE_FEATURES
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["SvaDirty"]


def _bits(v: int) -> int:
    return bin(v).count("1")


class SvaDirty(Scenario):
    name = "sva-dirty"
    seed = "000, 001"
    summary = ("guest SVA with HTTU: the device's writes set the dirty state in the CPU's own page tables and "
               "the guest must find every dirty page to write it back")
    vms_meaning = "VMs on the host (the SVA VM + others time-sliced with it)"
    default_vms = 3
    options = {"stack": (("port", "vsmmu"), "port",
                         "port: the guest relies on BTM; vsmmu: the guest's vSMMU, forwarding without BTM")}

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, stack: str = "port", rounds: int = 6,
             **_: Any) -> None:
        if stack not in ("port", "vsmmu"):
            raise ValueError(f"stack must be port or vsmmu, not {stack!r}")
        run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, tracer=tracer, stack=stack,
                     program="sva_dirty" if stack == "port" else "sva_dirty_vsmmu", params=[rounds],
                     features=RECOVERABLE_FEATURES, vmm_kw=dict(httu=True) if stack == "vsmmu" else None)
        out = run.plat.run(timeout=60.0)
        run.check_pins()
        reps = [r for r in run.plat.reports_of("sva") if r["index"] > 0]      # index 0: the set-up is done
        missed = sum(_bits(r["value"] & ~(r["value"] >> 16) & 0xFF) for r in reps)
        spurious = sum(_bits((r["value"] >> 16) & ~r["value"] & 0xFF) for r in reps) + \
            sum(r["outcome"] == "other" for r in reps)
        first = next((r for r in reps if r["outcome"] == "stale"), None)
        m = res.metrics
        m.update(missed_dirty=missed, stale_dma=missed, spurious_dirty=spurious, rounds=len(reps),
                 pages_written=sum(_bits(r["value"] & 0xFF) for r in reps),
                 dirty_found=sum(_bits((r["value"] >> 16) & 0xFF) for r in reps),
                 dma_faults=sum(r["outcome"] == "fault" for r in reps),
                 httu_updates=int(run.plat.smmu.core.stats.get("httu_updates", 0)) if run.plat.smmu.core else 0,
                 broadcast_invalidations=run.plat.smmu_broadcasts(), rollovers=run.plat.kvm.vmids.rollovers,
                 pinned_vmid_changes=run.pin_changes, first_missed_round=first["index"] - 1 if first else -1)
        if stack == "vsmmu":
            cost = run.plat.vsmmu_cost("sva")
            m["vm_exits_per_invalidation"] = cost.get("vm_exits", 0) / len(reps) if reps else 0.0
        dev = run.plat.devices.get("sva")
        timeline = " ".join(f"{r['index'] - 1}:{r['vmid_cpu']:#x}/{r['vmid_ste']:#x}:{r['outcome'][0]}" for r in reps
                            if r["vmid_ste"] is not None)
        res.note(f"stack: {stack}; nested domain VMID {dev.vmid:#x}" if dev is not None and dev.vmid is not None
                 else f"stack: {stack}")
        if timeline:
            res.note(f"rounds (round:TLBI VMID/STE VMID:fresh|stale|other): {timeline}")
        res.note(f"guest: {out.message}")
        err = run.plat.attach_errors.get("sva")
        if err:
            res.error, res.ok, res.verdict = err, False, "the nested set-up failed: " + err
            return
        res.ok = missed == 0 and spurious == 0 and m["dma_faults"] == 0 and len(reps) == rounds \
            and out.exit_code == 0 and m["pinned_vmid_changes"] == 0
        if missed:
            res.verdict = (f"{missed} written page(s) not found dirty from round {m['first_missed_round']}: a "
                           "writable-dirty entry left in the SMMU's TLB (the broadcast TLBI carried another "
                           "VMID) let the device write without marking the page; its write-back would be lost")
        elif res.ok:
            res.verdict = (f"every written page was found dirty ({m['dirty_found']} over {len(reps)} rounds, "
                           f"{m['httu_updates']} HTTU updates), across {m['rollovers']} rollover(s)")
        else:
            res.verdict = "the guest did not complete every round correctly"
