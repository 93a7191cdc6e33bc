"""What `smmu-harness run` imports: only what a run needs (start-up time is mostly imports).

The scenario and unittests packages, capstone (disassembly only for traces with `insn`, abort decoding and
`-d in_asm`) and pyelftools (the ELF reader is a struct parser; pyelftools is its test oracle) stay out of a
plain run; a run that asks for disassembly loads capstone."""
import json
import subprocess
import sys

from guestbin import guest_elf

_PROBE = """
import contextlib, io, json, sys
from harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules_after(*argv: str) -> tuple[int, set[str]]:
    p = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["code"], set(out["modules"])


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_a_plain_run_imports_no_scenario_unittests_capstone_or_pyelftools():
    code, mods = _modules_after("run", str(guest_elf("hello")))
    assert code == 0 and "harness.machine" in mods
    for package in ("harness.scenarios", "harness.unittests", "capstone", "elftools"):
        assert not _loaded(mods, package), package
    assert not _loaded(mods, "devmodel.pci")      # the PCIe windows are mapped; the model loads on first access


def test_a_run_whose_trace_shows_instructions_loads_capstone(tmp_path):
    code, mods = _modules_after("run", str(guest_elf("tlbi_el1_forms")), "--trace", str(tmp_path / "t.txt"))
    assert code == 0 and _loaded(mods, "capstone")


def test_the_scenario_command_still_builds_its_parser():
    code, mods = _modules_after("scenario", "list")
    assert code == 0 and _loaded(mods, "harness.scenarios")
