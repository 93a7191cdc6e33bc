"""`smmu-harness scenario report`: run the matrix (scenario x policy x VMID width), sweep the number of VMs,
and write `report.md` (tables; `report.html` with `fmt="html"`, the same content as one HTML page),
`results.json` (every result) and two hand-written SVG plots:
`over_invalidation.svg` (over-invalidated SMMU entries against the number of VMs, per policy) and
`vm_exits.svg` (VM exits per guest invalidation against the number of VMs: forwarding without BTM vs BTM).

No plotting dependency: the SVG is a few lines of text (`line_chart_svg`).
"""
from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from .base import POLICY_NAMES
from .result import ScenarioResult

__all__ = ["Matrix", "run_report", "line_chart_svg", "markdown", "markdown_to_html", "ProgressBar",
           "DEFAULT_SWEEP", "FORMATS"]

FORMATS = ("md", "html")

DEFAULT_SWEEP = (1, 2, 3, 4, 6)
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

    def jobs(self) -> list[tuple[str, str, str, int, int | None]]:
        """(kind, scenario, policy, width, vms) in run order."""
        out = [("matrix", s, p, w, None) for s in self.scenarios for p in self.policies for w in self.widths]
        if "over-invalidation" in self.scenarios:
            out += [("over", "over-invalidation", p, self.sweep_width, n) for p in self.policies for n in self.sweep]
        if "no-btm-forwarding" in self.scenarios:
            pol = "shared" if "shared" in self.policies else self.policies[0]
            out += [("exits", "no-btm-forwarding", pol, self.sweep_width, n) for n in self.sweep]
        return out


class ProgressBar:
    """A one-line progress bar on a text stream (stderr): `[#####-----] 12/50 sva-btm private 8-bit`."""

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


def run_report(out_dir: str | Path, matrix: Matrix, runner: Callable[..., ScenarioResult],
               progress: ProgressBar | None = None, fmt: str = "md") -> dict[str, Path]:
    """Run every job with `runner(name, policy, vmid_bits, vms)`, write the files (`report.md`, or
    `report.html` with `fmt="html"`), return their paths by file name."""
    if fmt not in FORMATS:
        raise ValueError(f"report format {fmt!r} (choose from {', '.join(FORMATS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = matrix.jobs()
    bar = progress if progress is not None else ProgressBar(len(jobs))
    bar.total = max(len(jobs), 1)
    bar.show("starting")
    for kind, name, pol, width, vms in jobs:
        res = runner(name, pol, width, vms)
        {"matrix": matrix.results, "over": matrix.over_sweep, "exits": matrix.exits_sweep}[kind].append(res)
        bar.step(f"{name} {pol} {width}-bit" + (f" {vms} VMs" if vms else ""))
    bar.close()
    files: dict[str, Path] = {}
    over_series = {p: [(r.vms, r.metrics["over_invalidated_entries"]) for r in matrix.over_sweep
                       if r.policy == p] for p in matrix.policies}
    over_series = {p: s for p, s in over_series.items() if s}
    if over_series:
        files["over_invalidation.svg"] = out / "over_invalidation.svg"
        files["over_invalidation.svg"].write_text(line_chart_svg(
            "over-invalidation: SMMU stage-2 entries removed by broadcasts not meant for them",
            "VMs (each with a stage-2-only device)", "entries over-invalidated", over_series))
    if matrix.exits_sweep:
        fwd = [(r.vms, r.metrics["vm_exits_per_invalidation"]) for r in matrix.exits_sweep]
        btm = [(r.vms, r.metrics["btm_vm_exits_per_invalidation"]) for r in matrix.exits_sweep]
        files["vm_exits.svg"] = out / "vm_exits.svg"
        files["vm_exits.svg"].write_text(line_chart_svg(
            f"VM exits per guest invalidation ({matrix.exits_sweep[0].policy} policy)", "VMs on the host",
            "VM exits per invalidation", {"no BTM (forwarded)": fwd, "BTM": btm}))
    files["results.json"] = out / "results.json"
    files["results.json"].write_text(json.dumps({
        "matrix": [r.to_dict() for r in matrix.results],
        "over_invalidation_sweep": [r.to_dict() for r in matrix.over_sweep],
        "vm_exits_sweep": [r.to_dict() for r in matrix.exits_sweep]}, indent=1) + "\n")
    md = markdown(matrix, [p.name for p in files.values() if p.suffix == ".svg"])
    name = f"report.{fmt}"
    files[name] = out / name
    files[name].write_text(md if fmt == "md" else markdown_to_html(md))
    return files


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown(matrix: Matrix, plots: Iterable[str]) -> str:
    cols = ("stale_dma", "cross_vm_dma", "broadcast_invalidations", "over_invalidated_entries",
            "vm_exits_per_invalidation", "rollovers", "pinned_vmid_changes")
    lines = ["# smmu-harness scenario report", "",
             "Each row is one run of `smmu-harness scenario run NAME --policy P --vmid-bits W` (default VM "
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
                         f"{_cell(m['host_commands_per_invalidation'])} | "
                         f"{_cell(m['btm_vm_exits_per_invalidation'])} | {m['btm_stale_dma']} |")
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


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
            body.append("<table>")
            body.append("<tr>" + "".join(f"<th>{_inline_html(c)}</th>" for c in _cells(rows[0])) + "</tr>")
            for r in rows[2:]:
                body.append("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in _cells(r)) + "</tr>")
            body.append("</table>")
        elif (img := re.fullmatch(r"!\[([^\]]*)\]\(([^)]*)\)", line.strip())):
            body.append(f'<p><img src="{html.escape(img.group(2))}" alt="{html.escape(img.group(1))}"/></p>')
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "![")):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{_inline_html(' '.join(para))}</p>")
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}th{background:#eee}")
    return ("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta charset=\"utf-8\"/>"
            f"<title>{html.escape(title)}</title><style>{style}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def line_chart_svg(title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float]]],
                   width: int = 640, height: int = 380) -> str:
    """A small line chart (one polyline + markers per series, axes with ticks, legend) as SVG text."""
    left, right, top, bottom = 64, 190, 40, 52
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
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_cell(y if y % 1 else int(y))}'
                   '</text>')
        y += ystep
    for x in xs:
        out.append(f'<line x1="{sx(x):.1f}" y1="{top + ph}" x2="{sx(x):.1f}" y2="{top + ph + 4}" stroke="black"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{_cell(x)}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 12}" text-anchor="middle">{e(xlabel)}</text>')
    out.append(f'<text x="16" y="{top + ph / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2:.0f})">{e(ylabel)}</text>')
    for i, (name, s) in enumerate(series.items()):
        c = _COLOURS[i % len(_COLOURS)]
        dash = ' stroke-dasharray="6 3"' if i % 2 else ""
        pts_s = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(s))
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{pts_s}">'
                   f'<title>{e(name)}</title></polyline>')
        for x, y in s:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{c}"><title>{e(name)}: '
                       f'{_cell(x)} -> {_cell(y)}</title></circle>')
        ly = top + 10 + 18 * i
        out.append(f'<line x1="{left + pw + 14}" y1="{ly}" x2="{left + pw + 38}" y2="{ly}" stroke="{c}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + pw + 44}" y="{ly + 4}">{e(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice_step(ymax: float) -> float:
    if ymax <= 0:
        return 0.25
    raw = ymax / 5
    mag = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag
