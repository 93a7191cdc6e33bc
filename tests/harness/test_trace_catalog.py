"""The trace-event catalogue names every module that declares events, so `--trace-events NAME` works for
events of modules a run has not imported yet."""
import json
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


def test_declared_names_are_the_registry():
    """The event names read from the modules' sources (`declared`) are what importing every module registers
    (in a fresh process: this one's registry also holds events that tests declare)."""
    import subprocess
    import sys

    code = ("import json; from devmodel.trace import REGISTRY; from harness.trace.catalog import declared, load_all;"
            "load_all(); d = declared(); print(json.dumps([sorted(n for v in d.values() for n in v), sorted(REGISTRY)]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    names, registry = json.loads(p.stdout)
    assert len(names) > 150 and names == registry


def test_modules_for_holds_every_event_a_pattern_names():
    from harness.trace.catalog import declared, modules_for

    all_events()
    index = declared()
    known = {n for v in index.values() for n in v}
    for pats in ("tlbi*,dvm*", "smmuv3_*", "kvm_vmid_rollover", "*iotlb*,-smmu_iotlb_lookup_hit", "*", "nosuch*",
                 ["dvm_sync", " gic*"]):
        names = {n for m in modules_for(pats) for n in index[m]}
        assert select(pats) & known <= names, pats
    assert set(modules_for("tlbi*,dvm*")) == {"devmodel.dvm", "harness.trap"}
    assert modules_for("*") == list(EVENT_MODULES) and modules_for("nosuch*") == []


def test_a_traced_run_imports_only_the_modules_its_events_need(tmp_path):
    """`run --trace F --trace-events 'tlbi*,dvm*'` (tools/bench.py qemu "tracing") does not import the SMMU model,
    virtio or the scenarios for the glob; `*` still sees every event."""
    import subprocess
    import sys

    from guestbin import guest_elf

    probe = ("import contextlib, io, json, sys; from harness.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()): code = main(sys.argv[1:])\n"
             "print(json.dumps([code, sorted(sys.modules)]))")
    for events, heavy in (("tlbi*,dvm*", False), ("*", True)):
        argv = ["run", str(guest_elf("hello")), "--trace", str(tmp_path / "t.jsonl"), "--trace-events", events]
        p = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
        code, mods = json.loads(p.stdout.strip().splitlines()[-1])
        assert code == 0
        for m in ("devmodel.smmuv3.device", "devmodel.virtio.iommu.device", "harness.scenarios.platform"):
            assert (m in mods) is heavy, (events, m)
