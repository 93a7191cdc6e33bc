"""`smmu-harness scenario list | run | report` (wired into harness/cli.py by `add_scenario_parser`).

    smmu-harness scenario list
    smmu-harness scenario run NAME [--policy P] [--vmid-bits 8|16] [--vms N] [--json] [--trace FILE ...]
                                   [--trace-events GLOBS] [--mode stall|pri|both] [--atc-inv yes|no]
                                   [--stack port|vsmmu]
    smmu-harness scenario report [-o DIR] [--format md|html] [--scenarios A,B] [--policies P,Q] [--widths 8,16]
                                 [--sweep 1,2,4] [-j N]

`run` exits 0 when the result is ok (the system behaved correctly), 1 otherwise; bad arguments exit 125
(`--vms` is 1 to MAX_VMS; a scenario option of another scenario, or a value that scenario does not take).
Scenario options come from each scenario's `options` (name -> choices, default, help). `report` checks every argument (and that DIR is writable) before it runs anything,
runs its jobs in `-j N` worker processes (default: the CPUs available) and rewrites results.json after each.
`--trace FILE` (repeatable) writes the run's trace: `.jsonl` JSON Lines, `.json` Chrome/Perfetto, anything
else QEMU-log-style text.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..trace.sinks import format_for
from .base import MAX_VMS

__all__ = ["add_scenario_parser", "cmd_scenario_list", "cmd_scenario_run", "cmd_scenario_report",
           "DEFAULT_TRACE_EVENTS", "default_jobs"]

DEFAULT_TRACE_EVENTS = ("tlbi_trap,tlbi_dsb,dvm_tlbi,dvm_sync,smmuv3_dvm_tlbi,smmu_btm_tlbi,smmu_btm_ctx,"
                        "kvm_vmid_rollover,kvm_vcpu_load,scenario_*,dmatest_cmd,smmuv3_cmdq_opcode,"
                        "smmuv3_translate_abort")


def _csv_of(choices: Sequence[Any], what: str, kind: type = str) -> Callable[[str], list]:
    """Comma-separated values, each one of `choices` (named in the error)."""
    def parse(text: str) -> list:
        out = []
        for item in (x.strip() for x in text.split(",")):
            if not item:
                continue
            try:
                v = kind(item)
            except ValueError:
                v = item
            if v not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {item!r} (choose from {', '.join(map(str, choices))})")
            if v not in out:
                out.append(v)
        if not out:
            raise argparse.ArgumentTypeError(f"no {what} given")
        return out
    return parse


def _int_in(what: str, lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer option in [lo, hi] (no upper bound without `hi`), with one-line errors naming the range."""
    def parse(text: str) -> int:
        try:
            n = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}") from None
        if n < lo or (hi is not None and n > hi):
            bounds = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{n} {what}: {bounds}")
        return n
    return parse


_vm_count = _int_in("VMs", 1, MAX_VMS)
_jobs = _int_in("jobs", 1)


def _vm_counts(text: str) -> list[int]:
    counts = sorted({_vm_count(x.strip()) for x in text.split(",") if x.strip()})
    if not counts:
        raise argparse.ArgumentTypeError("no VM count given")
    return counts


def default_jobs() -> int:
    """The CPUs this process may run on (`os.sched_getaffinity`), else `os.cpu_count()`."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def add_scenario_parser(sub: Any) -> argparse.ArgumentParser:
    from . import POLICY_NAMES, SCENARIOS, VMID_WIDTHS
    from .report import DEFAULT_SWEEP, FORMATS
    from ..cli import SCENARIO_HELP
    sp = sub.add_parser("scenario", help=SCENARIO_HELP,
                        description="Run the end-to-end scenarios (harness/scenarios).")
    ssub = sp.add_subparsers(dest="scenario_command", metavar="SUBCOMMAND", parser_class=type(sp))
    ls = ssub.add_parser("list", help="list scenarios and policies")
    ls.set_defaults(func=cmd_scenario_list)
    run = ssub.add_parser("run", help="run one scenario", description="Run one scenario; exit 0 when ok.")
    run.add_argument("name", metavar="NAME", choices=list(SCENARIOS), help=", ".join(SCENARIOS))
    run.add_argument("--policy", default="shared", choices=list(POLICY_NAMES),
                     help=f"SMMU VMID policy: {', '.join(POLICY_NAMES)} [shared]")
    run.add_argument("--vmid-bits", type=int, choices=VMID_WIDTHS, default=16,
                     help="KVM and SMMU VMID width: 8 or 16 [16]")
    run.add_argument("--vms", type=_vm_count, default=None, metavar="N",
                     help=f"number of VMs, 1 to {MAX_VMS} (what they are: scenario list) [the scenario's default]")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout [text]")
    run.add_argument("--trace", action="append", default=[], metavar="FILE",
                     help="write a trace (.jsonl, .json = Chrome/Perfetto, else text); repeatable; "
                          "'--trace help' lists the events [no trace]")
    run.add_argument("--trace-events", default=None, metavar="GLOBS",
                     help="events to trace (comma-separated globs, '-' removes; 'help' lists them); needs "
                          f"--trace [{DEFAULT_TRACE_EVENTS}]")
    for opt, owners in scenario_options(SCENARIOS).items():
        choices = sorted({c for s in owners for c in s.options[opt][0]})
        run.add_argument(f"--{opt.replace('_', '-')}", dest=f"opt_{opt}", default=None, metavar="|".join(choices),
                         help="; ".join(f"{s.name}: {s.options[opt][2]}" for s in owners) + " ["
                              + ", ".join(f"{s.name}: {s.options[opt][1]}" for s in owners) + "]")
    run.set_defaults(func=cmd_scenario_run)
    rep = ssub.add_parser("report", help="run the matrix and write a Markdown or HTML report with SVG plots",
                          description="Run scenario x policy x VMID width (plus the VM sweeps for the plots) and "
                                      "write report.md or report.html, results.json and SVG plots into DIR. "
                                      "Every argument is checked before anything runs; results.json is "
                                      "rewritten after each run, so an interrupted report keeps what finished.")
    rep.add_argument("-o", dest="out", default="scenario-report", metavar="DIR",
                     help="output directory (created if missing) [scenario-report]")
    rep.add_argument("--format", dest="fmt", choices=FORMATS, default="md",
                     help="report.md or report.html [md]")
    rep.add_argument("--scenarios", type=_csv_of(list(SCENARIOS), "scenario"), default=list(SCENARIOS),
                     metavar="A,B", help=f"scenarios to run [{','.join(SCENARIOS)}]")
    rep.add_argument("--policies", type=_csv_of(list(POLICY_NAMES), "policy"), default=list(POLICY_NAMES),
                     metavar="P,Q", help=f"VMID policies [{','.join(POLICY_NAMES)}]")
    rep.add_argument("--widths", type=_csv_of(list(VMID_WIDTHS), "VMID width", int), default=list(VMID_WIDTHS),
                     metavar="8,16", help="VMID widths [8,16]")
    rep.add_argument("--sweep", type=_vm_counts, default=list(DEFAULT_SWEEP), metavar="N,M",
                     help=f"VM counts (1 to {MAX_VMS}) for the plots [{','.join(map(str, DEFAULT_SWEEP))}]")
    rep.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                     help="runs in parallel, in N worker processes; results are the same as with -j 1 "
                          f"[the CPUs available: {default_jobs()}]")
    rep.set_defaults(func=cmd_scenario_report)
    sp.set_defaults(func=lambda args: _need_sub(sp))
    return sp


def scenario_options(scenarios: dict) -> dict[str, list]:
    """Option name -> the scenarios that have it (in registry order)."""
    out: dict[str, list] = {}
    for s in scenarios.values():
        for opt in s.options:
            out.setdefault(opt, []).append(s)
    return out


def _chosen_options(args: argparse.Namespace) -> dict[str, str]:
    """The scenario options given on the command line, checked against the chosen scenario (UsageError)."""
    from ..cli import UsageError
    from . import SCENARIOS
    scn = SCENARIOS[args.name]
    out = {}
    for opt in scenario_options(SCENARIOS):
        v = getattr(args, f"opt_{opt}", None)
        if v is None:
            continue
        flag = f"--{opt.replace('_', '-')}"
        if opt not in scn.options:
            owners = ", ".join(s.name for s in scenario_options(SCENARIOS)[opt])
            raise UsageError(f"smmu-harness scenario run: {flag} is an option of {owners}, not {scn.name}")
        if v not in scn.options[opt][0]:
            raise UsageError(f"smmu-harness scenario run: {flag} {v!r}: {scn.name} takes "
                             f"{', '.join(scn.options[opt][0])}")
        out[opt] = v
    return out


def _need_sub(parser: argparse.ArgumentParser) -> int:
    parser.error("a subcommand is required (list, run, report)")
    return 125


def cmd_scenario_list(args: argparse.Namespace) -> int:
    from ..cli import write_out
    from . import POLICY_NAMES, SCENARIOS
    lines = []
    for s in SCENARIOS.values():
        lines.append(f"{s.name:<18} seed {s.seed:<8} {s.summary}")
        lines.append(f"{'':<18} --vms: {s.vms_meaning} [default {s.default_vms}]")
        for opt, (choices, default, text) in s.options.items():
            lines.append(f"{'':<18} --{opt.replace('_', '-')} {'|'.join(choices)}: {text} [default {default}]")
    lines.append(f"policies: {', '.join(POLICY_NAMES)}")
    write_out("\n".join(lines) + "\n")
    return 0


def cmd_scenario_run(args: argparse.Namespace) -> int:
    from devmodel.trace import Tracer

    from ..cli import UsageError, check_trace_options, wants_help, write_out
    from ..trace.catalog import listing
    from ..trace.sinks import open_sink
    from . import run_scenario
    from .platform import ScenarioPlatform  # noqa: F401  (imports every module that defines trace events)
    if wants_help(args.trace_events) or any(wants_help(t) for t in args.trace):
        write_out(listing())
        return 0
    check_trace_options("scenario run", args.trace[0] if args.trace else None, None, args.trace_events)
    opts = _chosen_options(args)
    tracer = None
    sinks = []
    try:
        if args.trace:
            tracer = Tracer(args.trace_events or DEFAULT_TRACE_EVENTS)
            for path in args.trace:
                try:
                    sink = open_sink(path, format_for(path))
                except OSError as e:
                    raise UsageError(f"smmu-harness scenario run: --trace {path}: {e.strerror or e}") from None
                sinks.append(sink)
                tracer.add_sink(sink)
        res = run_scenario(args.name, args.policy, args.vmid_bits, args.vms, tracer=tracer, **opts)
    finally:
        for s in sinks:
            s.close()
    write_out(res.to_json() + "\n" if args.json else res.text())
    return 0 if res.ok else 1


def _run_one(name: str, policy: str, vmid_bits: int, vms: int | None, **opts: Any):
    """The report's runner (module level, so worker processes can unpickle it); `opts`: scenario options."""
    from . import run_scenario
    return run_scenario(name, policy, vmid_bits, vms, **opts)


def cmd_scenario_report(args: argparse.Namespace) -> int:
    from ..cli import UsageError, write_out
    from .report import Matrix, run_report
    out = Path(args.out)
    try:                                # the output directory must be usable before anything runs
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"smmu-harness scenario report: -o {out}: {e.strerror or e}") from None
    matrix = Matrix(args.scenarios, args.policies, args.widths, tuple(args.sweep))
    jobs = args.jobs or default_jobs()
    files = run_report(out, matrix, _run_one, fmt=args.fmt, jobs=jobs)
    lines = [str(p) for p in files.values()]
    ok = sum(r.ok for r in matrix.results)
    lines.append(f"{ok}/{len(matrix.results)} runs ok; report: {files[f'report.{args.fmt}']}")
    write_out("\n".join(lines) + "\n")
    return 0
