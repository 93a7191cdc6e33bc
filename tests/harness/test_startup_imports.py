"""What `smmu-harness run` imports: only what a run needs (start-up time is mostly imports).

The scenario and unittests packages, capstone (disassembly only for traces with `insn`, abort decoding and
`-d in_asm`) and pyelftools (the ELF reader is a struct parser; pyelftools is its test oracle) stay out of a
plain run; a run that asks for disassembly loads capstone. `run hello.elf` (tools/bench.py qemu "start-up")
also leaves out what its guest never uses (`NOT_FOR_HELLO`), and the board still has all of it when a guest
does use it."""
import json
import subprocess
import sys

from harness.build import build_guest

from guestbin import ROOT, guest_elf

_PROBE = """
import contextlib, io, json, sys
before = set(sys.modules)
from harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(set(sys.modules) - before)}))
"""

#: what `run hello.elf` must not import (modules the interpreter had loaded before the harness do not count)
NOT_FOR_HELLO = {
    "devmodel.virtio": "arm/run's chr-testdev is built at the guest's first virtio-mmio access",
    "devmodel.gic.gicv3": "the default board has QEMU 7.2's GICv2",
    "devmodel.gic.gicv2": "the GICv2 model is built at its first use (harness/gic.py): hello never uses it",
    "devmodel.gic.its": "an ITS is on GICv3 boards only",
    "harness.its": "an ITS is on GICv3 boards only",
    "devmodel.vmsa": "the stage-1 walker: memory read by VA with the MMU on",
    "harness.aborts": "abort decoding: a guest that faults",
    "hashlib": "OpenSSL: the native trap's library name hashes with the built-in _sha256",
    "subprocess": "compilers (build, the native trap's first build) and semihosting SYS_SYSTEM",
    "platform": "the native trap's cache key reads os.uname()",
    "traceback": "SMMU_HARNESS_DEBUG=1 after an internal error",
    "json": "a trace file or a golden comparison",
    "harness.build": "the builder (toolchain records): run needs only harness.locations (paths, cache dir)",
    "harness.trace": "the trace package (sessions, sinks, the catalogue): --trace, --trace-events, --expect-trace",
    "shlex": "build --cflags",
    "dataclasses": "records on run's path are devmodel.record.Frozen (a dataclass is compiled at class creation)",
    "inspect": "Unicorn's library loader asks it for a path only (harness/ucload.py)",
    "importlib.resources": "Unicorn's library loader asks it for a path only (harness/ucload.py)",
    "tempfile": "importlib.resources' (harness/ucload.py)",
}


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


def test_a_run_of_hello_imports_nothing_its_guest_does_not_use():
    code, mods = _modules_after("run", str(guest_elf("hello")))
    assert code == 0 and "harness.trap" in mods and "harness.gic" in mods
    assert {m: why for m, why in NOT_FOR_HELLO.items() if _loaded(mods, m)} == {}


_DATACLASS_SPY = """
import contextlib, dataclasses, io, json, sys
made, real = [], dataclasses.dataclass
def spy(cls=None, /, **kw):                 # @dataclass, @dataclass(...) and make_dataclass all come here
    def wrap(c):
        made.append(f"{c.__module__}.{c.__qualname__}")
        return real(c, **kw)
    return wrap if cls is None else wrap(cls)
dataclasses.dataclass = spy
from harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "made": made}))
"""


def test_a_run_of_hello_creates_no_dataclass():
    """A dataclass costs ~340 us at class creation (its methods are compiled with exec): a record on run's path
    is a devmodel.record.Frozen class (docs/DESIGN.md "Records"). The spy sees every dataclass the run makes."""
    p = subprocess.run([sys.executable, "-c", _DATACLASS_SPY, "run", str(guest_elf("hello"))], capture_output=True,
                       text=True, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["code"] == 0
    assert out["made"] == [], (f"{out['made']}: dataclasses created by `run hello.elf`; make them "
                               "devmodel.record.Frozen records or import them where they are used")


def test_a_gicv3_run_has_its_its_and_a_virtio_guest_its_chr_testdev():
    code, mods = _modules_after("run", "--gic", "3", str(guest_elf("hello")))
    assert code == 0 and {"devmodel.gic.gicv3", "devmodel.gic.its", "harness.its"} <= mods
    oracle = build_guest([ROOT / "tests" / "devmodel" / "virtio" / "guests" / "virtio_oracle.c"],
                         name="virtio_oracle").path                  # ends with "3q" to chr-testdev: status 7
    code, mods = _modules_after("run", str(oracle))
    assert code == 7 and _loaded(mods, "devmodel.virtio")


def test_a_run_whose_trace_shows_instructions_loads_capstone(tmp_path):
    code, mods = _modules_after("run", str(guest_elf("tlbi_el1_forms")), "--trace", str(tmp_path / "t.txt"))
    assert code == 0 and _loaded(mods, "capstone")


def test_the_scenario_command_still_builds_its_parser():
    code, mods = _modules_after("scenario", "list")
    assert code == 0 and _loaded(mods, "harness.scenarios")


_MAIN = """
import atexit, gc, runpy, sys, threading, time
sys.argv = ["harness", *sys.argv[1:]]
atexit.register(lambda: print("atexit ran", file=sys.stderr))
atexit.register(lambda: print(f"gc enabled: {gc.isenabled()}", file=sys.stderr))
if sys.argv[-1] == "thread":          # a non-daemon thread still running: the interpreter joins it
    sys.argv.pop()
    threading.Thread(target=lambda: (time.sleep(1.0), print("thread done", flush=True))).start()
import os
real_exit = os._exit                  # says which exit ends the process
os._exit = lambda code: (sys.stderr.write("os._exit\\n"), sys.stderr.flush(), real_exit(code))
sys.stdout.write("unflushed, no newline")
runpy.run_module("harness", run_name="__main__")
"""


def test_python_m_harness_run_exits_fast_with_atexit_handlers_and_output_flushed():
    """`python3 -m harness run` ends with os._exit (no interpreter teardown), also with the daemon SIGINT
    watcher running (harness/interrupt.py): the status, the atexit handlers, buffered output and a non-daemon
    thread that still runs are as with the interpreter's own exit (which is then kept)."""
    hello = str(guest_elf("hello"))
    p = subprocess.run([sys.executable, "-c", _MAIN, "run", hello], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("unflushed, no newline") and "SUMMARY: 5 tests" in p.stdout
    assert p.stderr == "gc enabled: True\natexit ran\nos._exit\n"
    p = subprocess.run([sys.executable, "-c", _MAIN, "run", "--max-insns", "100", hello, "thread"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 124 and p.stdout.endswith("thread done\n") and p.stderr.endswith("atexit ran\n")


def test_run_starts_with_the_gc_off_and_runs_the_guest_with_it_on():
    """`python3 -m harness run`: no cyclic collection during the imports and the board's construction, what they
    made frozen (gc.freeze) and the collector on again for the guest (a `main()` of another caller, as here,
    never touches it)."""
    import gc

    from harness import cli
    probe = """
import gc, runpy, sys
from harness import cli, machine
seen = []
init, run = machine.Machine.__init__, machine.Machine.run
machine.Machine.__init__ = lambda self, **kw: (seen.append(gc.isenabled()), init(self, **kw))[1]
machine.Machine.run = lambda self, **kw: (seen.append((gc.isenabled(), cli.GC_OFF_FOR_START_UP,
                                                       gc.get_freeze_count() > 10000)), run(self, **kw))[1]
sys.argv = ["harness", *sys.argv[1:]]
import atexit
atexit.register(lambda: print("before import", START, "at the guest", seen, file=sys.stderr))
START = gc.isenabled()
runpy.run_module("harness", run_name="__main__")
"""
    p = subprocess.run([sys.executable, "-c", probe, "run", str(guest_elf("hello"))], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "before import True at the guest [False, (True, False, True)]\n"
    p = subprocess.run([sys.executable, "-c", "import gc, runpy, sys; sys.argv = ['harness', 'trace-events', 'x'];"
                        "import atexit; atexit.register(lambda: print(gc.isenabled(), file=sys.stderr));"
                        "runpy.run_module('harness', run_name='__main__')"], capture_output=True, text=True,
                       timeout=120)
    assert p.stderr.endswith("True\n")
    assert gc.isenabled() and cli.GC_OFF_FOR_START_UP is False
