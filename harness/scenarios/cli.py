"""`smmu-harness scenario list | run | report` (wired into harness/cli.py by `add_scenario_parser`).

    smmu-harness scenario list
    smmu-harness scenario run NAME [--policy P] [--vmid-bits 8|16] [--vms N] [--json] [--trace FILE ...]
                                   [--trace-events GLOBS]
    smmu-harness scenario report [-o DIR] [--format md|html] [--scenarios A,B] [--policies P,Q] [--widths 8,16]
                                 [--sweep 1,2,4]

`run` exits 0 when the result is ok (the system behaved correctly), 1 otherwise; bad arguments exit 125.
`--trace FILE` (repeatable) writes the run's trace: `.jsonl` JSON Lines, `.json` Chrome/Perfetto, anything
else QEMU-log-style text.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..trace.sinks import format_for

__all__ = ["add_scenario_parser", "cmd_scenario_list", "cmd_scenario_run", "cmd_scenario_report",
           "DEFAULT_TRACE_EVENTS"]

DEFAULT_TRACE_EVENTS = ("tlbi_trap,tlbi_dsb,dvm_tlbi,dvm_sync,smmuv3_dvm_tlbi,smmu_btm_tlbi,smmu_btm_ctx,"
                        "kvm_vmid_rollover,kvm_vcpu_load,scenario_*,dmatest_cmd,smmuv3_cmdq_opcode,"
                        "smmuv3_translate_abort")


def _csv(kind: type = str):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated {kind.__name__} values") from None
    return parse


def add_scenario_parser(sub: Any) -> argparse.ArgumentParser:
    from . import POLICY_NAMES, SCENARIOS
    sp = sub.add_parser("scenario", help="end-to-end scenarios (seeds' problems and the VMID policies' fixes)",
                        description="Run the end-to-end scenarios (harness/scenarios).")
    ssub = sp.add_subparsers(dest="scenario_command", metavar="SUBCOMMAND", parser_class=type(sp))
    ls = ssub.add_parser("list", help="list scenarios and policies")
    ls.set_defaults(func=cmd_scenario_list)
    run = ssub.add_parser("run", help="run one scenario", description="Run one scenario; exit 0 when ok.")
    run.add_argument("name", metavar="NAME", choices=list(SCENARIOS), help=", ".join(SCENARIOS))
    run.add_argument("--policy", default="shared", choices=list(POLICY_NAMES), help="SMMU VMID policy [shared]")
    run.add_argument("--vmid-bits", type=int, choices=(8, 16), default=16, help="KVM and SMMU VMID width [16]")
    run.add_argument("--vms", type=int, default=None, metavar="N", help="number of VMs (scenario default)")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument("--trace", action="append", default=[], metavar="FILE",
                     help="write a trace (.jsonl, .json = Chrome/Perfetto, else text); repeatable")
    run.add_argument("--trace-events", default=DEFAULT_TRACE_EVENTS, metavar="GLOBS",
                     help="events to trace (comma-separated globs)")
    run.set_defaults(func=cmd_scenario_run)
    rep = ssub.add_parser("report", help="run the matrix and write a Markdown or HTML report with SVG plots")
    rep.add_argument("-o", dest="out", default="scenario-report", metavar="DIR", help="output directory")
    rep.add_argument("--format", dest="fmt", choices=("md", "html"), default="md",
                     help="report.md (default) or report.html")
    rep.add_argument("--scenarios", type=_csv(), default=list(SCENARIOS), metavar="A,B")
    rep.add_argument("--policies", type=_csv(), default=list(POLICY_NAMES), metavar="P,Q")
    rep.add_argument("--widths", type=_csv(int), default=[8, 16], metavar="8,16")
    rep.add_argument("--sweep", type=_csv(int), default=None, metavar="N,M", help="VM counts for the plots")
    rep.set_defaults(func=cmd_scenario_report)
    sp.set_defaults(func=lambda args: _need_sub(sp))
    return sp


def _need_sub(parser: argparse.ArgumentParser) -> int:
    parser.error("a subcommand is required (list, run, report)")
    return 125


def cmd_scenario_list(args: argparse.Namespace) -> int:
    from . import POLICY_NAMES, SCENARIOS
    for s in SCENARIOS.values():
        print(f"{s.name:<18} seed {s.seed:<8} {s.summary}")
        print(f"{'':<18} --vms: {s.vms_meaning} [default {s.default_vms}]")
    print(f"policies: {', '.join(POLICY_NAMES)}")
    return 0


def cmd_scenario_run(args: argparse.Namespace) -> int:
    from devmodel.trace import Tracer

    from ..trace.sinks import open_sink
    from . import run_scenario
    from .platform import ScenarioPlatform  # noqa: F401  (imports every module that defines trace events)
    tracer = None
    sinks = []
    if args.trace:
        tracer = Tracer(args.trace_events)
        for path in args.trace:
            fmt = format_for(path)
            try:
                sink = open_sink(path, fmt)
            except OSError as e:
                print(f"smmu-harness scenario run: --trace {path}: {e.strerror or e}", file=sys.stderr)
                return 125
            sinks.append(sink)
            tracer.add_sink(sink)
    if args.vms is not None and args.vms < 1:
        print("smmu-harness scenario run: --vms must be at least 1", file=sys.stderr)
        return 125
    try:
        res = run_scenario(args.name, args.policy, args.vmid_bits, args.vms, tracer=tracer)
    finally:
        for s in sinks:
            s.close()
    sys.stdout.write(res.to_json() + "\n" if args.json else res.text())
    sys.stdout.flush()
    return 0 if res.ok else 1


def cmd_scenario_report(args: argparse.Namespace) -> int:
    from . import POLICY_NAMES, SCENARIOS, run_scenario
    from .report import DEFAULT_SWEEP, Matrix, run_report
    bad = [s for s in args.scenarios if s not in SCENARIOS] + [p for p in args.policies if p not in POLICY_NAMES]
    bad += [str(w) for w in args.widths if w not in (8, 16)]
    if bad:
        print(f"smmu-harness scenario report: unknown {', '.join(bad)}", file=sys.stderr)
        return 125
    matrix = Matrix(args.scenarios, args.policies, args.widths, tuple(args.sweep or DEFAULT_SWEEP))
    files = run_report(args.out, matrix, lambda n, p, w, v: run_scenario(n, p, w, v), fmt=args.fmt)
    for name, path in files.items():
        print(path)
    ok = sum(r.ok for r in matrix.results)
    print(f"{ok}/{len(matrix.results)} runs ok; report: {files[f'report.{args.fmt}']}")
    return 0
