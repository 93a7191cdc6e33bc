"""The result every scenario returns, and its JSON form (`smmu-harness scenario run --json`).

JSON object: `scenario`, `policy`, `vmid_bits`, `vms`, `options` (the scenario options the run was given, e.g.
`{"mode": "pri"}`), `ok` (the system behaved correctly: no stale DMA, no cross-VM DMA, no silent failure),
`metrics` (always with the keys of `REQUIRED_METRICS`, plus scenario-specific ones), `verdict` (one line),
`notes` (what happened, in order), `error` (the clean failure's explanation, or null).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ScenarioResult", "REQUIRED_METRICS"]

REQUIRED_METRICS: dict[str, type] = {
    "stale_dma": int,                   # DMAs that saw a page the guest had unmapped and invalidated
    "cross_vm_dma": int,                # DMAs that reached another VM's memory
    "broadcast_invalidations": int,     # broadcast TLBIs the SMMU applied (BTM)
    "over_invalidated_entries": int,    # SMMU entries removed by broadcasts not meant for them
    "vm_exits_per_invalidation": float,  # VM exits per guest invalidation
    "rollovers": int,                   # KVM VMID generation rollovers
    "pinned_vmid_changes": int,         # times a pinned VMID changed (must be 0)
}


@dataclass
class ScenarioResult:
    scenario: str
    policy: str
    vmid_bits: int
    vms: int
    ok: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, t in REQUIRED_METRICS.items():
            self.metrics.setdefault(k, t())

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        m = {k: (float(v) if REQUIRED_METRICS.get(k) is float else v) for k, v in self.metrics.items()}
        return {"scenario": self.scenario, "policy": self.policy, "vmid_bits": self.vmid_bits, "vms": self.vms,
                "options": dict(self.options), "ok": bool(self.ok), "metrics": m, "verdict": self.verdict, "notes": list(self.notes),
                "error": self.error, "seconds": round(self.seconds, 3)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    def text(self) -> str:
        """Human-readable summary (what `scenario run` prints without --json)."""
        lines = [f"scenario {self.scenario}  policy {self.policy}  VMID bits {self.vmid_bits}  VMs {self.vms}"
                 + "".join(f"  {k} {v}" for k, v in self.options.items())]
        lines += [f"  {n}" for n in self.notes]
        lines.append("  metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items()))
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  {'OK' if self.ok else 'NOT OK'}: {self.verdict}")
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
