"""A fake runner for the report's guest-SVA arrangement: results shaped like sva-iopf's and sva-ats's, with
metrics that depend on the options (so a test sees which run went where), without running a guest."""
from __future__ import annotations

from harness.scenarios.result import ScenarioResult


class FakeSvaRunner:
    """`runner(name, policy, bits, vms, **opts)` for `run_report`; records every call in `calls`."""

    def __init__(self):
        self.calls: list[tuple[str, str, tuple]] = []

    def __call__(self, name, policy, bits, vms, **opts):
        self.calls.append((name, policy, tuple(sorted(opts.items()))))
        r = ScenarioResult(name, policy, bits, vms or 1, ok=opts.get("atc_inv") != "no", options=opts)
        pages = opts.get("pages", 4)
        r.metrics.update(stall_faults=8 * pages, stall_vm_exits_per_fault=3.0 + 1 / pages,
                         stall_host_calls_per_fault=2.0, pri_faults=8 * pages, pri_groups=6,
                         pri_vm_exits_per_fault=2.0 + 1 / pages, pri_host_calls_per_fault=2.0 / pages)
        return r
