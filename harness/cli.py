"""`smmu-harness` command line (also `python3 -m harness`).

    smmu-harness run ELF [--cpus N] [--max-insns N] [--timeout SEC] [-d CATS] [-D FILE] [--ktap]
                         [--el 1|2] [--hcr-fb 0|1] [--quantum N] [--ram-mib N]
    smmu-harness build [SRC ...] [-o OUT] [--no-runtime] [--cflags FLAGS]
    smmu-harness scenario list | run NAME [--policy P] [--vmid-bits 8|16] [--vms N] [--json] [--trace FILE] | report [-o DIR]

Exit statuses of `run` (harness/exits.py): the guest's status 0-123; 124 budget exhausted; 125 usage error or
bad input; 132 undefined instruction; 139 unhandled abort. A death prints one line to stderr. Bad input never
prints a Python traceback (set SMMU_HARNESS_DEBUG=1 to see one for internal errors).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import traceback
from typing import Sequence

from .cpu import CPU_MODELS, DEFAULT_CPU
from .exits import EXIT_BAD_INPUT, MAX_GUEST_STATUS, HarnessInputError, Kind, Outcome

__all__ = ["main", "build_parser", "add_run_arguments", "configure_machine", "cmd_run", "cmd_build",
           "KtapReport"]

PROG = "smmu-harness"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and status 125 instead of exiting with 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive_int(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return v


# -- run ------------------------------------------------------------------------------------------------
def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `smmu-harness run` (other features add theirs here)."""
    p.add_argument("elf", metavar="ELF", help="AArch64 guest executable")
    p.add_argument("--cpus", type=_positive_int, default=1, metavar="N",
                   help="vCPUs (secondaries start powered off; PSCI CPU_ON starts them) [1]")
    p.add_argument("--max-insns", type=_positive_int, default=None, metavar="N",
                   help="instruction budget, charged per scheduling slice; exhausted -> exit 124 "
                        "(makes Unicorn count instructions, several times slower)")
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="SEC",
                   help="wall-clock budget; exhausted -> exit 124 [300]")
    p.add_argument("-d", dest="log_categories", default=None, metavar="CATS",
                   help="log categories, comma separated: in_asm,int,guest_errors,unimp (or all)")
    p.add_argument("-D", dest="log_file", default=None, metavar="FILE", help="write the -d log to FILE")
    p.add_argument("--ktap", action="store_true",
                   help="print the guest's report lines as KTAP v1 on stdout; everything else goes to stderr")
    p.add_argument("--el", type=int, choices=(1, 2), default=1, help="exception level the vCPUs start at [1]")
    p.add_argument("--cpu", choices=tuple(CPU_MODELS), default=DEFAULT_CPU, help="vCPU model (Unicorn's) [max]")
    p.add_argument("--hcr-fb", type=int, choices=(0, 1), default=1,
                   help="HCR_EL2.FB seen by TLBI decoding: 1 broadcasts EL1 TLBIs (KVM's setting) [1]")
    p.add_argument("--quantum", type=_positive_int, default=None, metavar="N",
                   help="instructions per scheduling slice when several vCPUs run [10000]")
    p.add_argument("--ram-mib", type=_positive_int, default=128, metavar="N", help="guest RAM in MiB [128]")
    # tracing (issue 3): harness/trace
    p.add_argument("--trace", default=None, metavar="FILE", help="write the selected trace events to FILE")
    p.add_argument("--trace-format", choices=("text", "jsonl", "chrome"), default=None,
                   help="text (QEMU log style), jsonl, or chrome (Perfetto JSON) "
                        "[from the file name: .jsonl -> jsonl, .json -> chrome, else text]")
    p.add_argument("--trace-events", default=None, metavar="GLOBS",
                   help="events to trace, comma-separated globs, '-' removes (e.g. 'tlbi*,dvm*') "
                        "[the golden file's events, else tlbi*,dvm*]")
    p.add_argument("--expect-trace", default=None, metavar="GOLDEN",
                   help="compare the selected events with this JSON Lines golden (seq and fields it leaves "
                        "out are ignored); a difference -> exit 1")
    p.add_argument("--update-golden", action="store_true", help="rewrite the --expect-trace file instead")
    return p


def configure_machine(args: argparse.Namespace, machine) -> None:
    """Attach option-driven plugins (tracing, TLBI trapping ...) to the machine before the guest runs."""
    from .trace import TraceSession, for_machine
    from .trace.sinks import format_for
    from .trap import TlbiTrap

    trap = TlbiTrap(machine.interconnect, machine.tracer)
    machine.add_plugin(trap)
    try:
        trace = getattr(args, "trace", None)
        fmt = getattr(args, "trace_format", None) or (format_for(trace) if trace else "jsonl")
        session = TraceSession(trace=trace, fmt=fmt,
                               events=getattr(args, "trace_events", None),
                               expect_trace=getattr(args, "expect_trace", None),
                               update_golden=getattr(args, "update_golden", False))
    except (ValueError, KeyError, OSError) as e:
        raise UsageError(f"{PROG} run: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from None
    args.trace_session = session
    try:
        session.attach(machine.tracer, where=trap.where, **for_machine(machine))
    except OSError as e:
        session.close()
        raise UsageError(f"{PROG} run: --trace {args.trace}: {e.strerror or e}") from None


def finish_tracing(args: argparse.Namespace, code: int | None) -> int | None:
    """Close the trace files (every exit path) and apply the golden comparison to the exit status."""
    session = getattr(args, "trace_session", None)
    if session is None:
        return code
    diff = session.close()
    if code is None:                      # early close on the way out of the run; report once, below
        return None
    if session.updated is not None:
        print(f"{PROG}: wrote {session.updated} events to {args.expect_trace}", file=sys.stderr)
    if diff is not None:
        print(f"{PROG}: {diff}", file=sys.stderr)
        if code == 0:
            return 1
    return code


class KtapReport:
    """Collects `PASS:/FAIL:/SKIP:` lines from the console and renders KTAP v1 (kernel ktap.rst)."""

    LINE = re.compile(r"^(PASS|FAIL|SKIP|XFAIL|XPASS): (.*)$")

    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []
        self._partial = b""

    def feed(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            m = self.LINE.match(raw.decode("utf-8", "replace").rstrip("\r"))
            if m:
                self.results.append((m.group(1), m.group(2)))

    def render(self, outcome: Outcome, guest: str) -> str:
        self.feed(b"\n")
        out = ["KTAP version 1"]
        rows = []
        for tag, msg in self.results:
            desc = msg.replace("#", "\\#")
            if tag == "SKIP":
                rows.append(f"ok {{n}} {desc} # SKIP")
            elif tag in ("PASS", "XFAIL"):
                rows.append(f"ok {{n}} {desc}")
            else:
                rows.append(f"not ok {{n}} {desc}")
        clean = outcome.kind is Kind.EXIT and (outcome.exit_code == 0 or any(t == "FAIL" for t, _ in self.results))
        if not clean or not rows:
            status = "ok" if clean else "not ok"
            rows.append(f"{status} {{n}} {guest} # exit status {outcome.exit_code}: "
                        f"{outcome.message.replace('#', '')}")
        out.append(f"1..{len(rows)}")
        out += [r.format(n=i) for i, r in enumerate(rows, 1)]
        return "\n".join(out) + "\n"


def _console_writer(ktap: KtapReport | None):
    from .machine import write_console

    def write(vm, data: bytes, stream: int) -> None:
        out = sys.stderr if (ktap is not None or stream == 2) else sys.stdout
        if ktap is not None and stream == 1:
            ktap.feed(data)
        write_console(out, data)
    return write


def cmd_run(args: argparse.Namespace) -> int:
    from .elfload import ElfLoadError, load_elf
    from .log import Log
    from .machine import DEFAULT_QUANTUM, Machine

    try:
        log = Log(args.log_categories, args.log_file)
    except ValueError as e:
        raise UsageError(f"{PROG} run: -d: {e}") from None
    except OSError as e:
        raise UsageError(f"{PROG} run: -D {args.log_file}: {e.strerror or e}") from None
    ktap = KtapReport() if args.ktap else None
    try:
        image = load_elf(args.elf)
        machine = Machine(log=log, console=_console_writer(ktap), quantum=args.quantum or DEFAULT_QUANTUM)
        vm = machine.add_vm(ncpus=args.cpus, start_el=args.el, ram_size=args.ram_mib << 20, cpu=args.cpu)
        for v in vm.vcpus:
            v.hcr_fb = bool(args.hcr_fb)
        vm.load(image)
        configure_machine(args, machine)
        outcome = machine.run(max_insns=args.max_insns, timeout=args.timeout)
    except (ElfLoadError, HarnessInputError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:          # impossible machine configuration (e.g. too many vCPUs)
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        sys.stdout.flush()
        log.close()
        finish_tracing(args, None)
    code = outcome.exit_code
    if outcome.kind is not Kind.EXIT:
        print(f"{PROG}: {outcome.message}", file=sys.stderr)
    elif code != outcome.status:
        print(f"{PROG}: guest exit status {outcome.status} is outside 0-{MAX_GUEST_STATUS}; "
              f"reporting {code}", file=sys.stderr)
    code = finish_tracing(args, code)
    if ktap is not None:
        sys.stdout.write(ktap.render(outcome, os.path.basename(args.elf)))
        sys.stdout.flush()
    return code


# -- build ----------------------------------------------------------------------------------------------
def add_build_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="C/assembly sources of one guest (default: every guest in guest_fw/tests)")
    p.add_argument("-o", dest="output", default=None, metavar="OUT", help="copy the ELF to OUT")
    p.add_argument("--no-runtime", action="store_true", help="do not link the guest runtime (guest_fw/lib)")
    p.add_argument("--cflags", default="", metavar="FLAGS", help="extra compiler flags (one string)")
    p.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                   help="extra include directory")
    return p


def cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildError, build_guest, build_test_guest, test_guest_sources

    try:
        if args.sources:
            r = build_guest(args.sources, output=args.output, runtime=False if args.no_runtime else None,
                            cflags=shlex.split(args.cflags), include_dirs=args.include_dirs)
            print(r.path)
        else:
            if args.output:
                raise UsageError(f"{PROG} build: -o needs sources")
            for name in test_guest_sources():
                r = build_test_guest(name, cflags=shlex.split(args.cflags))
                print(f"{name}: {r.path}")
    except BuildError as e:
        print(f"{PROG} build: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_trace_events(args: argparse.Namespace) -> int:
    """List the trace events (QEMU `-trace help` style): name, fields, description; filtered by globs."""
    from devmodel.trace import select

    from .trace.catalog import all_events

    events = all_events()
    if args.globs:
        try:
            chosen = select(args.globs)
        except KeyError as e:
            raise UsageError(f"{PROG} trace-events: {e.args[0]}") from None
        events = [e for e in events if e.name in chosen]
    for e in events:
        print(f"{e.name}({', '.join(e.fields)})" + (f"  -- {e.doc}" if e.doc else ""))
    return 0


# -- entry point ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Arm SMMUv3/KVM guest harness on Unicorn.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run a guest ELF", description="Run an AArch64 guest ELF.")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    build = sub.add_parser("build", help="build guests (ziglang by default; CC/CROSS_COMPILE override)",
                           description="Build a guest ELF from C/assembly sources with the guest runtime.")
    add_build_arguments(build)
    build.set_defaults(func=cmd_build)
    events = sub.add_parser("trace-events", help="list the trace events and their fields",
                            description="List trace events (for --trace-events), optionally filtered by globs.")
    events.add_argument("globs", nargs="?", default=None, metavar="GLOBS",
                        help="comma-separated globs, e.g. 'tlbi*,dvm*,smmuv3_cmdq_*'")
    events.set_defaults(func=cmd_trace_events)
    from .scenarios.cli import add_scenario_parser   # scenario list|run|report (issue 8)
    add_scenario_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if getattr(args, "func", None) is None:
            raise UsageError(f"{PROG}: a command is required (run, build, scenario; see --help)")
        return args.func(args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: one line unless debugging
        if os.environ.get("SMMU_HARNESS_DEBUG"):
            traceback.print_exc()
        else:
            print(f"{PROG}: internal error: {type(e).__name__}: {e} (SMMU_HARNESS_DEBUG=1 for a traceback)",
                  file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
