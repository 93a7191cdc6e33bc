"""`smmu-harness` command line (also `python3 -m harness`).

    smmu-harness run ELF [--cpus N] [--max-insns N] [--timeout SEC] [-d CATS] [-D FILE] [--ktap]
                         [--el 1|2] [--hcr-fb 0|1] [--quantum N] [--ram-mib N] [-s] [-S] [-gdb tcp::PORT]
    smmu-harness run -d help | --trace help | --trace-events help
    smmu-harness build [SRC ...] [-o OUT] [--no-runtime] [--cflags FLAGS] [-I DIR]
    smmu-harness trace-events [GLOBS]
    smmu-harness scenario list | run NAME [--policy P] [--vmid-bits 8|16] [--vms N] [--json] [--trace FILE]
                     | report [-o DIR] [-j N] ...
    smmu-harness unittests [CFG] [-g GROUP] [-j N] [-t] [-l] [TEST ...]

Exit statuses of `run` (harness/exits.py): the guest's status 0-123 (kvm-unit-tests guests: arm/run's status,
0 pass, 77 skip, 3 fail); 124 budget exhausted; 125 usage error or bad input; 132 undefined instruction; 137
killed from the debugger; 139 unhandled abort. A death prints one line to stderr. Bad input never
prints a Python traceback (set SMMU_HARNESS_DEBUG=1 to see one for internal errors); an unusable path is one
line naming it (125); output into a closed pipe is dropped quietly and the status stands (`main`).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from pathlib import Path
from typing import Sequence, TextIO

from .cpu import CPU_MODELS, DEFAULT_CPU
from .exits import EXIT_BAD_INPUT, MAX_GUEST_STATUS, HarnessInputError, Kind, Outcome

__all__ = ["main", "build_parser", "add_run_arguments", "configure_machine", "cmd_run", "cmd_build",
           "KtapReport", "write_out", "silence_closed", "EXIT_BROKEN_PIPE"]

PROG = "smmu-harness"
EXIT_BROKEN_PIPE = 141           # 128 + SIGPIPE: output not written through write_out met a closed pipe


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and status 125 instead of exiting with 2.

    `dash_value_options`: options whose value may start with '-' (`--cflags "-O0 -DFOO"`); argparse alone
    takes such a value for an option and says "expected one argument", so the word after one of these is
    always its value (`--cflags=-O0` works as well).

    `positionals_last`: the options of a command whose positionals may come between its options
    (`unittests CFG -j 2 TEST`, as run_tests.sh takes them), mapped to whether they take a value; the
    positionals are moved after the options before argparse, which otherwise stops at the first of them."""

    dash_value_options: frozenset[str] = frozenset()
    positionals_last: dict[str, bool] | None = None

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if args is not None and self.dash_value_options:
            args = list(args)
            joined: list[str] = []
            i = 0
            while i < len(args):
                if args[i] == "--":
                    joined += args[i:]
                    break
                if args[i] in self.dash_value_options and i + 1 < len(args):
                    joined.append(f"{args[i]}={args[i + 1]}")
                    i += 2
                    continue
                joined.append(args[i])
                i += 1
            args = joined
        if args is not None and self.positionals_last is not None:
            args = _positionals_last(list(args), self.positionals_last)
        return super().parse_known_args(args, namespace)


def _positionals_last(args: list[str], options: dict[str, bool]) -> list[str]:
    opts: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            words += args[i + 1:]
            break
        if a.startswith("-") and a != "-":
            opts.append(a)
            if options.get(a, False) and "=" not in a and i + 1 < len(args):
                opts.append(args[i + 1])
                i += 1
        else:
            words.append(a)
        i += 1
    return opts + words


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


_SIZE = r"(\d+(?:\.\d+)?)([KMGT]?)B?"       # compiled at its first use (re's cache): not at start-up
_SIZE_SHIFT = {"": 20, "K": 10, "M": 20, "G": 30, "T": 40}


def _qemu_mib(text: str) -> int:
    """QEMU's -m SIZE (softmmu/vl.c: a plain number is MiB; suffixes K, M, G, T) as a whole number of MiB."""
    m = re.fullmatch(_SIZE, text.strip().removeprefix("size="), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 256, 256M, 1G)")
    num, unit = m.group(1), m.group(2).upper()
    nbytes = int(float(num) * (1 << _SIZE_SHIFT[unit])) if "." in num else int(num) << _SIZE_SHIFT[unit]
    if nbytes <= 0 or nbytes % (1 << 20):
        raise argparse.ArgumentTypeError(f"{text}: guest RAM must be a positive whole number of MiB")
    return nbytes >> 20


def _smp(text: str) -> int:
    """QEMU's -smp N or -smp cpus=N (other topology keys are not modelled)."""
    t = text.strip()
    if "," in t or ("=" in t and not t.startswith("cpus=")):
        raise argparse.ArgumentTypeError(f"{text!r}: only N or cpus=N (no sockets/cores/threads topology)")
    return _positive_int(t.removeprefix("cpus="))


_ON_OFF = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def _machine(text: str) -> dict[str, int]:
    """QEMU's `-machine [type=]virt[,gic-version=2|3|max][,virtualization=on|off][,mte=on|off]` (hw/arm/virt.c's
    property names and errors; other properties are not modelled) -> {"gic": N, "el": 1|2, "mte": 0|1}."""
    out: dict[str, int] = {}
    for i, item in enumerate(x.strip() for x in text.split(",") if x.strip()):
        key, eq, val = item.partition("=")
        if not eq or key == "type":
            if (val if eq else key) == "virt" and (i == 0 or eq):
                continue
            raise argparse.ArgumentTypeError(f"{item!r}: only the virt machine is modelled")
        if key == "gic-version":
            if val not in ("2", "3", "max"):
                raise argparse.ArgumentTypeError(
                    "gic-version=host requires KVM" if val == "host" else
                    "gic-version=4: GICv4 is not modelled (2, 3 or max)" if val == "4" else
                    f"Invalid gic-version value {val!r}; valid values are 3, 2, host, max")
            out["gic"] = 3 if val == "max" else int(val)
        elif key == "virtualization" and val in _ON_OFF:
            out["el"] = 2 if _ON_OFF[val] else 1
        elif key == "mte" and val in _ON_OFF:
            out["mte"] = int(_ON_OFF[val])
        elif key in ("virtualization", "mte"):                 # QEMU's words for a bad boolean property
            raise argparse.ArgumentTypeError(f"Parameter '{key}' expects 'on' or 'off'")
        else:
            raise argparse.ArgumentTypeError(f"-machine {item}: not modelled (gic-version=, virtualization=, mte=)")
    return out


def board_options(args: argparse.Namespace, cmd: str = "run") -> tuple[int | None, int]:
    """(GIC version or None for the board's default, start EL) from --gic/--el and -machine, which must agree."""
    gic, el = args.gic, args.el
    for opts in args.machine or ():
        for key, mine, what in (("gic", gic, "--gic"), ("el", el, "--el")):
            if key in opts and mine is not None and mine != opts[key]:
                raise UsageError(f"{PROG} {cmd}: {what} {mine} contradicts -machine "
                                 f"{'gic-version' if key == 'gic' else 'virtualization'}")
        gic = opts.get("gic", gic)
        el = opts.get("el", el)
    return gic, 1 if el is None else el


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    """The board options `run` and `dtb` share: start EL and interrupt controller."""
    p.add_argument("--el", type=int, choices=(1, 2), default=None,
                   help="exception level the vCPUs start at [1] (QEMU: -machine virtualization=on for 2)")
    p.add_argument("--gic", type=int, choices=(2, 3), default=None,
                   help="interrupt controller: GICv2 or GICv3 (harness/gic.py) [2 up to 8 vCPUs, as QEMU 7.2 "
                        "virt under TCG; 3 above]")
    p.add_argument("-machine", "-M", dest="machine", type=_machine, action="append", metavar="OPTS",
                   help="QEMU's [virt,]gic-version=2|3|max,virtualization=on|off,mte=on|off")


# -- run ------------------------------------------------------------------------------------------------
def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `smmu-harness run` (other features add theirs here)."""
    p.add_argument("elf", metavar="IMAGE", nargs="?", default=None,
                   help="guest image as QEMU's -kernel takes it: AArch64 ELF, raw .bin/.flat, arm64 Image, gzip "
                        "(not needed with -d help, --trace-events help)")
    p.add_argument("-kernel", dest="kernel", default=None, metavar="FILE", help="the image (instead of IMAGE)")
    p.add_argument("--cpus", "-smp", type=_smp, default=1, metavar="N",
                   help="vCPUs (secondaries start powered off; PSCI CPU_ON starts them); -smp N or cpus=N [1]")
    p.add_argument("--max-insns", type=_positive_int, default=None, metavar="N",
                   help="instruction budget, charged per scheduling slice; exhausted -> exit 124 "
                        "(makes Unicorn count instructions, several times slower)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SEC",
                   help="wall-clock budget (time stopped in a debugger does not count); exhausted -> exit 124 "
                        "[300; none with -s/-gdb]")
    p.add_argument("-d", dest="log_categories", default=None, metavar="CATS",
                   help="log categories, comma separated: in_asm,int,guest_errors,unimp (or all; "
                        "'-d help' lists them)")
    p.add_argument("-D", dest="log_file", default=None, metavar="FILE", help="write the -d log to FILE")
    p.add_argument("--ktap", action="store_true",
                   help="print the guest's report lines as KTAP v1 on stdout; everything else goes to stderr")
    add_board_arguments(p)
    p.add_argument("--cpu", choices=tuple(CPU_MODELS), default=DEFAULT_CPU, help="vCPU model (Unicorn's) [max]")
    p.add_argument("--hcr-fb", type=int, choices=(0, 1), default=1,
                   help="HCR_EL2.FB seen by TLBI decoding: 1 broadcasts EL1 TLBIs (KVM's setting) [1]")
    p.add_argument("--quantum", type=_positive_int, default=None, metavar="N",
                   help="instructions per scheduling slice when several vCPUs run [10000]")
    p.add_argument("--ram-mib", type=_positive_int, default=128, metavar="N", help="guest RAM in MiB [128]")
    p.add_argument("-m", dest="ram_mib", type=_qemu_mib, metavar="SIZE",
                   help="guest RAM as QEMU spells it: 256 (MiB), 256M, 1G (a whole number of MiB)")
    # boot like -kernel (harness/image.py, harness/devicetree.py) and semihosting (harness/semihost.py)
    p.add_argument("--append", "-append", default=None, metavar="ARGS",
                   help="kernel command line: /chosen/bootargs and semihosting SYS_GET_CMDLINE")
    p.add_argument("--dtb", "-dtb", default=None, metavar="FILE",
                   help="the guest's device tree instead of the board's (fixed up as QEMU does)")
    p.add_argument("--semihosting-root", default=None, metavar="DIR",
                   help="directory holding the guest's semihosting files [none: no host files]")
    p.add_argument("--semihosting-allow-system", action="store_true",
                   help="let the guest run host commands (SYS_SYSTEM, cwd = the root; needs --semihosting-root)")
    p.add_argument("--semihosting-userspace", action="store_true",
                   help="semihosting calls from EL0 too (QEMU -semihosting-config userspace=on)")
    _add_board_arguments(p)
    _add_gdb_arguments(p)
    # tracing: harness/trace
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write the selected trace events to FILE ('-': stderr; "
                        "'--trace help' lists the events)")
    p.add_argument("--trace-format", choices=("text", "jsonl", "chrome"), default=None,
                   help="text (QEMU log style), jsonl, or chrome (Perfetto JSON); needs --trace "
                        "[from the file name: .jsonl -> jsonl, .json -> chrome, else text]")
    p.add_argument("--trace-events", default=None, metavar="GLOBS",
                   help="events to trace, comma-separated globs, '-' removes (e.g. 'tlbi*,dvm*'); needs "
                        "--trace or --expect-trace; 'help' lists them [the golden file's events, else tlbi*,dvm*]")
    p.add_argument("--expect-trace", default=None, metavar="GOLDEN",
                   help="compare the selected events with this JSON Lines golden (seq and fields it leaves "
                        "out are ignored); a difference -> exit 1")
    p.add_argument("--update-golden", action="store_true", help="rewrite the --expect-trace file instead")
    return p


def _add_board_arguments(p: argparse.ArgumentParser) -> None:
    """`run`'s initrd and virtio-mmio options (harness/image.py, harness/virtio.py)."""
    p.add_argument("--initrd", "-initrd", default=None, metavar="FILE",
                   help="initial ramdisk, loaded where QEMU loads it and named in /chosen (raw and Image kernels; "
                        "kvm-unit-tests' arm/run passes its environment this way)")
    p.add_argument("--no-chr-testdev", dest="chr_testdev", action="store_false",
                   help="no virtio console with chr-testdev on the last virtio-mmio transport (kvm-unit-tests' "
                        "arm/run adds one; without it their 'EXIT: STATUS=' line gives the status)")
    p.add_argument("-device", dest="devices", action="append", choices=("pci-testdev",), default=[],
                   metavar="DEV", help="plug QEMU's pci-testdev into the PCIe host bridge's bus 0 (next free slot, "
                                       "00:01.0 first; kvm-unit-tests' arm/run adds one); repeatable")
    p.add_argument("--virtio-mmio-modern", action="store_true",
                   help="virtio-mmio Version 2 transports (QEMU: -global virtio-mmio.force-legacy=false) "
                        "[legacy, Version 1, as QEMU]")
    p.add_argument("--virtio-iommu", action="store_true",
                   help="a virtio-iommu (virtio 1.2) on the next virtio-mmio transport (Version 2), with an emulated "
                        "DMA test device at 0x09100000 behind it as endpoint 0x10 (iommus = <&viommu 0x10>)")
    p.add_argument("--viommu-pgtable", action="store_true",
                   help="offer the virtio-iommu's page-table-sharing extension (F_ATTACH_TABLE; docs/virtio-iommu.md) "
                        "[off]")


def _add_gdb_arguments(p: argparse.ArgumentParser) -> None:
    """QEMU's -gdb, -s, -S (harness/gdbstub.py)."""
    p.add_argument("-gdb", dest="gdb", default=None, metavar="DEV",
                   help="serve gdb's remote protocol: tcp::PORT (on 127.0.0.1 only; port 0 picks a free one and "
                        "names it on stderr) or none")
    p.add_argument("-s", dest="gdb_default", action="store_true", help="shorthand for -gdb tcp::1234")
    p.add_argument("-S", dest="gdb_wait", action="store_true",
                   help="wait for the debugger before the first instruction (needs -s or -gdb)")


def wants_help(value: str | None) -> bool:
    """`-d help`, `--trace help`, `--trace-events help` (also as one item of a list, as QEMU accepts it)."""
    return value is not None and "help" in (v.strip() for v in value.split(","))


def check_trace_options(cmd: str, trace: str | None, fmt: str | None, events: str | None,
                        expect: str | None = None, update: bool = False) -> None:
    """Trace options that would do nothing, or nothing visible, are usage errors (never silent no-ops)."""
    if fmt is not None and trace is None:
        raise UsageError(f"{PROG} {cmd}: --trace-format {fmt} needs --trace FILE")
    if expect is not None and update:
        golden = Path(expect)
        if golden.is_dir() or not golden.parent.is_dir():
            raise UsageError(f"{PROG} {cmd}: --expect-trace {expect}: "
                             + ("is a directory" if golden.is_dir() else f"no such directory {golden.parent}"))
    if events is None:
        return
    from devmodel.trace import select

    from .trace.catalog import load_for

    load_for(events)
    try:
        chosen = select(events)
    except KeyError as e:
        raise UsageError(f"{PROG} {cmd}: {e.args[0]}") from None
    if trace is None and expect is None:
        raise UsageError(f"{PROG} {cmd}: --trace-events needs --trace FILE ('--trace -' for stderr)"
                         + (" or --expect-trace GOLDEN" if cmd == "run" else ""))
    if not chosen:
        raise UsageError(f"{PROG} {cmd}: --trace-events {events!r} selects no trace event "
                         f"(list them: {PROG} trace-events)")


def gdb_port(args: argparse.Namespace) -> int | None:
    """The gdb stub's port from -s / -gdb DEV (None: no stub); -S without one is a usage error."""
    spec = getattr(args, "gdb", None)
    if spec is None and not getattr(args, "gdb_default", False) and not getattr(args, "gdb_wait", False):
        return None                     # a plain run does not import the stub
    from .gdbstub import DEFAULT_PORT, parse_gdb_device

    port = None
    if spec is not None:
        try:
            port = parse_gdb_device(spec)
        except ValueError as e:
            raise UsageError(f"{PROG} run: {e}") from None
    if getattr(args, "gdb_default", False):
        if port is not None and port != DEFAULT_PORT:
            raise UsageError(f"{PROG} run: -s (tcp::{DEFAULT_PORT}) and -gdb {spec} name two ports")
        port = DEFAULT_PORT
    if getattr(args, "gdb_wait", False) and port is None:
        raise UsageError(f"{PROG} run: -S waits for a debugger: give -s or -gdb tcp::PORT too")
    return port


#: the run options that make a trace session (without any, none is made and the trace package is not imported)
TRACE_OPTIONS = ("trace", "trace_events", "expect_trace", "update_golden")


def configure_machine(args: argparse.Namespace, machine) -> None:
    """Attach option-driven plugins (tracing, TLBI trapping, the gdb stub ...) to the machine before the guest
    runs."""
    from .trap import TlbiTrap

    trap = TlbiTrap(machine.interconnect, machine.tracer)
    machine.add_plugin(trap)
    if any(getattr(args, name, None) for name in TRACE_OPTIONS):
        _attach_trace_session(args, machine, trap)
    _attach_gdb_stub(args, machine)


def _attach_trace_session(args: argparse.Namespace, machine, trap) -> None:
    """The `--trace*`/`--expect-trace` options as a `TraceSession` on the machine's tracer (`args.trace_session`,
    closed by `finish_tracing`)."""
    from .trace import TraceSession, for_machine
    from .trace.sinks import format_for

    try:
        trace = getattr(args, "trace", None)
        fmt = getattr(args, "trace_format", None) or (format_for(trace) if trace else "jsonl")
        session = TraceSession(trace=trace, fmt=fmt,
                               events=getattr(args, "trace_events", None),
                               expect_trace=getattr(args, "expect_trace", None),
                               update_golden=getattr(args, "update_golden", False))
    except OSError as e:
        where = e.filename or args.expect_trace
        raise UsageError(f"{PROG} run: --expect-trace {where}: {e.strerror or e}") from None
    except (ValueError, KeyError) as e:
        raise UsageError(f"{PROG} run: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from None
    args.trace_session = session
    try:
        session.attach(machine.tracer, where=trap.where, **for_machine(machine))
    except OSError as e:
        session.close()
        raise UsageError(f"{PROG} run: --trace {args.trace}: {e.strerror or e}") from None


def _attach_gdb_stub(args: argparse.Namespace, machine) -> None:
    port = gdb_port(args)
    if port is not None:
        from .gdbstub import GdbStub, stderr_announce

        stub = GdbStub(machine, port, wait=getattr(args, "gdb_wait", False), announce=stderr_announce)
        stub.listen()                   # HarnessInputError (125) when the port is taken
        args.gdb_stub = stub
        machine.add_plugin(stub)


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

    LINE = r"^(PASS|FAIL|SKIP|XFAIL|XPASS): (.*)$"          # compiled at its first use (re's cache)

    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []
        self._partial = b""

    def feed(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            m = re.match(self.LINE, raw.decode("utf-8", "replace").rstrip("\r"))
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
        try:
            write_console(out, data)
        except BrokenPipeError:          # the reader went away: the guest runs on, its status is kept
            silence_closed(out)
    return write


def _image_argument(args: argparse.Namespace, cmd: str = "run") -> str:
    """IMAGE or -kernel FILE (exactly one); semihosting options that need each other."""
    if (args.elf is None) == (args.kernel is None):
        raise UsageError(f"{PROG} {cmd}: give the guest image once: IMAGE or -kernel FILE (see --help)")
    if args.semihosting_allow_system and not args.semihosting_root:
        raise UsageError(f"{PROG} {cmd}: --semihosting-allow-system needs --semihosting-root DIR (its cwd)")
    args.elf = args.elf if args.elf is not None else args.kernel
    return args.elf


def _console_isatty(ktap: KtapReport | None):
    """SYS_ISTTY of `:tt` as QEMU answers it: whether the harness's own stream is a terminal."""
    fds = {0: 0, 1: 2 if ktap is not None else 1, 2: 2}
    return lambda stream: os.isatty(fds.get(stream, 1))


#: True while `python3 -m harness run` starts with the cyclic garbage collector off (harness/__main__.py: the
#: imports and the board make no garbage cycles, and collecting during them was ~3 ms of a hello run);
#: `gc_for_the_guest` freezes what they made and turns it back on before the guest runs. False for a `main()`
#: of any other caller.
GC_OFF_FOR_START_UP = False


def gc_for_the_guest() -> None:
    global GC_OFF_FOR_START_UP
    if GC_OFF_FOR_START_UP:
        GC_OFF_FOR_START_UP = False
        gc.freeze()       # what start-up made lives as long as the run: no collection walks it (Python's gc docs)
        gc.enable()


def cmd_run(args: argparse.Namespace) -> int:
    from .elfload import ElfLoadError
    from .log import Log
    from .log import listing as log_listing
    from .locations import shipped_path      # not .build: its toolchain records are start-up of `run`
    from .machine import DEFAULT_QUANTUM, Machine

    if wants_help(args.log_categories) or wants_help(args.trace) or wants_help(args.trace_events):
        from .trace.catalog import listing as event_listing   # here: a run without trace options needs no trace package
        write_out(log_listing() if wants_help(args.log_categories) else event_listing())
        return 0
    image = str(shipped_path(_image_argument(args)))
    check_trace_options("run", args.trace, args.trace_format, args.trace_events, args.expect_trace,
                        args.update_golden)
    timeout = args.timeout if args.timeout is not None else None if gdb_port(args) is not None else 300.0
    if args.expect_trace is not None and not args.update_golden:
        args.expect_trace = str(shipped_path(args.expect_trace))
    try:
        log = Log(args.log_categories, args.log_file)
    except ValueError as e:
        raise UsageError(f"{PROG} run: -d: {e}") from None
    except OSError as e:
        raise UsageError(f"{PROG} run: -D {args.log_file}: {e.strerror or e}") from None
    ktap = KtapReport() if args.ktap else None
    machine = None
    try:
        machine = Machine(log=log, console=_console_writer(ktap), quantum=args.quantum or DEFAULT_QUANTUM,
                          semihosting_root=args.semihosting_root,
                          semihosting_allow_system=args.semihosting_allow_system,
                          semihosting_userspace=args.semihosting_userspace, isatty=_console_isatty(ktap))
        _boot_vm(args, machine, image)
        configure_machine(args, machine)
        gc_for_the_guest()
        outcome = machine.run(max_insns=args.max_insns, timeout=timeout)
    except (ElfLoadError, HarnessInputError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:          # impossible machine configuration (e.g. too many vCPUs)
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        write_out("")                    # flush the console (a closed pipe is silenced, not an error)
        log.close()
        finish_tracing(args, None)
        stub = getattr(args, "gdb_stub", None)
        if stub is not None:
            stub.close()
        if machine is not None:
            machine.close()
    code = outcome.exit_code
    if outcome.kind is not Kind.EXIT:
        print(f"{PROG}: {outcome.message}", file=sys.stderr)
    elif code != outcome.status:
        print(f"{PROG}: guest exit status {outcome.status} is outside 0-{MAX_GUEST_STATUS}; "
              f"reporting {code}", file=sys.stderr)
    code = finish_tracing(args, code)
    if ktap is not None:
        write_out(ktap.render(outcome, os.path.basename(args.elf)))
    return code


def _boot_vm(args: argparse.Namespace, machine, image: str) -> None:
    """The run's one VM: vCPUs as the options say, the image loaded (HarnessInputError for what cannot run)."""
    gic, el = board_options(args)
    mte = bool([o["mte"] for o in args.machine or () if "mte" in o][-1:] == [1])      # the last mte= wins
    vm = machine.add_vm(ncpus=args.cpus, start_el=el, ram_size=args.ram_mib << 20, cpu=args.cpu, gic_version=gic,
                        chr_testdev=args.chr_testdev, virtio_modern=args.virtio_mmio_modern, mte=mte)
    for v in vm.vcpus:
        v.hcr_fb = bool(args.hcr_fb)
    for _ in args.devices:                  # -device pci-testdev
        vm.pcie.add_testdev()
    if args.viommu_pgtable and not args.virtio_iommu:
        raise HarnessInputError("--viommu-pgtable needs --virtio-iommu")
    if args.virtio_iommu:
        from .viommu import add_emulated_viommu
        add_emulated_viommu(vm, page_tables=args.viommu_pgtable)
    plan = vm.load(image, append=args.append, dtb=args.dtb, initrd=args.initrd)
    # guest_fw/link.ld: one stack per CPU (ELF images only: a raw image has no symbols to tell)
    stacks = plan.elf.constants.get("GUEST_NR_CPUS") if plan.elf is not None else None
    if stacks is not None and args.cpus > stacks:
        raise HarnessInputError(f"{args.elf}: built with stacks for {stacks} CPUs (GUEST_NR_CPUS); for "
                                f"--cpus {args.cpus} rebuild it with {PROG} build --max-cpus {args.cpus}")


# -- dtb ------------------------------------------------------------------------------------------------
def add_dtb_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-o", dest="output", default=None, metavar="FILE",
                   help="write the DTB to FILE ('-': standard output, even a terminal) [standard output "
                        "when it is not a terminal]")
    p.add_argument("--cpus", "-smp", type=_smp, default=1, metavar="N", help="vCPUs [1]")
    p.add_argument("--ram-mib", type=_positive_int, default=128, metavar="N", help="guest RAM in MiB [128]")
    p.add_argument("-m", dest="ram_mib", type=_qemu_mib, metavar="SIZE", help="guest RAM: 256, 256M, 1G")
    add_board_arguments(p)
    p.add_argument("--append", "-append", default=None, metavar="ARGS", help="/chosen/bootargs")
    p.add_argument("--dtb", "-dtb", default=None, metavar="FILE", help="fix up this tree as QEMU does instead")
    p.add_argument("--virtio-iommu", action="store_true",
                   help="the virtio-iommu and its DMA test device of run --virtio-iommu (#iommu-cells on its "
                        "transport, iommus on the device)")
    return p


def cmd_dtb(args: argparse.Namespace) -> int:
    """The device tree `run` gives a guest with the same options (what the board has, before any image)."""
    from devmodel.fdt import FdtError

    from .machine import ConsoleInput, Machine

    to_stdout = args.output in (None, "-")
    if args.output is None and sys.stdout.isatty():
        raise UsageError(f"{PROG} dtb: refusing to write a binary tree to a terminal: use -o FILE, -o - or "
                         f"a pipe (e.g. | dtc -I dtb -O dts)")
    try:
        machine = Machine(console=lambda vm, data, stream: None, console_input=ConsoleInput.from_bytes(b""),
                          tcg_buffer_size=1 << 20)      # nothing runs: small translation buffers
        gic, el = board_options(args, "dtb")
        vm = machine.add_vm(ncpus=args.cpus, start_el=el, ram_size=args.ram_mib << 20, console=True,
                            gic_version=gic, chr_testdev=args.virtio_iommu)  # as run: chr-testdev first
        if args.virtio_iommu:
            from .viommu import add_emulated_viommu
            add_emulated_viommu(vm)
        vm.bootargs, vm.user_dtb = args.append or "", args.dtb
        blob = vm.device_tree()
    except (HarnessInputError, FdtError, ValueError) as e:
        print(f"{PROG} dtb: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if to_stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
        return 0
    try:
        with open(args.output, "wb") as f:
            f.write(blob)
    except OSError as e:
        print(f"{PROG} dtb: {args.output}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# -- build ----------------------------------------------------------------------------------------------
def add_build_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="C/assembly sources of one guest (default: every guest in guest_fw/tests)")
    p.add_argument("-o", dest="output", default=None, metavar="OUT",
                   help="copy the ELF to the file OUT (its directory must exist) [the cached ELF's path]")
    p.add_argument("--no-runtime", action="store_true", help="do not link the guest runtime (guest_fw/lib)")
    p.add_argument("--binary", action="store_true",
                   help="the flat binary (raw image for -kernel, as objcopy -O binary) instead of the ELF")
    p.add_argument("--cflags", action="append", default=[], metavar="FLAGS",
                   help="extra compiler flags, split like a shell does, after the default ones (so -O0 "
                        "overrides -O2): --cflags '-O0 -DFOO' or --cflags=-DFOO; repeatable")
    p.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                   help="extra include directory; repeatable")
    p.add_argument("--max-cpus", type=_positive_int, default=None, metavar="N",
                   help="per-CPU stacks for N CPUs (1-256), so the guest runs with --cpus up to N [16]")
    return p


def cmd_build(args: argparse.Namespace) -> int:
    """Exit 0 built, 1 a compile or link step failed (the tool's output follows), 125 a bad path or usage."""
    from .build import (BuildError, BuildInputError, build_guest, build_test_guest, check_output_path,
                        shipped_path, test_guest_sources)
    import shlex                         # here, not at import: start-up of `run`

    try:
        cflags = [f for text in args.cflags for f in shlex.split(text)]
    except ValueError as e:
        raise UsageError(f"{PROG} build: --cflags: {e}") from None
    try:
        if args.sources:
            if args.output is not None:
                check_output_path(Path(args.output), create_parents=False)
            r = build_guest([shipped_path(src) for src in args.sources], output=args.output,
                            runtime=False if args.no_runtime else None, cflags=cflags,
                            include_dirs=args.include_dirs, max_cpus=args.max_cpus,
                            binary=args.binary)
            write_out(f"{r.path}\n")
        else:
            if args.output:
                raise UsageError(f"{PROG} build: -o needs sources")
            for name in test_guest_sources():
                r = build_test_guest(name, cflags=cflags, include_dirs=args.include_dirs, max_cpus=args.max_cpus,
                                     binary=args.binary)
                write_out(f"{name}: {r.path}\n")
    except BuildInputError as e:
        print(f"{PROG} build: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BuildError as e:
        print(f"{PROG} build: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_trace_events(args: argparse.Namespace) -> int:
    """List the trace events (QEMU `-trace help` style): name, fields, description; filtered by globs."""
    from devmodel.trace import select

    from .trace.catalog import all_events, listing

    events = all_events()
    if args.globs:
        try:
            chosen = select(args.globs)
        except KeyError as e:
            raise UsageError(f"{PROG} trace-events: {e.args[0]}") from None
        events = [e for e in events if e.name in chosen]
    write_out(listing(events))
    return 0


# -- entry point ----------------------------------------------------------------------------------------
SCENARIO_HELP = "end-to-end scenarios (the mailing-list problems and the VMID policies' fixes)"
UNITTESTS_HELP = "run a unittests.cfg suite (kvm-unit-tests' run_tests.sh, in-process)"
COMMANDS = ("run", "build", "dtb", "trace-events", "scenario", "unittests")


def _run_parser(sub) -> None:
    run = sub.add_parser("run", help="run a guest ELF", description="Run an AArch64 guest ELF.")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)


def _build_parser(sub) -> None:
    build = sub.add_parser("build", help="build guests (ziglang by default; CC/CROSS_COMPILE override)",
                           description="Build a guest ELF from C/assembly sources with the guest runtime.")
    build.dash_value_options = frozenset({"--cflags"})
    add_build_arguments(build)
    build.set_defaults(func=cmd_build)


def _dtb_parser(sub) -> None:
    dtb = sub.add_parser("dtb", help="write the device tree a guest gets (QEMU virt's layout)",
                         description="Write the DTB `run` gives a guest with the same options.")
    add_dtb_arguments(dtb)
    dtb.set_defaults(func=cmd_dtb)


def _trace_events_parser(sub) -> None:
    events = sub.add_parser("trace-events", help="list the trace events and their fields",
                            description="List trace events (for --trace-events), optionally filtered by globs.")
    events.add_argument("globs", nargs="?", default=None, metavar="GLOBS",
                        help="comma-separated globs, e.g. 'tlbi*,dvm*,smmuv3_cmdq_*'")
    events.set_defaults(func=cmd_trace_events)


def _scenario_parser(sub) -> None:
    from .scenarios.cli import add_scenario_parser   # scenario list|run|report: imports every scenario module
    add_scenario_parser(sub)


def _unittests_parser(sub) -> None:
    from .unittests import add_unittests_parser      # unittests [CFG] [-g GROUP] [-j N] [-t] [TEST ...]
    add_unittests_parser(sub)


#: each command's sub-parser, in the order --help lists them
_SUBPARSERS = {"run": _run_parser, "build": _build_parser, "dtb": _dtb_parser,
               "trace-events": _trace_events_parser, "scenario": _scenario_parser, "unittests": _unittests_parser}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser. With `command` (the first word of the command line), only that command's
    sub-parser is built: nothing else of the parser can be reached then (`--help` before the command, or a
    word that is no command, gets the full parser, `command` None), and building the other five costs every
    `run` a few milliseconds of argparse and gettext (the scenario and unittests parsers also import their
    packages)."""
    parser = _Parser(prog=PROG, description="Arm SMMUv3/KVM guest harness on Unicorn.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in _SUBPARSERS.items():
        if command in (None, name):
            add(sub)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command an argument list starts with, or None: the parser `main` builds for it (None: the full
    parser, e.g. for `--help`, an option before the command, or a word that is no command)."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def silence_closed(stream: TextIO) -> None:
    """After EPIPE on `stream` (its reader went away: `| head -1`), point its descriptor at /dev/null so later
    writes and the interpreter's final flush neither fail nor print "Exception ignored" (the recipe of the
    Python `signal` documentation, "Note on SIGPIPE")."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):      # not a real file (e.g. a test's capture): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def write_out(text: str, stream: TextIO | None = None) -> None:
    """Write and flush command output; a closed pipe silences the stream instead of failing, so a command
    whose output is cut short (`| head -1`) keeps its own exit status."""
    stream = sys.stdout if stream is None else stream
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        silence_closed(stream)


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: the command's status; 125 for usage errors and unusable paths (one line naming the
    path); 130 on ^C. Output into a closed pipe (`| head -1`) is dropped quietly and the status stands (commands
    write through `write_out`; anything else that meets EPIPE ends with 141, 128 + SIGPIPE, like coreutils)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(argv))
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            raise UsageError(f"{PROG}: a command is required (run, build, trace-events, scenario, unittests; "
                             f"see --help)")
        code = args.func(args)
        sys.stdout.flush()
        return code
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        silence_closed(sys.stdout)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unusable path no command caught, or an internal error: one line
        if isinstance(e, OSError) and e.filename is not None:
            print(f"{PROG}: {e.filename}: {e.strerror or e}", file=sys.stderr)
        elif os.environ.get("SMMU_HARNESS_DEBUG"):
            import traceback                 # here, not at import: start-up of every command
            traceback.print_exc()
        else:
            print(f"{PROG}: internal error: {type(e).__name__}: {e} (SMMU_HARNESS_DEBUG=1 for a traceback)",
                  file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
