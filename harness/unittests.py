"""`smmu-harness unittests`: a unittests.cfg suite run in-process, as kvm-unit-tests' run_tests.sh runs it
through arm/run with QEMU.

For each test of the catalogue (harness/catalogue.py), in order:

1. **Filters and skips** (scripts/runtime.bash `run`, same order and messages): names given on the command
   line, `-g GROUP`; `nodefault` tests without `-g` ("test marked as manual run only"); `arch` other than
   arm64; `machine` other than virt; `accel` other than tcg (this is an emulator: "kvm only, but
   ACCEL=tcg"); `disabled_if` evaluated with TARGET=qemu, ARCH=arm64, ACCEL=tcg, CONFIG_EFI empty; `check`
   files; a missing `file`. Then what this board cannot do yet is a SKIP naming it: the `migration` group
   (QEMU's migration harness), `qemu_params` that have no equivalent here (`-icount`...).
2. **The run**, as `arm/run` builds QEMU's command line (`qemu_command` gives it): `-machine virt -cpu max
   -smp N -m M -append ARGS` plus the chr-testdev virtio console on the highest transport (harness/virtio.py)
   and, for images, `-device pci-testdev` at 00:01.0 (harness/pci.py); `-machine gic-version=2|3`,
   `virtualization=on` (start at EL2) and `mte=on` are honoured, `-m` sets the RAM. This project's own tests
   (sources) are built and run with their keys (`el`, `hcr_fb`, `vmid`, `expect_trace`, ...). The wall-clock
   `timeout` ends a run with 124, as arm/run's `timeout(1)` does.
3. **The verdict** from the status (harness/exits.py: chr-testdev's code as arm/run reads QEMU's status): images
   PASS on 0, SKIP on 77, FAIL otherwise (an image that ended without the testdev: QEMU's 0, which arm/run
   counts as a failure); sources PASS when the status is their `exit` and the golden trace matches. Lines as
   run_tests.sh prints them: `PASS name (SUMMARY)`, `FAIL name (timeout; duration=90s)`, `FAIL name
   (terminated on SIGSEGV)`, `SKIP name (reason)`; colours only on a terminal. `-t` prints TAP 13 instead, as
   run_tests.sh's `-t` does: one `ok`/`not ok` line per PASS/FAIL/SKIP line of each guest, plus timeouts and
   signals, then the plan.

`-j N` runs the tests in N worker processes (harness/parallel.py); results are printed in catalogue order, so
the output is the same as with `-j 1`. The runner exits 1 when a test failed, 0 otherwise, 125 for a bad
catalogue or usage.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .catalogue import CatalogueError, TestEntry, disabled, parse_catalogue
from .exits import EXIT_BUDGET, EXIT_SKIP, Kind, kut_status

__all__ = ["Options", "TestResult", "run_test", "run_suite", "format_line", "tap_lines", "qemu_command",
           "machine_config", "MachineConfig", "run_entry", "RunRecord", "run_qemu", "ARCH", "ACCEL", "TARGET"]

ARCH, ACCEL, TARGET, MACHINE = "arm64", "tcg", "qemu", "virt"
DEFAULT_RAM_MIB = 128                     # QEMU virt's default -m
COLOURS = {"PASS": "\033[32m", "SKIP": "\033[33m", "FAIL": "\033[31m"}


@dataclass(frozen=True)
class Options:
    """What selects and shapes the run (run_tests.sh's options and environment)."""
    group: str | None = None
    tests: tuple[str, ...] = ()
    timeout: float | None = None          # TIMEOUT: overrides every test's
    update_golden: bool = False


@dataclass(frozen=True)
class MachineConfig:
    """The board a test runs on, from `smp`, `qemu_params` and the project's keys."""
    cpus: int
    ram_mib: int = DEFAULT_RAM_MIB
    gic_version: int = 2                  # QEMU 7.2 virt's default under TCG (the tree's GIC node)
    start_el: int = 1
    mte: bool = False                     # -machine mte=on (harness/mte.py)
    unsupported: tuple[str, ...] = ()     # qemu_params this board has no equivalent for


@dataclass
class RunRecord:
    """What one run gave: the outcome, the console output, the golden comparison (project tests)."""
    outcome: Any
    output: bytes
    diff: Any = None
    updated: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    testdev_used: bool = False


@dataclass
class TestResult:
    name: str
    verdict: str                          # PASS, FAIL or SKIP
    detail: str = ""                      # the SUMMARY in parentheses, or empty
    reason: str | None = None             # a skip's or a failure's reason (printed in parentheses instead)
    status: int | None = None             # the arm/run-level status, None when the test did not run
    output: str = ""
    message: str = ""                     # the outcome's message

    __test__ = False


# -- the machine -------------------------------------------------------------------------------------------
def _mem_mib(text: str) -> int | None:
    m = re.fullmatch(r"(\d+)([MG]?)(?:i?B)?", text.strip(), re.I)
    if m is None:
        return None
    n = int(m.group(1))
    return n << 10 if m.group(2).upper() == "G" else n


def machine_config(entry: TestEntry) -> MachineConfig:
    """The board `arm/run` would give the test: `-m`, `-machine gic-version=/virtualization=`; other QEMU
    options are listed as unsupported (the test is then skipped, saying which)."""
    cfg = MachineConfig(cpus=entry.cpus, start_el=entry.el)
    bad: list[str] = []
    words = list(entry.qemu_params)
    while words:
        w = words.pop(0)
        val = words.pop(0) if w in ("-m", "-machine", "-M", "-smp", "-cpu", "-icount", "-global") and words \
            else None
        if w == "-m" and val is not None and _mem_mib(val):
            cfg = replace(cfg, ram_mib=_mem_mib(val))
        elif w in ("-machine", "-M") and val is not None:
            for prop in val.split(","):
                key, _, v = prop.partition("=")
                if key == "gic-version" and v in ("2", "3"):
                    cfg = replace(cfg, gic_version=int(v))
                elif key == "virtualization" and v in ("on", "off"):
                    cfg = replace(cfg, start_el=2 if v == "on" else 1)
                elif key == "mte" and v in ("on", "off"):
                    cfg = replace(cfg, mte=v == "on")
                elif key != "virt":
                    bad.append(f"-machine {prop}")
        elif w == "-smp" and val is not None and val.isdigit():
            cfg = replace(cfg, cpus=int(val))
        else:
            bad.append(w if val is None else f"{w} {val}")
    return replace(cfg, unsupported=tuple(bad))


def environment() -> bytes:
    """The environment file arm/run passes with `-initrd` (scripts/arch-run.bash `initrd_create`:
    `env_params`, `env_errata`) for `ACCEL=tcg`: TARGET, QEMU_ACCEL, the QEMU version variables (empty: this
    is not a QEMU binary, as env_params writes them when it finds none), the host kernel's version as
    `uname -r` splits, and ERRATA_FORCE=y, which TCG runs get (kvm-unit-tests lib/errata.h reads it)."""
    release = os.uname().release
    version, patch, rest = (release.split(".", 2) + ["", ""])[:3]
    sub, _, extra = rest.partition("-")
    digits = lambda t: re.match(r"[0-9]*", t).group(0)          # noqa: E731 - bash ${v%%[!0-9]*}
    env = [("TARGET", TARGET), ("QEMU_ACCEL", ACCEL), ("QEMU_VERSION_STRING", ""), ("QEMU_MAJOR", ""),
           ("QEMU_MINOR", ""), ("QEMU_MICRO", ""), ("KERNEL_VERSION_STRING", release), ("KERNEL_VERSION", version),
           ("KERNEL_PATCHLEVEL", patch), ("KERNEL_SUBLEVEL", digits(sub)), ("KERNEL_EXTRAVERSION", digits(extra)),
           ("ERRATA_FORCE", "y")]
    return "".join(f"{k}={v}\n" for k, v in env).encode()


def qemu_command(entry: TestEntry, qemu: str = "qemu-system-aarch64", initrd: str | None = None) -> list[str]:
    """The QEMU command arm/run runs for `entry` (less `timeout(1)`); `initrd`: the environment file's path."""
    cmd = [qemu, "-nodefaults", "-machine", "virt", "-accel", "tcg", "-cpu", "max", "-device",
           "virtio-serial-device", "-device", "virtconsole,chardev=ctd", "-chardev", "testdev,id=ctd",
           "-device", "pci-testdev", "-display", "none", "-serial", "stdio", "-kernel", str(entry.source),
           "-smp", str(entry.cpus)]
    if entry.test_args is not None:
        cmd += ["-append", entry.test_args]
    return cmd + list(entry.qemu_params) + (["-initrd", initrd] if initrd else [])


def run_entry(entry: TestEntry, update_golden: bool = False, trace_file: str | os.PathLike | None = None,
              timeout: float | None = None) -> RunRecord:
    """Build (sources) and run one test on a fresh machine: the path `smmu-harness run` takes with these
    options. Raises CatalogueError for a test that cannot run as written."""
    from .build import build_guest
    from .machine import Machine
    from .trace import Annotator, TraceSession
    from .trap import TlbiTrap

    if not entry.source.is_file():
        raise CatalogueError(f"[{entry.name}]: {entry.source} does not exist")
    if entry.expect_trace is not None and not update_golden and not entry.expect_trace.is_file():
        raise CatalogueError(f"[{entry.name}]: golden {entry.expect_trace} missing (run with --update-golden)")
    cfg = machine_config(entry)
    image = str(build_guest([entry.source], name=entry.source.stem).path) if entry.is_source else str(entry.source)
    output = bytearray()
    m = Machine(console=lambda vm, data, stream: output.extend(data))
    # The TLBI trap broadcasts TLBIs to the other vCPUs and traces them; a single-vCPU image without a golden
    # needs neither (Unicorn executes the Armv8.0 TLBIs kvm-unit-tests uses itself) and runs without its
    # per-TLBI hook: kvm-unit-tests' MMU set-up alone issues one TLBI per page of RAM.
    trap = TlbiTrap(m.interconnect, m.tracer) if entry.is_source or cfg.cpus > 1 or trace_file else None
    if trap is not None:
        m.add_plugin(trap)
    vm = m.add_vm(ncpus=cfg.cpus, start_el=cfg.start_el, vmid=entry.vmid, ram_size=cfg.ram_mib << 20,
                  chr_testdev=not entry.is_source, mte=cfg.mte)
    for v in vm.vcpus:
        v.hcr_fb = entry.hcr_fb
    if not entry.is_source:
        vm.pcie.add_testdev()                       # arm/run: -device pci-testdev (QEMU has it)
    vm.gic_version = cfg.gic_version                # -machine gic-version=N: the tree describes that GIC
    # as QEMU's -kernel (harness/image.py) with -append and, for images, arm/run's environment as -initrd
    vm.load(image, append=entry.test_args, initrd=None if entry.is_source else environment())

    def read(cpu, pc, n):
        word = m.vcpus[cpu].insn_at(pc) if cpu is not None else None
        return None if word is None else word.to_bytes(4, "little")

    annotate = Annotator(read, lambda cpu, pc: m.vcpus[cpu].vm.symbolize(pc) if cpu is not None else None)
    session = TraceSession(trace=trace_file, fmt="jsonl", events=entry.trace_events,
                           expect_trace=entry.expect_trace,
                           update_golden=update_golden and entry.expect_trace is not None)
    with session:
        session.attach(m.tracer, annotate=annotate, where=trap.where if trap is not None else None)
        outcome = m.run(timeout=timeout or entry.timeout, max_insns=entry.max_insns)
    testdev = vm.virtio.testdev
    return RunRecord(outcome, bytes(output), session.diff, session.updated,
                     session.collect.objs if session.collect is not None else [],
                     testdev is not None and testdev.exit_code is not None)


def run_qemu(entry: TestEntry, qemu: str = "qemu-system-aarch64", timeout: float | None = None) -> TestResult:
    """The same test under QEMU itself, with arm/run's command line (`qemu_command`), judged as run_tests.sh
    judges it (QEMU's status through `kut_status`; output on stderr other than warnings makes a 1 a failure,
    scripts/vmm.bash). The cross-check and the benchmark use it."""
    import subprocess
    import tempfile
    limit = timeout or entry.timeout
    with tempfile.NamedTemporaryFile(prefix="kvm-unit-tests-env.") as env:
        env.write(environment())
        env.flush()
        try:
            p = subprocess.run(qemu_command(entry, qemu, env.name), capture_output=True, timeout=limit,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            return TestResult(entry.name, "FAIL", _summary(out), f"timeout; duration={limit:g}s", EXIT_BUDGET, out)
    status = kut_status(p.returncode)
    errors = [x for x in p.stderr.decode("utf-8", "replace").splitlines() if "warning" not in x.lower()]
    if p.returncode == 1 and errors:
        status = 1
    rec = RunRecord(_QemuOutcome(status), p.stdout, testdev_used=True)
    return verdict_of(entry, rec)


@dataclass(frozen=True)
class _QemuOutcome:
    """A QEMU run's status, shaped like an Outcome for `verdict_of` (kind EXIT: the status is final)."""
    exit_code: int
    kind: Kind = Kind.EXIT
    message: str = "qemu-system-aarch64"


# -- one test ------------------------------------------------------------------------------------------------
_ENV = {"TARGET": TARGET, "ARCH": ARCH, "ACCEL": ACCEL, "CONFIG_EFI": "", "MACHINE": ""}


def skip_reason(entry: TestEntry, opts: Options) -> str | None:
    """Why run_tests.sh would not run `entry` here (None: it runs); see the module docstring."""
    if opts.group is None and "nodefault" in entry.groups:
        return "test marked as manual run only"
    if entry.arch and entry.arch != ARCH:
        return f"{entry.arch} only"
    if entry.machine and entry.machine != MACHINE:
        return f"{entry.machine} only"
    if entry.accel and not re.match(rf"^{re.escape(entry.accel)}(,|$)", ACCEL):
        return f"{entry.accel} only, but ACCEL={ACCEL}"
    if entry.disabled_if:
        try:
            if disabled(entry.disabled_if, _ENV):
                return f"disabled because: {entry.disabled_if}"
        except ValueError as e:
            return str(e)
    for check in (entry.check or "").split():
        path, _, value = check.partition("=")
        try:
            ok = Path(path).read_text().strip() == value
        except OSError:
            ok = False
        if not ok:
            return f"{path} not equal to {value}"
    if not entry.source.is_file():
        return f"Test file '{entry.source}' not found"
    if "migration" in entry.groups:
        return "migration is not modelled (QEMU's migration harness)"
    bad = machine_config(entry).unsupported
    if bad:
        return f"not modelled: {' '.join(bad)}"
    return None


def _summary(output: str) -> str:
    """run_tests.sh's `extract_summary`: the SUMMARY line among the last five, as '(...)'."""
    for line in output.splitlines()[-5:]:
        if line.startswith("SUMMARY: "):
            return "(" + line[len("SUMMARY: "):].rstrip("\r") + ")"
    return ""


def verdict_of(entry: TestEntry, rec: RunRecord) -> TestResult:
    """The verdict of a finished run (see the module docstring)."""
    out = rec.output.decode("utf-8", "replace")
    status = rec.outcome.exit_code
    if not entry.is_source and not rec.testdev_used and rec.outcome.kind is Kind.EXIT:
        status = kut_status(status)       # QEMU ended without the testdev: arm/run's 0 -> 1
    res = TestResult(entry.name, "FAIL", _summary(out), None, status, out, rec.outcome.message)
    if entry.is_source and status == entry.exit:          # this project's tests: an expected death is a pass
        if rec.diff is None:
            res.verdict = "PASS"
        else:
            res.reason = str(rec.diff)
    elif status == EXIT_BUDGET:
        res.reason = f"timeout; duration={entry.timeout:g}s"
    elif status > 127:
        try:
            res.reason = f"terminated on {signal.Signals(status - 128).name}"
        except ValueError:
            res.reason = f"terminated on signal {status - 128}"
    elif entry.is_source:
        res.reason = f"exit status {status}, expected {entry.exit}: {rec.outcome.message}"
    elif status == 0:
        res.verdict = "PASS"
    elif status == EXIT_SKIP:
        res.verdict = "SKIP"
    return res


def run_test(entry: TestEntry, opts: Options = Options()) -> TestResult:
    """Skip, or run and judge, one test (never raises for the test's own problems: they are its FAIL)."""
    why = skip_reason(entry, opts)
    if why is not None:
        return TestResult(entry.name, "SKIP", reason=why)
    try:
        rec = run_entry(entry, update_golden=opts.update_golden, timeout=opts.timeout)
    except CatalogueError as e:
        return TestResult(entry.name, "FAIL", reason=str(e))
    except Exception as e:  # noqa: BLE001 - a bad image, a build failure: this test's FAIL, the suite goes on
        return TestResult(entry.name, "FAIL", reason=f"{type(e).__name__}: {e}".splitlines()[0])
    return verdict_of(entry, rec)


def _run_job(job: tuple[TestEntry, Options]) -> TestResult:
    return run_test(*job)


# -- output --------------------------------------------------------------------------------------------------
def format_line(r: TestResult, colour: bool = False) -> str:
    """run_tests.sh's `print_result`: `VERDICT name (summary)` or `VERDICT name (reason)`."""
    tag = f"{COLOURS[r.verdict]}{r.verdict}\033[0m" if colour else r.verdict
    return f"{tag} {r.name} ({r.reason})" if r.reason else f"{tag} {r.name} {r.detail}"


def tap_lines(r: TestResult) -> list[str]:
    """run_tests.sh -t: the test's own PASS/FAIL/SKIP lines as TAP ('TEST_NUMBER' is numbered later), its
    timeout or signal; tests skipped before running print nothing there."""
    rows = []
    for line in r.output.splitlines():
        line = line.rstrip("\r")
        tag, rest = line[:4], line[6:]
        if tag == "PASS":
            rows.append(f"ok TEST_NUMBER - {r.name}: {rest}")
        elif tag == "FAIL":
            rows.append(f"not ok TEST_NUMBER - {r.name}: {rest}")
        elif tag == "SKIP":
            rows.append(f"ok TEST_NUMBER - {r.name}: {rest} # skip")
    if r.status is not None and r.reason and (r.status == EXIT_BUDGET or r.status > 127):
        rows.append(f"not ok TEST_NUMBER - {r.name}: {r.reason}")
    elif r.status is None and r.verdict == "FAIL":                   # could not run at all
        rows.append(f"not ok TEST_NUMBER - {r.name}: {r.reason}")
    return rows


def run_suite(catalogue: str | os.PathLike, opts: Options = Options(), jobs: int = 1, tap: bool = False,
              out: TextIO | None = None, colour: bool | None = None, maxsmp: int | None = None,
              on_result: Callable[[TestResult], None] | None = None) -> list[TestResult]:
    """Run the catalogue's selected tests (names in `opts.tests`, `opts.group`) and print their lines in
    catalogue order; returns the results. Raises CatalogueError for a catalogue that cannot be read."""
    out = sys.stdout if out is None else out
    colour = (hasattr(out, "isatty") and out.isatty()) if colour is None else colour
    entries = [e for e in parse_catalogue(catalogue, maxsmp)
               if (not opts.tests or e.name in opts.tests) and (opts.group is None or opts.group in e.groups)]
    results: dict[int, TestResult] = {}
    printed = [0, 0]                      # next index to print, TAP test number

    if tap:
        _write(out, "TAP version 13\n")

    def finished(i: int, res: TestResult) -> None:
        results[i] = res
        while printed[0] in results:
            r = results[printed[0]]
            printed[0] += 1
            if on_result is not None:
                on_result(r)
            if tap:
                for row in tap_lines(r):
                    printed[1] += 1
                    _write(out, row.replace("TEST_NUMBER", str(printed[1]), 1) + "\n")
            else:
                _write(out, format_line(r, colour) + "\n")

    jobs_list = [(e, opts) for e in entries]
    if jobs <= 1 or len(entries) < 2:
        for i, job in enumerate(jobs_list):
            finished(i, _run_job(job))
    else:
        from .parallel import run_jobs
        if any(e.is_source for e in entries):
            _toolchain_identity()                     # once here: forked workers inherit it
        # multi-vCPU tests first (the long ones: broadcast TLBIs, IPIs), so no long test starts last;
        # the lines still come out in catalogue order
        order = sorted(range(len(entries)), key=lambda i: -entries[i].cpus)
        run_jobs(_run_job, [jobs_list[i] for i in order], jobs, lambda k, res: finished(order[k], res),
                 lambda k, e: TestResult(entries[order[k]].name, "FAIL",
                                         reason=f"worker died: {type(e).__name__}: {e}"),
                 preload=_PRELOAD)
    if tap:
        _write(out, f"1..{printed[1]}\n")
    return [results[i] for i in range(len(entries))]


#: what a run imports (run_entry's imports and theirs): once before the workers start, not once per worker
_PRELOAD = ["harness.unittests", "harness.machine", "harness.build", "harness.trace", "harness.trap", "devmodel.tlbi",
            "devmodel.virtio", "harness.native.sysreg", "json"]


def _toolchain_identity() -> None:
    """Ask the build toolchain for its identity (harness/build.py) in the parent; a toolchain that cannot run
    is each source test's FAIL, as without this."""
    from .build import BuildError, toolchain_from_env
    try:
        toolchain_from_env().identity()
    except BuildError:
        pass


def _write(out: TextIO, text: str) -> None:
    from .cli import write_out
    write_out(text, out)


def main_status(results: Sequence[TestResult]) -> int:
    """The runner's exit status: 1 when a test failed, else 0."""
    return int(any(r.verdict == "FAIL" for r in results))


# -- command line ------------------------------------------------------------------------------------------
def add_unittests_parser(sub) -> None:
    """`smmu-harness unittests [PATH/unittests.cfg] [-g GROUP] [-j N] [-t] [-l] [TEST ...]`."""
    from .cli import UNITTESTS_HELP
    p = sub.add_parser("unittests", help=UNITTESTS_HELP,
                       description="Run the tests of a kvm-unit-tests unittests.cfg (or this project's "
                                   "guest_fw/tests/unittests.cfg) as run_tests.sh runs them through arm/run.")
    p.add_argument("args", nargs="*", metavar="[CFG] TEST",
                   help="the catalogue (a path ending in .cfg; default ./arm/unittests.cfg if it exists, else "
                        "guest_fw/tests/unittests.cfg), then test names to run (default: all)")
    p.add_argument("-g", "--group", default=None, help="only the tests in GROUP (also runs nodefault ones)")
    p.add_argument("-j", "--parallel", type=int, default=1, metavar="N", help="N tests at a time [1]")
    p.add_argument("-t", "--tap13", action="store_true", help="TAP version 13 output")
    p.add_argument("-l", "--list", action="store_true", help="only list the tests")
    p.add_argument("--max-smp", type=int, default=None, metavar="N",
                   help="$MAX_SMP [the MAX_SMP environment variable, else the online CPUs]")
    p.add_argument("--update-golden", action="store_true", help="rewrite the expect_trace golden files")
    p.positionals_last = {"-g": True, "--group": True, "-j": True, "--parallel": True, "--max-smp": True}
    p.set_defaults(func=cmd_unittests)


def _catalogue_and_tests(args: list[str]) -> tuple[Path, tuple[str, ...]]:
    from .build import GUEST_FW, shipped_path
    if args and args[0].endswith(".cfg"):
        return Path(shipped_path(args[0])), tuple(args[1:])
    local = Path("arm") / "unittests.cfg"
    return (local if local.is_file() else GUEST_FW / "tests" / "unittests.cfg"), tuple(args)


def cmd_unittests(args) -> int:
    """Exit 0 when no test failed, 1 when one did, 125 for usage errors and unreadable catalogues."""
    from .cli import PROG, UsageError, write_out
    if args.parallel < 1:
        raise UsageError(f"{PROG} unittests: -j {args.parallel}: must be at least 1")
    if args.max_smp is not None and args.max_smp < 1:
        raise UsageError(f"{PROG} unittests: --max-smp {args.max_smp}: must be at least 1")
    cfg, tests = _catalogue_and_tests(list(args.args))
    if not cfg.is_file():
        raise UsageError(f"{PROG} unittests: {cfg}: no such catalogue")
    timeout = os.environ.get("TIMEOUT")
    try:
        opts = Options(group=args.group, tests=tests, update_golden=args.update_golden,
                       timeout=float(timeout.rstrip("s")) if timeout and timeout != "0" else None)
    except ValueError:
        raise UsageError(f"{PROG} unittests: TIMEOUT={timeout}: not a number of seconds") from None
    try:
        if args.list:
            for e in parse_catalogue(cfg, args.max_smp):
                if args.group is None or args.group in e.groups:
                    write_out(e.name + "\n")
            return 0
        known = {e.name for e in parse_catalogue(cfg, args.max_smp)}
        unknown = [t for t in tests if t not in known]
        if unknown:
            raise UsageError(f"{PROG} unittests: {cfg}: no test named {', '.join(unknown)}")
        results = run_suite(cfg, opts, jobs=args.parallel, tap=args.tap13, maxsmp=args.max_smp)
    except CatalogueError as e:
        print(f"{PROG} unittests: {e}", file=sys.stderr)
        return 125
    return main_status(results)
