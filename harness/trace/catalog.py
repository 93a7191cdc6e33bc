"""Every module that declares trace events, so that selecting events by name or glob (`--trace-events`)
sees the whole registry before the modules happen to be imported by a run.

`load_for(patterns)` imports only the modules that declare an event the patterns name: `declared()` reads the
names from the modules' sources (each `define("name", ...)` starts a line; tests/harness/test_trace_catalog.py
checks the index against the registry), so a run traced with `tlbi*,dvm*` does not import the SMMU, virtio and
scenario modules (~65 ms); without the sources it imports them all (`load_all`)."""
from __future__ import annotations

import fnmatch
import functools
import importlib
import re
from pathlib import Path
from typing import Iterable

from devmodel.trace import REGISTRY, EventDef

__all__ = ["EVENT_MODULES", "load_all", "load_for", "modules_for", "declared", "all_events", "listing"]

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


_DEFINE = re.compile(r'^define\(\s*"([^"]+)"', re.M)


@functools.lru_cache(maxsize=1)
def declared() -> dict[str, tuple[str, ...]] | None:
    """Module -> the event names its source declares, without importing it; None when a source cannot be read."""
    import devmodel
    import harness

    roots = {"devmodel": Path(devmodel.__file__).parent, "harness": Path(harness.__file__).parent}
    out = {}
    for name in EVENT_MODULES:
        top, *rest = name.split(".")
        path = roots[top].joinpath(*rest)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        try:
            out[name] = tuple(_DEFINE.findall(path.read_text(encoding="utf-8")))
        except OSError:
            return None
    return out


def modules_for(patterns: str | Iterable[str]) -> list[str]:
    """The modules declaring an event that a pattern of `patterns` (`devmodel.trace.select`'s: comma-separated
    globs or names, `-name` removes) names; every module when the sources cannot be read."""
    index = declared()
    if index is None:
        return list(EVENT_MODULES)
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    wanted = [p.strip() for p in patterns if p.strip() and not p.strip().startswith("-")]
    return [m for m, names in index.items() if any(fnmatch.filter(names, p) for p in wanted)]


def load_for(patterns: str | Iterable[str] | None) -> None:
    """Import what `modules_for(patterns)` names (nothing for None)."""
    if patterns is not None:
        for name in modules_for(patterns):
            importlib.import_module(name)


def all_events() -> list[EventDef]:
    load_all()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def listing(events: list[EventDef] | None = None) -> str:
    """`name(field, ...)  -- doc` per event, one a line (what `trace-events` and `--trace-events help` print,
    like QEMU's `-trace help`)."""
    return "".join(f"{e.name}({', '.join(e.fields)})" + (f"  -- {e.doc}" if e.doc else "") + "\n"
                   for e in (all_events() if events is None else events))
