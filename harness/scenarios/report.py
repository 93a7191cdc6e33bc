"""`smmu-harness scenario report`: run the matrix (scenario x policy x VMID width), sweep the number of VMs,
and write `report.md` (tables; `report.html` with `fmt="html"`, the same content as one HTML page),
`results.json` (every result) and hand-written SVG plots:
`over_invalidation.svg` (over-invalidated SMMU entries against the number of VMs, per policy),
`vm_exits.svg` (VM exits per guest invalidation against the number of VMs: the vSMMU forwarding without BTM vs
BTM, next to virtio-iommu's MAP/UNMAP and shared tables per guest mapping change) and
`iopf_cost.svg` (sva-iopf: VM exits and host calls per fault against the pages of one copy, stall vs PRI).
The guest-SVA scenarios (sva-iopf, sva-ats, sva-dirty) get a table of their own metrics, with the variants
that show the other outcome (`VARIANTS`: sva-ats without ATC_INV, sva-dirty on the vSMMU); virtio-iommu gets
its per-mode columns and a sweep of its costs against the number of VMs.

Jobs run in-process or in `jobs` worker processes (identical files either way); `results.json` is rewritten
after every job, so an interrupted report keeps what finished. Progress: a bar on a terminal, plain lines
otherwise (`make_progress`). No plotting dependency: the SVG is a few lines of text (`line_chart_svg`; lines
that coincide are drawn once and named together).
"""
from __future__ import annotations

import functools
import html
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TextIO

from ..parallel import run_jobs
from .base import POLICY_NAMES
from .result import ScenarioResult

__all__ = ["Matrix", "run_report", "run_job", "failed_result", "write_report", "write_results", "line_chart_svg", "markdown",
           "markdown_to_html", "ProgressBar", "LineProgress", "make_progress", "DEFAULT_SWEEP", "FORMATS"]

FORMATS = ("md", "html")

DEFAULT_SWEEP = (1, 2, 3, 4, 6)
#: (kind, scenario, policy, VMID width, VMs or None, scenario options as (name, value) pairs)
Job = tuple[str, str, str, int, Optional[int], tuple]
#: runs of a scenario with an option other than its default, per policy (the report's guest-SVA table)
VARIANTS = (("sva-ats", (("atc_inv", "no"),)), ("sva-dirty", (("stack", "vsmmu"),)))
IOPF_PAGES = (1, 2, 4, 8)                               # pages per copy of the sva-iopf sweep
#: the guest-SVA table: scenario -> the metrics shown
SVA_COLUMNS = {
    "sva-iopf": ("stall_faults", "stall_vm_exits_per_fault", "stall_host_calls_per_fault", "pri_faults",
                 "pri_groups", "pri_vm_exits_per_fault", "pri_host_calls_per_fault"),
    "sva-ats": ("stale_dma", "atc_invalidations", "atc_hits", "btm_advertised"),
    "sva-dirty": ("missed_dirty", "dirty_found", "httu_updates", "rollovers"),
    "virtio-iommu": ("map_stale_dma", "map_vm_exits_per_change", "map_host_calls_per_change",
                     "map_host_cmds_per_change", "table_stale_dma", "table_btm_offered", "table_vm_exits_per_change",
                     "table_host_cmds_per_change", "btm_stale_dma"),
}
#: the virtio-iommu sweep's columns: (heading, metric)
VIOMMU_SWEEP = (("MAP/UNMAP exits", "map_vm_exits_per_change"), ("MAP/UNMAP host calls", "map_host_calls_per_change"),
                ("MAP/UNMAP physical cmds", "map_host_cmds_per_change"), ("table exits", "table_vm_exits_per_change"),
                ("table host calls", "table_host_calls_per_change"), ("table BTM offered", "table_btm_offered"),
                ("btm stale DMAs", "btm_stale_dma"))
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


@dataclass
class Matrix:
    scenarios: Sequence[str]
    policies: Sequence[str] = POLICY_NAMES
    widths: Sequence[int] = (8, 16)
    sweep: Sequence[int] = DEFAULT_SWEEP
    sweep_width: int = 8
    results: list[ScenarioResult] = field(default_factory=list)
    over_sweep: list[ScenarioResult] = field(default_factory=list)
    exits_sweep: list[ScenarioResult] = field(default_factory=list)
    iopf_sweep: list[ScenarioResult] = field(default_factory=list)
    variants: list[ScenarioResult] = field(default_factory=list)
    viommu_sweep: list[ScenarioResult] = field(default_factory=list)

    def fill(self, jobs: Sequence[Job], done: dict[int, ScenarioResult]) -> None:
        """Put the finished results (by job index) in `results`/`over_sweep`/`exits_sweep`/`iopf_sweep`/
        `variants`/`viommu_sweep`, in job order."""
        lists: dict[str, list[ScenarioResult]] = {"matrix": [], "over": [], "exits": [], "iopf": [], "variant": [],
                                                  "viommu": []}
        for i in sorted(done):
            lists[jobs[i][0]].append(done[i])
        self.results, self.over_sweep, self.exits_sweep = lists["matrix"], lists["over"], lists["exits"]
        self.iopf_sweep, self.variants, self.viommu_sweep = lists["iopf"], lists["variant"], lists["viommu"]

    def jobs(self) -> list[Job]:
        """(kind, scenario, policy, width, vms, options) in run order."""
        out: list[Job] = [("matrix", s, p, w, None, ()) for s in self.scenarios for p in self.policies
                          for w in self.widths]
        pol = "shared" if "shared" in self.policies else self.policies[0]
        if "over-invalidation" in self.scenarios:
            out += [("over", "over-invalidation", p, self.sweep_width, n, ()) for p in self.policies
                    for n in self.sweep]
        if "no-btm-forwarding" in self.scenarios:
            out += [("exits", "no-btm-forwarding", pol, self.sweep_width, n, ()) for n in self.sweep]
        if "sva-iopf" in self.scenarios:
            out += [("iopf", "sva-iopf", pol, self.sweep_width, None, (("pages", n),)) for n in IOPF_PAGES]
        if "virtio-iommu" in self.scenarios:
            out += [("viommu", "virtio-iommu", pol, self.sweep_width, n, ()) for n in self.sweep]
        out += [("variant", name, p, self.sweep_width, None, opts) for name, opts in VARIANTS
                if name in self.scenarios for p in self.policies]
        return out


class ProgressBar:
    """A one-line progress bar redrawn in place on a terminal: `[#####-----] 12/50 sva-btm private 8-bit`."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30):
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0

    def show(self, label: str) -> None:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[:60]:<60}")
        self.stream.flush()

    def step(self, label: str) -> None:
        self.done += 1
        self.show(label)

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class LineProgress(ProgressBar):
    """Progress for a pipe or a log file: one plain line per finished job (`[12/50] sva-btm ...: ok`), no
    carriage returns or redrawing."""

    def show(self, label: str) -> None:
        pass

    def step(self, label: str) -> None:
        self.done += 1
        self.stream.write(f"[{self.done}/{self.total}] {label}\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def make_progress(total: int, stream: TextIO | None = None) -> ProgressBar:
    """The bar on a terminal, plain lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return (ProgressBar if isatty is not None and isatty() else LineProgress)(total, stream)


def run_job(runner: Callable[..., ScenarioResult], job: Job) -> ScenarioResult:
    """One job; a scenario that raises becomes a failed result saying so (one broken run never loses the
    others). Options are passed as keywords (none for the plain matrix)."""
    _, name, pol, width, vms, opts = job
    try:
        return runner(name, pol, width, vms, **dict(opts)) if opts else runner(name, pol, width, vms)
    except Exception as e:  # noqa: BLE001 - reported in the result, the report goes on
        return failed_result(job, e)


def failed_result(job: Job, e: BaseException) -> ScenarioResult:
    """The result of a job that raised (or whose worker process died): not ok, the error as its verdict."""
    _, name, pol, width, vms = job[:5]
    res = ScenarioResult(name, pol, width, vms or 0, ok=False, options=dict(job[5]) if len(job) > 5 else {})
    res.error = f"{type(e).__name__}: {e}"
    res.verdict = f"the run failed: {res.error}"
    return res


def run_report(out_dir: str | Path, matrix: Matrix, runner: Callable[..., ScenarioResult],
               progress: ProgressBar | None = None, fmt: str = "md", jobs: int = 1) -> dict[str, Path]:
    """Run every job with `runner(name, policy, vmid_bits, vms)` and write the files (`report.md`, or
    `report.html` with `fmt="html"`); return their paths by file name.

    `jobs` > 1 runs the jobs in that many worker processes (`runner` must then be picklable: a module-level
    function); results are placed by job, not by completion, so the files are the same as with `jobs=1`.
    `results.json` is rewritten (atomically) after every job, so an interrupted run keeps what it finished;
    on ^C the queued jobs are cancelled, the report is written from the finished ones and KeyboardInterrupt
    is raised again."""
    if fmt not in FORMATS:
        raise ValueError(f"report format {fmt!r} (choose from {', '.join(FORMATS)})")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = matrix.jobs()
    bar = progress if progress is not None else make_progress(len(todo))
    bar.total = max(len(todo), 1)
    bar.show("starting")
    done: dict[int, ScenarioResult] = {}

    def finished(i: int, res: ScenarioResult) -> None:
        done[i] = res
        matrix.fill(todo, done)
        write_results(out, matrix, complete=len(done) == len(todo))
        _, name, pol, width, vms, opts = todo[i]
        bar.step(f"{name} {pol} {width}-bit" + (f" {vms} VM{'s' if vms > 1 else ''}" if vms else "")
                 + "".join(f" {k}={v}" for k, v in opts) + (": ok" if res.ok else ": NOT OK"))

    try:
        if jobs == 1 or len(todo) < 2:
            for i, job in enumerate(todo):
                finished(i, run_job(runner, job))
        else:
            _run_parallel(jobs, runner, todo, finished)
    except KeyboardInterrupt:
        bar.close()
        write_report(out, matrix, fmt, note=f"Interrupted: {len(done)} of {len(todo)} runs finished.")
        raise
    bar.close()
    return write_report(out, matrix, fmt)


def _run_parallel(jobs: int, runner: Callable[..., ScenarioResult], todo: list[Job],
                  finished: Callable[[int, ScenarioResult], None]) -> None:
    """The jobs in worker processes (harness/parallel.py: a fork or forkserver pool, ^C/SIGTERM cancel the
    queued jobs, workers exit with their parent); a worker that died gives a failed result for its job."""
    run_jobs(functools.partial(run_job, runner), todo, jobs, finished, lambda i, e: failed_result(todo[i], e),
             preload=["harness.scenarios"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(out: Path, matrix: Matrix, complete: bool = True) -> Path:
    """`results.json`: every result so far, in job order; `complete` is false until the last job is in."""
    path = out / "results.json"
    _write_atomic(path, json.dumps({
        "complete": complete,
        "matrix": [r.to_dict() for r in matrix.results],
        "over_invalidation_sweep": [r.to_dict() for r in matrix.over_sweep],
        "vm_exits_sweep": [r.to_dict() for r in matrix.exits_sweep],
        "iopf_sweep": [r.to_dict() for r in matrix.iopf_sweep],
        "variants": [r.to_dict() for r in matrix.variants],
        "viommu_sweep": [r.to_dict() for r in matrix.viommu_sweep]}, indent=1) + "\n")
    return path


def write_report(out: Path, matrix: Matrix, fmt: str = "md", note: str | None = None) -> dict[str, Path]:
    """The plots, `results.json` and `report.md`/`report.html` from the results the matrix holds."""
    files: dict[str, Path] = {}
    over_series = {p: [(r.vms, r.metrics["over_invalidated_entries"]) for r in matrix.over_sweep
                       if r.policy == p and not r.error] for p in matrix.policies}
    over_series = {p: s for p, s in over_series.items() if s}
    if over_series:
        files["over_invalidation.svg"] = out / "over_invalidation.svg"
        _write_atomic(files["over_invalidation.svg"], line_chart_svg(
            "over-invalidation: SMMU stage-2 entries removed by broadcasts not meant for them",
            "VMs (each with a stage-2-only device)", "entries over-invalidated", over_series))
    exits = [r for r in matrix.exits_sweep if "btm_vm_exits_per_invalidation" in r.metrics]   # completed runs
    viommu = [r for r in matrix.viommu_sweep if "map_vm_exits_per_change" in r.metrics]
    if exits or viommu:
        series = {"vSMMU, no BTM (forwarded)": [(r.vms, r.metrics["vm_exits_per_invalidation"]) for r in exits],
                  "vSMMU, BTM": [(r.vms, r.metrics["btm_vm_exits_per_invalidation"]) for r in exits],
                  "virtio-iommu MAP/UNMAP": [(r.vms, r.metrics["map_vm_exits_per_change"]) for r in viommu],
                  "virtio-iommu shared tables": [(r.vms, r.metrics["table_vm_exits_per_change"]) for r in viommu]}
        files["vm_exits.svg"] = out / "vm_exits.svg"
        _write_atomic(files["vm_exits.svg"], line_chart_svg(
            f"VM exits per guest invalidation / mapping change ({(exits or viommu)[0].policy} policy)",
            "VMs on the host", "VM exits per invalidation", {k: v for k, v in series.items() if v}))
    iopf = [r for r in matrix.iopf_sweep if "stall_faults" in r.metrics]         # completed runs
    if iopf:
        series = {f"{mode} {what}": [(r.options["pages"], r.metrics[f"{mode}_{key}"]) for r in iopf]
                  for mode in ("stall", "pri") for what, key in (("exits", "vm_exits_per_fault"),
                                                                 ("host calls", "host_calls_per_fault"))}
        files["iopf_cost.svg"] = out / "iopf_cost.svg"
        _write_atomic(files["iopf_cost.svg"], line_chart_svg(
            f"sva-iopf: cost per fault ({iopf[0].policy} policy)", "pages per copy", "per fault", series))
    files["results.json"] = write_results(out, matrix, complete=note is None)
    md = markdown(matrix, [p.name for p in files.values() if p.suffix == ".svg"], note=note)
    name = f"report.{fmt}"
    files[name] = out / name
    _write_atomic(files[name], md if fmt == "md" else markdown_to_html(md))
    return files


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown(matrix: Matrix, plots: Iterable[str], note: str | None = None) -> str:
    """The report as Markdown; `note` (e.g. an interrupted run) goes first, in bold."""
    cols = ("stale_dma", "cross_vm_dma", "broadcast_invalidations", "over_invalidated_entries",
            "vm_exits_per_invalidation", "rollovers", "pinned_vmid_changes")
    lines = ["# smmu-harness scenario report", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += ["Each row is one run of `smmu-harness scenario run NAME --policy P --vmid-bits W` (default VM "
              "count). `ok` = the system behaved correctly: no stale DMA, no cross-VM DMA, no silent failure "
              "(a clean, explained refusal is correct behaviour).", "",
              "| scenario | policy | VMID bits | ok | " + " | ".join(cols) + " | verdict |",
              "|---|---|---|---|" + "---|" * len(cols) + "---|"]
    for r in matrix.results:
        verdict = r.verdict.replace("|", "\\|")
        lines.append(f"| {r.scenario} | {r.policy} | {r.vmid_bits} | {'yes' if r.ok else '**no**'} | "
                     + " | ".join(_cell(r.metrics.get(c, "")) for c in cols) + f" | {verdict} |")
    if matrix.over_sweep:
        lines += ["", f"## over-invalidation against the number of VMs ({matrix.sweep_width}-bit VMIDs)", "",
                  "| policy | " + " | ".join(f"{n} VM{'s' if n > 1 else ''}" for n in matrix.sweep) + " |",
                  "|---|" + "---|" * len(matrix.sweep)]
        for p in matrix.policies:
            row = {r.vms: r.metrics["over_invalidated_entries"] for r in matrix.over_sweep if r.policy == p}
            if row:
                lines.append(f"| {p} | " + " | ".join(_cell(row.get(n, "")) for n in matrix.sweep) + " |")
    if matrix.exits_sweep:
        lines += ["", "## VM exits per guest invalidation against the number of VMs", "",
                  "| VMs | no BTM (forwarded) | host commands | BTM | BTM stale DMAs |", "|---|---|---|---|---|"]
        for r in matrix.exits_sweep:
            m = r.metrics
            lines.append(f"| {r.vms} | {_cell(m['vm_exits_per_invalidation'])} | "
                         f"{_cell(m.get('host_commands_per_invalidation', ''))} | "
                         f"{_cell(m.get('btm_vm_exits_per_invalidation', ''))} | {m.get('btm_stale_dma', '')} |")
    if matrix.viommu_sweep:
        lines += ["", "## virtio-iommu: cost per guest mapping change against the number of VMs "
                  f"({matrix.viommu_sweep[0].policy} policy)", "",
                  "| VMs | " + " | ".join(h for h, _ in VIOMMU_SWEEP) + " |", "|---|" + "---|" * len(VIOMMU_SWEEP)]
        for r in matrix.viommu_sweep:
            lines.append(f"| {r.vms} | " + " | ".join(_cell(r.metrics.get(k, "")) for _, k in VIOMMU_SWEEP) + " |")
    lines += _sva_sections(matrix)
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


def _sva_sections(matrix: Matrix) -> list[str]:
    """The guest-SVA table (each scenario's own metrics, with the variants) and the sva-iopf sweep."""
    rows = [r for r in matrix.results + matrix.variants if r.scenario in SVA_COLUMNS]
    lines: list[str] = []
    for name, cols in SVA_COLUMNS.items():
        mine = [r for r in rows if r.scenario == name]
        if not mine:
            continue
        lines += ["", f"## {name}", "", "| policy | VMID bits | options | ok | " + " | ".join(cols) + " | verdict |",
                  "|---|---|---|---|" + "---|" * len(cols) + "---|"]
        for r in mine:
            opts = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "default"
            lines.append(f"| {r.policy} | {r.vmid_bits} | {opts} | {'yes' if r.ok else '**no**'} | "
                         + " | ".join(_cell(r.metrics.get(c, "")) for c in cols)
                         + f" | {r.verdict.replace('|', chr(92) + '|')} |")
    if matrix.iopf_sweep:
        lines += ["", "## sva-iopf: cost per fault against the pages of one copy", "",
                  "| pages | stall exits/fault | stall host calls/fault | PRI exits/fault | PRI host calls/fault |"
                  " PRI groups |", "|---|---|---|---|---|---|"]
        for r in matrix.iopf_sweep:
            m = r.metrics
            lines.append(f"| {r.options.get('pages', '')} | " + " | ".join(_cell(m.get(k, "")) for k in (
                "stall_vm_exits_per_fault", "stall_host_calls_per_fault", "pri_vm_exits_per_fault",
                "pri_host_calls_per_fault", "pri_groups")) + " |")
    return lines


def _inline_html(text: str) -> str:
    """`code`, **bold** and escaped `\\|` of the Markdown this module writes, as HTML."""
    out = html.escape(text.replace("\\|", "|"), quote=False)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def markdown_to_html(md: str, title: str = "smmu-harness scenario report") -> str:
    """The subset of Markdown `markdown()` writes (headings, paragraphs, pipe tables, images) as one XHTML-
    compatible page; the SVG plots are referenced by file name like in the Markdown."""
    body: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline_html(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            body += _html_table([_cells(r) for r in rows[:1] + rows[2:]])
        elif (img := re.fullmatch(r"!\[([^\]]*)\]\(([^)]*)\)", line.strip())):
            body.append(f'<p><img src="{html.escape(img.group(2))}" alt="{html.escape(img.group(1))}"/></p>')
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "![")):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{_inline_html(' '.join(para))}</p>")
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:100%}"
             "table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #bbb;padding:2px 5px;text-align:left;vertical-align:top}"
             "th{background:#eee;font-size:85%}td.num{text-align:right;white-space:nowrap}"
             "td.verdict{min-width:16em;overflow-wrap:anywhere}"
             "tr.ok td.verdict,tr.ok td.okcell{background:#e3f4e3;color:#145214}"
             "tr.bad td.verdict,tr.bad td.okcell{background:#fbe3e3;color:#8b1010}"
             "img{max-width:100%;height:auto}")
    return ("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta charset=\"utf-8\"/>"
            f"<title>{html.escape(title)}</title><style>{style}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _html_table(rows: list[list[str]]) -> list[str]:
    """A pipe table as HTML. Header names may break after '_' (`<wbr/>`); numbers are right-aligned; in a
    table with an `ok` column each row is classed `ok` or `bad`, which colours its ok and verdict cells."""
    head = rows[0]
    ok_col = head.index("ok") if "ok" in head else None
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline_html(c).replace('_', '_<wbr/>')}</th>" for c in head)
           + "</tr>"]
    for r in rows[1:]:
        cls = ""
        if ok_col is not None and ok_col < len(r):
            cls = ' class="ok"' if r[ok_col] == "yes" else ' class="bad"'
        cells = []
        for i, c in enumerate(r):
            name = head[i] if i < len(head) else ""
            kind = ("okcell" if i == ok_col else "verdict" if name == "verdict"
                    else "num" if _NUMBER.fullmatch(c) else "")
            cells.append(f'<td class="{kind}">' if kind else "<td>")
            cells[-1] += f"{_inline_html(c)}</td>"
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


_DASHES = ("", "7 4", "2 3", "9 3 2 3")
_MARKERS = ("circle", "square", "triangle", "diamond")


def _marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    """A 7-px marker of the given shape at (x, y), with a tooltip."""
    title = f"<title>{html.escape(tip)}</title>"
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">{title}</circle>'
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}">{title}</rect>'
    if shape == "triangle":
        pts = f"{x:.1f},{y - 4.5:.1f} {x + 4:.1f},{y + 3:.1f} {x - 4:.1f},{y + 3:.1f}"
    else:
        pts = f"{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y:.1f} {x:.1f},{y + 4.5:.1f} {x - 4.5:.1f},{y:.1f}"
    return f'<polygon points="{pts}" fill="{colour}">{title}</polygon>'


def _wrap_label(names: list[str], width: int = 22) -> list[str]:
    """A legend label `a = b = c` in lines of at most about `width` characters, broken after an `=`."""
    lines = [names[0]]
    for n in names[1:]:
        if len(lines[-1]) + 3 + len(n) <= width:
            lines[-1] += f" = {n}"
        else:
            lines[-1] += " ="
            lines.append(n)
    return lines


def coincident_groups(series: dict[str, list[tuple[float, float]]]) -> list[tuple[list[str], list]]:
    """Series with exactly the same points, grouped (first-appearance order): each group is drawn as one
    line named after all its members, so the legend never names a line that another one hides."""
    groups: dict[tuple, list[str]] = {}
    for name, pts in series.items():
        groups.setdefault(tuple(sorted(pts)), []).append(name)
    return [(names, list(pts)) for pts, names in groups.items()]


def line_chart_svg(title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float]]],
                   width: int = 700, height: int = 400) -> str:
    """A small line chart as SVG text: axes with ticks, and per line a colour, a dash pattern and a marker
    shape of its own (lines stay apart without colour too) and a legend entry showing all three. Series with
    identical points are drawn once and named together (`private = unpinned`), with a note under the plot."""
    groups = coincident_groups(series)
    merged = any(len(names) > 1 for names, _ in groups)
    left, right, top, bottom = 64, 200, 40, 52 + (18 if merged else 0)
    pw, ph = width - left - right, height - top - bottom
    pts = [p for s in series.values() for p in s]
    xs = sorted({x for x, _ in pts}) or [0, 1]
    xmin, xmax = min(xs), max(xs)
    if xmax == xmin:
        xmax = xmin + 1
    ymax = max([y for _, y in pts] + [0])
    ystep = _nice_step(ymax)
    ytop = max(ystep * 4, ystep * -(-ymax // ystep)) if ymax > 0 else 1

    def sx(x: float) -> float:
        return left + (x - xmin) / (xmax - xmin) * pw

    def sy(y: float) -> float:
        return top + ph - (y / ytop) * ph

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="13">{e(title)}</text>']
    y = 0.0
    while y <= ytop + 1e-9:
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + pw}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        tick = f"{y:.2f}" if ystep % 1 else str(int(round(y)))       # one format for every tick
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{tick}</text>')
        y += ystep
    for x in xs:
        out.append(f'<line x1="{sx(x):.1f}" y1="{top + ph}" x2="{sx(x):.1f}" y2="{top + ph + 4}" stroke="black"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{_cell(x)}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{top + ph + 38}" text-anchor="middle">{e(xlabel)}</text>')
    out.append(f'<text x="16" y="{top + ph / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2:.0f})">{e(ylabel)}</text>')
    out += _series_svg(groups, sx, sy, left + pw + 14, top + 10)
    if merged:
        out.append(f'<text x="{left}" y="{height - 8}" font-size="11">lines with identical values are drawn once '
                   'and named together (a = b)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _series_svg(groups: list[tuple[list[str], list]], sx: Callable[[float], float], sy: Callable[[float], float],
                legend_x: float, legend_y: float) -> list[str]:
    """The lines of `line_chart_svg` (polyline + markers each) and their legend entries (line sample, marker,
    label wrapped after an '=') from (`legend_x`, `legend_y`) down."""
    e = html.escape
    out: list[str] = []
    for i, (names, pts) in enumerate(groups):
        c = _COLOURS[i % len(_COLOURS)]
        dash = f' stroke-dasharray="{_DASHES[i % len(_DASHES)]}"' if _DASHES[i % len(_DASHES)] else ""
        shape = _MARKERS[i % len(_MARKERS)]
        label = " = ".join(names)
        line = sorted(pts)
        pts_s = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        out.append(f'<polyline class="series" data-names="{e(",".join(names))}" data-marker="{shape}" fill="none" '
                   f'stroke="{c}" stroke-width="2"{dash} points="{pts_s}"><title>{e(label)}</title></polyline>')
        for x, y in line:
            out.append(_marker(shape, sx(x), sy(y), c, f"{label}: {_cell(x)} -> {_cell(y)}"))
        out.append(f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 28}" y2="{legend_y}" stroke="{c}" '
                   f'stroke-width="2"{dash}/>')
        out.append(_marker(shape, legend_x + 14, legend_y, c, label))
        for j, part in enumerate(_wrap_label(names)):
            out.append(f'<text x="{legend_x + 34}" y="{legend_y + 4 + 14 * j}">{e(part)}</text>')
            legend_y += 14 if j else 0
        legend_y += 20
    return out


def _nice_step(ymax: float) -> float:
    if ymax <= 0:
        return 0.25
    raw = ymax / 5
    mag = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag
