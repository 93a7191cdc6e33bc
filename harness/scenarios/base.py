"""What a scenario is: a name, the label of the mailing-list post it reproduces (`seed`, README.md "Scenarios"),
and `run(policy, vmid_bits, vms) -> ScenarioResult`."""
from __future__ import annotations

import time
from typing import Any

from devmodel.trace import Tracer

from ..host.vmid_policy import POLICIES
from .result import ScenarioResult

__all__ = ["Scenario", "POLICY_NAMES", "MAX_VMS", "VMID_WIDTHS"]

POLICY_NAMES = tuple(POLICIES)        # private, unpinned, split, restricted, shared
VMID_WIDTHS = (8, 16)                 # VTCR_EL2.VS / SMMU_IDR0.VMID16: 8- or 16-bit VMIDs
#: most VMs one scenario run builds (each is a Unicorn instance with its own RAM: ~20 MB and ~0.2 s a VM)
MAX_VMS = 64


class Scenario:
    name = "?"
    seed = ""
    summary = ""
    vms_meaning = "VMs"
    default_vms = 2
    #: VM counts the report sweeps (over-invalidation and VM exits against the number of VMs)
    sweep_vms: tuple[int, ...] = ()
    #: scenario options of `scenario run` (`--name`): name -> (choices, default, help)
    options: dict[str, tuple[tuple[str, ...], str, str]] = {}

    def run(self, policy: str, vmid_bits: int = 16, vms: int | None = None, *, tracer: Tracer | None = None,
            **opts: Any) -> ScenarioResult:
        if policy not in POLICY_NAMES:
            raise ValueError(f"unknown VMID policy {policy!r} (choose from {', '.join(POLICY_NAMES)})")
        if vmid_bits not in VMID_WIDTHS:
            raise ValueError(f"VMID width must be 8 or 16, not {vmid_bits}")
        n = self.default_vms if vms is None else vms
        if not 1 <= n <= MAX_VMS:
            raise ValueError(f"--vms {n}: 1 to {MAX_VMS}")
        res = ScenarioResult(self.name, policy, vmid_bits, n,
                             options={k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool))})
        t0 = time.perf_counter()
        self._run(res, tracer=tracer, **opts)
        res.seconds = time.perf_counter() - t0
        return res

    def _run(self, res: ScenarioResult, *, tracer: Tracer | None, **opts: Any) -> None:
        raise NotImplementedError
