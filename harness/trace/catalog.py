"""Every module that declares trace events, so that selecting events by name or glob (`--trace-events`)
sees the whole registry before the modules happen to be imported by a run."""
from __future__ import annotations

import importlib

from devmodel.trace import REGISTRY, EventDef

__all__ = ["EVENT_MODULES", "load_all", "all_events", "listing"]

EVENT_MODULES = (
    "devmodel.dvm",
    "devmodel.dmatest",
    "devmodel.gic.events",
    "devmodel.pl011",
    "devmodel.psci",
    "devmodel.semihosting",
    "devmodel.smmuv3.device",
    "devmodel.smmuv3.iotlb",
    "devmodel.smmuv3.translate",
    "devmodel.virtio.events",
    "devmodel.virtio.iommu.events",
    "harness.interrupts",
    "harness.machine",
    "harness.scheduler",
    "harness.pmu",
    "harness.timer",
    "harness.trap",
    "harness.virtio",
    "harness.host.vmid",
    "harness.host.iopf",
    "harness.host.smmu_driver",
    "harness.host.iommufd",
    "harness.host.msi",
    "harness.vsmmu",
    "harness.viommu",
    "harness.scenarios.platform",
)


def load_all() -> None:
    for name in EVENT_MODULES:
        importlib.import_module(name)


def all_events() -> list[EventDef]:
    load_all()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def listing(events: list[EventDef] | None = None) -> str:
    """`name(field, ...)  -- doc` per event, one a line (what `trace-events` and `--trace-events help` print,
    like QEMU's `-trace help`)."""
    return "".join(f"{e.name}({', '.join(e.fields)})" + (f"  -- {e.doc}" if e.doc else "") + "\n"
                   for e in (all_events() if events is None else events))
