"""`virtio-iommu`: the guest's DMA test device behind a virtio-iommu, three ways (seed 004).

The same SVA-style workload as `sva-btm` (map, DMA, change, invalidate, DMA; other VMs churn VMIDs with a
rollover every `rollover_every` yields), the guest guest_fw/scenarios/virtio_iommu.c with the driver
guest_fw/lib/viommu.c, the VMM harness/viommu.py (virtio-iommu on virtio-mmio, iommufd backend):

* `map`: virtio 1.2 MAP/UNMAP. The guest's mapping change is an UNMAP and a MAP, each a request (a VM exit),
  which the VMM shadows as IOMMU_IOAS_UNMAP / IOMMU_IOAS_MAP of a kernel-managed HWPT: the host driver
  invalidates its own ASID. The guest's tables are not shared; BTM plays no part.
* `table`: page-table sharing with the VMM's safe offer: ATTACH_TABLE with the CPU's stage-1 context becomes
  a nested HWPT on the VM's vIOMMU (VMID from the VMID policy); the BTM flag is offered only when that VMID
  is the VM's pinned KVM VMID. Without it the guest sends INVALIDATE after its TLBI (IOMMU_HWPT_INVALIDATE).
* `btm`: the naive VMM: BTM offered whenever the host SMMU has it, whatever the VMID policy, so the guest
  relies on its `TLBI VAE1IS` broadcasts, which carry its KVM VMID while the SMMU tags its entries with the
  vIOMMU's.

`viommu_pgtable` ("auto": only the table modes; "on"; "off": the table modes then find no extension and fail
cleanly) is whether the VMM offers the extension. `mode="all"` (default) runs the three; `ok` only if each
behaved correctly: every round completed, no fault, no cross-VM DMA, no stale DMA. Expected (as `sva-btm`):
`map` and `table` correct under every VMID policy, `btm` stale under `private` and, after a rollover,
`unpinned`; correct with `split`, `restricted`, `shared`. Metrics per mode (`map_*`, `table_*`, `btm_*`):
stale / cross-VM DMA, faults, whether BTM was offered, and per guest mapping change the VM exits (trapped
accesses to the transport), requests, host calls (iommufd ioctls) and
physical commands (host SMMU CMDQ entries, CMD_SYNCs included); `host_ops`: those calls and commands per
iommufd call.
"""
from __future__ import annotations

from typing import Any

from devmodel.trace import Tracer

from .base import Scenario
from .result import ScenarioResult
from .sva_btm import SvaRun

__all__ = ["VirtioIommuScenario", "MODES", "run_mode"]

MODES = ("map", "table", "btm")
_GUEST_MODE = {"map": 0, "table": 1, "btm": 1}
_ADVERTISE = {"map": "pinned", "table": "pinned", "btm": "host"}


def run_mode(res: ScenarioResult, mode: str, *, rounds: int, rollover_every: int, tracer: Tracer | None,
             page_tables: bool | None = None) -> dict[str, Any]:
    """One run of the guest in `mode` (`page_tables`: whether the VMM enables the extension; default only for
    the table modes); returns its metrics."""
    tables = mode != "map" if page_tables is None else page_tables
    from ..viommu import DEFAULT_ENDPOINT
    run = SvaRun(res.policy, res.vmid_bits, res.vms, rounds=rounds, rollover_every=rollover_every, tracer=tracer,
                 stack="viommu", advertise_btm=_ADVERTISE[mode],
                 params=[rounds, _GUEST_MODE[mode], 0, DEFAULT_ENDPOINT], vmm_kw=dict(page_tables=tables))
    sub = ScenarioResult(res.scenario, res.policy, res.vmid_bits, res.vms)
    run.execute(sub)
    # the port's counters and the over-invalidation measure say nothing here: the transport's are below
    m = {k: v for k, v in sub.metrics.items() if k not in ("vm_exits_per_invalidation", "over_invalidated_entries")}
    a = run.plat.devices.get("sva")
    vv = a.viommu_vm if a is not None else None
    err = run.plat.attach_errors.get("sva")
    changes = m["rounds"]
    cost = _cost_since(vv, run.plat.snapshots.get("sva"))
    m.update({f"{k}_per_change": (v / changes if changes else 0.0) for k, v in cost.items()
              if not k.startswith("op:")})
    m["host_ops"] = _host_ops(cost)
    m.update(btm_offered=int(bool(vv and vv.btm_offered)), viommu_vmid=vv.vmid if vv else None,
             requests=dict(_requests(vv)), guest_exit=run.outcome.exit_code,
             ok=err is None and run.bad == 0 and run.outcome.exit_code == 0 and m["rounds"] == rounds
             and m["pinned_vmid_changes"] == 0 and m["cross_vm_dma"] == 0)
    for n in sub.notes:
        res.note(f"{mode}: {n}")
    res.note(f"{mode}: BTM {'offered' if m['btm_offered'] else 'not offered'}; per mapping change "
             f"{m['vm_exits_per_change']:.1f} VM exits, {m['host_calls_per_change']:.1f} host calls, "
             f"{m['host_cmds_per_change']:.1f} physical commands")
    if err:
        res.error = err
        m["ok"] = False
    return m


def _cost_since(vv: Any, snap: dict | None) -> dict[str, float]:
    if vv is None:
        return dict(vm_exits=0, kicks=0, host_calls=0, host_cmds=0)
    now = vv.cost()
    return {k: now[k] - (snap or {}).get(k, 0) for k in now}


def _host_ops(cost: dict[str, float]) -> dict[str, dict[str, float]]:
    """{iommufd call: {"calls": n, "cmds": n}} of the rounds (the calls made for the guest's changes)."""
    out: dict[str, dict[str, float]] = {}
    for k, v in cost.items():
        if k.startswith("op:") and v:
            _, op, what = k.split(":")
            out.setdefault(op, {"calls": 0, "cmds": 0})[what] = v
    return dict(sorted(out.items()))


def _requests(vv: Any) -> dict[str, int]:
    if vv is None:
        return {}
    return {f"{t}:{s}": n for (t, s), n in sorted(vv.device.requests.items())}


class VirtioIommuScenario(Scenario):
    name = "virtio-iommu"
    seed = "004"
    summary = ("guest DMA behind a virtio-iommu: MAP/UNMAP shadowing, page-table sharing with the VMM's safe BTM "
               "offer, and a naive VMM that offers BTM whatever the VMID policy")
    vms_meaning = "VMs on the host (the virtio-iommu VM + others time-sliced with it)"
    default_vms = 3
    options = {"mode": (("map", "table", "btm", "all"), "all",
                        "map: MAP/UNMAP; table: shared tables, BTM only with a pinned VMID; btm: BTM always offered"),
               "viommu_pgtable": (("auto", "on", "off"), "auto",
                                  "the VMM offers page-table sharing: auto (the table modes only), on, off")}

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None = None, mode: str = "all", rounds: int = 6,
             rollover_every: int = 2, viommu_pgtable: str = "auto", **_: Any) -> None:
        if mode not in MODES + ("all",):
            raise ValueError(f"mode must be map, table, btm or all, not {mode!r}")
        if viommu_pgtable not in ("auto", "on", "off"):
            raise ValueError(f"viommu_pgtable must be auto, on or off, not {viommu_pgtable!r}")
        tables = {"auto": None, "on": True, "off": False}[viommu_pgtable]
        modes = MODES if mode == "all" else (mode,)
        results = {md: run_mode(res, md, rounds=rounds, rollover_every=rollover_every, tracer=tracer,
                                page_tables=tables) for md in modes}
        m = res.metrics
        for md, r in results.items():
            m.update({f"{md}_{k}": v for k, v in r.items() if k not in ("ok", "kicks_per_change")})
        m.update(stale_dma=sum(r["stale_dma"] for r in results.values()),
                 cross_vm_dma=sum(r["cross_vm_dma"] for r in results.values()),
                 broadcast_invalidations=sum(r["broadcast_invalidations"] for r in results.values()),
                 rollovers=max(r["rollovers"] for r in results.values()),
                 pinned_vmid_changes=max(r["pinned_vmid_changes"] for r in results.values()),
                 vm_exits_per_invalidation=results[modes[0]]["vm_exits_per_change"])
        res.ok = all(r["ok"] and r["stale_dma"] == 0 for r in results.values())
        parts = [f"{md}: {'stale ' + str(r['stale_dma']) if r['stale_dma'] else 'fresh'}, "
                 f"{r['vm_exits_per_change']:.1f} exits/change" for md, r in results.items()]
        if res.error:
            res.verdict = "the VMM's set-up failed: " + res.error
        elif res.ok:
            res.verdict = "every DMA after the guest's change saw the new page; " + "; ".join(parts)
        else:
            stale = [md for md, r in results.items() if r["stale_dma"]]
            failed = [f"{md} (guest exit {r['guest_exit']}, {r['rounds']} of {rounds} rounds)"
                      for md, r in results.items() if not r["ok"]]
            why = [f"{', '.join(stale)}: stale DMA (broadcast TLBIs carry the KVM VMID, the SMMU's entries the "
                   "vIOMMU's)"] if stale else []
            why += [f"did not complete: {', '.join(failed)}"] if failed else []
            res.verdict = "; ".join(why + parts)
