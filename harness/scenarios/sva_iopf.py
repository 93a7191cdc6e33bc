"""`sva-iopf`: guest SVA with recoverable I/O page faults, by stall and by PRI, through the VMM's vSMMU.

The guest (guest_fw/scenarios/sva_iopf.c + guest_fw/lib/vsmmu.c) shares its CPU tables with its device and
has it copy pages that its tables do not map yet. The whole fault path is the real one: the physical SMMU
(IDR0.STALL_MODEL 0b00, ATS + PRI) stalls the transaction (CD.S=1) or answers the ATS request with no access
and takes the device's page request group into its PRI queue; the host driver drains the EVTQ / PRIQ into the
iopf queue (`harness/host/iopf.py`), which hands the group to the nested domain's iommufd fault object; the VMM
reads it (`harness/fault_forward.py`) and the vSMMU gives the guest an event with Stall=1 and a vSTAG, or PRI
queue entries; the guest maps the pages, invalidates (TLBI VAE1IS + DSB ISH; TLBI_NH_VA + CMD_SYNC on the
vSMMU unless it advertises BTM) and answers with CMD_RESUME or CMD_PRI_RESP, which the VMM writes back to the
fault object and the host driver turns into the physical CMD_RESUME / CMD_PRI_RESP.

`mode`: "stall", "pri" or "both" (default: both runs, metrics prefixed `stall_` / `pri_`). `ok`: every copy
completed with no page lost or written twice (the guest checks it, guest_fw/scenarios/sva_iopf.c). Metrics per
mode (`stall_*`, `pri_*`): `faults` (stall events / page requests the guest handled), `groups` (stalls / page
request groups), `faults_per_round`, `vm_exits_per_fault` and `host_calls_per_fault` (fault fd reads and
writes plus HWPT_INVALIDATE calls) over the rounds, `lost`, `twice`; `vm_exits_per_invalidation` is the first
mode's exits per fault. Rollovers run between rounds as in sva-btm,
and the VMM advertises BTM only where the vIOMMU's VMID is the VM's pinned KVM VMID, so the per-fault cost
shows what BTM saves: without it every fault also costs a forwarded TLBI_NH_VA.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .platform import RECOVERABLE_FEATURES
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["SvaIopf", "MODES"]

MODES = ("stall", "pri")
_MODE_PARAM = {"stall": 0, "pri": 1}


def _decode(value: int) -> tuple[int, int, int, int]:
    """(faults, groups, lost, twice) of one round's report value (guest_fw/scenarios/sva_iopf.c)."""
    return value & 0xFFFF, (value >> 16) & 0xFFFF, (value >> 32) & 0xFFFF, (value >> 48) & 0xFFFF


def run_mode(res: ScenarioResult, mode: str, rounds: int, pages: int, tracer: Tracer | None) -> dict[str, Any]:
    """One run of the guest in `mode`; returns its metrics (and notes what happened)."""
    run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, tracer=tracer, stack="vsmmu",
                 program="sva_iopf", params=[rounds, _MODE_PARAM[mode], pages], features=RECOVERABLE_FEATURES,
                 vmm_kw=dict(ats=True, iopf=True))
    out = run.plat.run(timeout=60.0)
    run.check_pins()
    reps = [r for r in run.plat.reports_of("sva") if r["index"] > 0]      # index 0: the set-up is done
    faults = groups = lost = twice = 0
    for r in reps:
        f, g, lo, tw = _decode(r["value"])
        faults, groups, lost, twice = faults + f, groups + g, lost + lo, twice + tw
    cost = run.plat.vsmmu_cost("sva")                  # since the set-up report
    n = faults
    err = run.plat.attach_errors.get("sva")
    good = sum(r["outcome"] == "fresh" for r in reps)
    m = dict(rounds=len(reps), good_rounds=good, faults=faults, groups=groups, lost=lost, twice=twice,
             failed_copies=sum(r["outcome"] == "fault" for r in reps),
             faults_per_round=faults / len(reps) if reps else 0.0,
             vm_exits_per_fault=cost.get("vm_exits", 0) / n if n else 0.0,
             host_calls_per_fault=((cost.get("fault_reads", 0) + cost.get("fault_writes", 0)
                                    + cost.get("host_calls", 0)) / n) if n else 0.0,
             btm_advertised=int(bool(run.plat.devices["sva"].nested_vm.vsmmu.features.btm))
             if "sva" in run.plat.devices else 0,
             rollovers=run.plat.kvm.vmids.rollovers, pinned_vmid_changes=run.pin_changes,
             broadcasts=run.plat.smmu_broadcasts(),
             ok=err is None and out.exit_code == 0 and good == rounds and len(reps) == rounds)
    res.note(f"{mode}: {faults} fault(s) in {groups} group(s) over {len(reps)} copies of {pages} page(s); "
             f"{m['vm_exits_per_fault']:.2f} VM exits and {m['host_calls_per_fault']:.2f} host calls per fault "
             f"(BTM {'advertised' if m['btm_advertised'] else 'not advertised'}); lost {lost}, twice {twice}")
    res.note(f"{mode}: guest: {out.message}")
    if err:
        res.error = err
    return m


class SvaIopf(Scenario):
    name = "sva-iopf"
    seed = "002"
    summary = ("guest SVA with recoverable I/O page faults: the device touches unmapped pages, the guest maps "
               "them and resumes (stall) or answers the page requests (PRI) through its vSMMU")
    vms_meaning = "VMs on the host (the SVA VM + others time-sliced with it)"
    default_vms = 2
    options = {"mode": (("stall", "pri", "both"), "both", "recoverable fault mechanism: stall, pri or both")}

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, mode: str = "both", rounds: int = 3,
             pages: int = 4, **_: Any) -> None:
        if mode not in ("stall", "pri", "both"):
            raise ValueError(f"mode must be stall, pri or both, not {mode!r}")
        modes = MODES if mode == "both" else (mode,)
        results = {md: run_mode(res, md, rounds, pages, tracer) for md in modes}
        m = res.metrics
        first = results[modes[0]]
        for md, r in results.items():
            m.update({f"{md}_{k}": v for k, v in r.items()
                      if k not in ("ok", "broadcasts", "rollovers", "pinned_vmid_changes")})
        m.update(vm_exits_per_invalidation=first["vm_exits_per_fault"], rollovers=first["rollovers"],
                 broadcast_invalidations=sum(r["broadcasts"] for r in results.values()),
                 pinned_vmid_changes=max(r["pinned_vmid_changes"] for r in results.values()),
                 stale_dma=sum(r["twice"] for r in results.values()))
        res.ok = all(r["ok"] for r in results.values()) and m["pinned_vmid_changes"] == 0
        parts = [f"{md}: {r['faults']} faults, {r['vm_exits_per_fault']:.1f} exits/fault, "
                 f"{r['host_calls_per_fault']:.1f} host calls/fault" for md, r in results.items()]
        if res.error:
            res.verdict = "the nested set-up failed: " + res.error
        elif res.ok:
            res.verdict = "every copy completed, no page lost or written twice; " + "; ".join(parts)
        else:
            bad = [md for md, r in results.items() if not r["ok"]]
            res.verdict = f"{', '.join(bad)}: copies failed or lost/duplicated data; " + "; ".join(parts)
