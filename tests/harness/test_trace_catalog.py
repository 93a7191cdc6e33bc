"""The trace-event catalogue names every module that declares events, so `--trace-events NAME` works for
events of modules a run has not imported yet."""
import re
from pathlib import Path

from devmodel.trace import REGISTRY, select
from harness.trace.catalog import EVENT_MODULES, all_events

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_declaring_events_is_catalogued():
    declaring = set()
    for pkg in ("devmodel", "harness"):
        for path in (ROOT / pkg).rglob("*.py"):
            if re.search(r"^define\(", path.read_text(), re.M) and path.name != "trace.py":
                declaring.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert declaring == set(EVENT_MODULES)


def test_all_events_loads_the_registry_and_names_are_selectable():
    names = [e.name for e in all_events()]
    for n in ("tlbi_trap", "dvm_tlbi", "dvm_sync", "smmuv3_cmdq_opcode", "kvm_vmid_rollover",
              "smmu_iotlb_lookup_hit"):
        assert n in names and select(n) == frozenset({n})
    assert len(names) == len(REGISTRY) and names == sorted(names)
