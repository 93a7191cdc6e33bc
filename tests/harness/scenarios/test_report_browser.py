"""The HTML report as a person sees it: rendered by headless Chromium at 1280x800, the layout measured by the
browser itself (no horizontal scrolling, the verdict column on screen, verdicts coloured, plots loaded)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from harness.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")

# Runs after layout and image loading; writes what the browser measured into the DOM for --dump-dom.
PROBE = """<script>
window.addEventListener("load", function () {
  var table = document.querySelector("table");
  var heads = Array.prototype.map.call(table.rows[0].cells, function (c) { return c.textContent; });
  var verdict = table.rows[0].cells[heads.indexOf("verdict")].getBoundingClientRect();
  function bg(sel) { var e = document.querySelector(sel); return e ? getComputedStyle(e).backgroundColor : null; }
  var out = {innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
             verdictLeft: verdict.left, verdictRight: verdict.right,
             okBg: bg("tr.ok td.verdict"), badBg: bg("tr.bad td.verdict"), plainBg: bg("td.num"),
             images: Array.prototype.map.call(document.images, function (i) {
               return {src: i.getAttribute("src"), width: i.naturalWidth, right: i.getBoundingClientRect().right}; })};
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _measure(page, tmp_path, width=1280, height=800):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', p.stdout, re.S)
    assert m, (p.returncode, p.stderr[-2000:])
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("html-report")
    # the scenarios with the longest verdicts and every metric column, both plots
    assert main(["scenario", "report", "-o", str(out), "--format", "html", "-j", "1", "--scenarios",
                 "kvm-ordering,over-invalidation,no-btm-forwarding", "--policies", "private,shared",
                 "--widths", "8", "--sweep", "1,2"]) == 0
    return out


def test_report_fits_1280_px_with_the_verdict_column_visible_and_coloured(report_dir, tmp_path):
    page = report_dir / "probe.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    m = _measure(page, tmp_path)
    assert m["scrollWidth"] <= m["innerWidth"], m                 # no horizontal scrolling
    assert 0 <= m["verdictLeft"] < m["verdictRight"] <= m["innerWidth"], m
    assert m["verdictRight"] - m["verdictLeft"] >= 200, m         # wide enough to read, not a sliver
    assert m["okBg"] and m["badBg"] and len({m["okBg"], m["badBg"], m["plainBg"]}) == 3, m
    assert [i["src"] for i in m["images"]] == ["over_invalidation.svg", "vm_exits.svg"]
    assert all(i["width"] > 0 and i["right"] <= m["innerWidth"] for i in m["images"]), m["images"]


def test_guest_sva_tables_fit_too(tmp_path_factory, tmp_path):
    """The guest-SVA tables (their own metric columns, the variants: the longest verdicts) at 1280 px."""
    out = tmp_path_factory.mktemp("sva-report")
    assert main(["scenario", "report", "-o", str(out), "--format", "html", "-j", "2", "--scenarios",
                 "sva-ats,sva-dirty", "--policies", "private", "--widths", "8"]) == 0
    html = (out / "report.html").read_text()
    assert html.count("<table>") == 3                             # the matrix, one per scenario
    page = out / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    m = _measure(page, tmp_path)
    assert m["scrollWidth"] <= m["innerWidth"], m
    assert m["verdictRight"] <= m["innerWidth"] and m["badBg"], m


def test_the_iopf_cost_plot_loads_and_fits(tmp_path):
    """iopf_cost.svg and the sweep table at 1280 px, from the fake runner's results (the arrangement is what is
    measured here; the real runs are the scenario tests')."""
    import io

    from harness.scenarios.report import Matrix, ProgressBar, run_report

    from .fake_sva import FakeSvaRunner
    files = run_report(tmp_path / "out", Matrix(["sva-iopf"], ["shared"], [8]), FakeSvaRunner(),
                       ProgressBar(1, io.StringIO()), fmt="html")
    html = files["report.html"].read_text()
    assert html.count("<table>") == 3                             # the matrix, sva-iopf's table, the sweep
    page = files["report.html"].parent / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    m = _measure(page, tmp_path)
    assert m["scrollWidth"] <= m["innerWidth"], m
    assert [i["src"] for i in m["images"]] == ["iopf_cost.svg"], m
    assert m["images"][0]["width"] > 0 and m["images"][0]["right"] <= m["innerWidth"], m
