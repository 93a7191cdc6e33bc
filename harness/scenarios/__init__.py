"""End-to-end scenarios: the mailing-list problems (README.md "Scenarios") reproduced, and the VMID policies
that fix them.

    from harness.scenarios import SCENARIOS, run_scenario
    res = run_scenario("sva-btm", policy="unpinned", vmid_bits=8, vms=3)
    res.ok, res.metrics["stale_dma"], res.to_json()

Each scenario runs guest programs (guest_fw/scenarios/) in Unicorn on `harness.machine.Machine`, with KVM
(VMID allocator), the TLBI trap (DVM broadcasts), the SMMUv3 model with BTM, DMA test devices and the host
SMMU driver; the VMID policy (`harness.host.vmid_policy`) is the only thing that changes between runs of a
scenario. Outcomes come from what the guests' DMAs see. `report.py` runs the matrix and writes the summary.
"""
from __future__ import annotations

from typing import Any

from .base import MAX_VMS, POLICY_NAMES, VMID_WIDTHS, Scenario
from .kvm_ordering import KvmOrdering
from .no_btm_forwarding import NoBtmForwarding
from .over_invalidation import OverInvalidation
from .result import REQUIRED_METRICS, ScenarioResult
from .sva_ats import SvaAts
from .sva_btm import SvaBtm
from .sva_dirty import SvaDirty
from .sva_iopf import SvaIopf
from .vmid_alias import VmidAlias

__all__ = ["SCENARIOS", "POLICY_NAMES", "MAX_VMS", "VMID_WIDTHS", "Scenario", "ScenarioResult", "REQUIRED_METRICS", "run_scenario",
           "get_scenario"]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SvaBtm(), VmidAlias(), OverInvalidation(),
                                                      NoBtmForwarding(), KvmOrdering(), SvaIopf(), SvaAts(),
                                                      SvaDirty())}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})") from None


def run_scenario(name: str, policy: str = "shared", vmid_bits: int = 16, vms: int | None = None,
                 **kw: Any) -> ScenarioResult:
    return get_scenario(name).run(policy, vmid_bits, vms, **kw)
