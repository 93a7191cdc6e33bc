"""`smmu-harness scenario list | run | report` (through harness.cli.main, as the console script runs it)."""
from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("unicorn")

from harness.cli import main  # noqa: E402
from harness.scenarios.report import Matrix, ProgressBar, line_chart_svg, run_report  # noqa: E402


def test_list(capsys):
    assert main(["scenario", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("sva-btm", "vmid-alias", "over-invalidation", "no-btm-forwarding", "kvm-ordering"):
        assert name in out
    assert "policies: private, unpinned, split, restricted, shared" in out


# `metrics` holds at least these, with these JSON types ("number": int or float; never a bool)
REQUIRED_METRICS = {"stale_dma": "int", "cross_vm_dma": "int", "broadcast_invalidations": "int",
                 "over_invalidated_entries": "int", "vm_exits_per_invalidation": "number", "rollovers": "int",
                 "pinned_vmid_changes": "int"}


def _check_json_shape(d, scenario, policy):
    """The `--json` object of `scenario run`, with exact JSON types (bool is not an int here)."""
    assert d["scenario"] == scenario and d["policy"] == policy and type(d["ok"]) is bool
    assert type(d["metrics"]) is dict
    for k, kind in REQUIRED_METRICS.items():
        v = d["metrics"][k]
        if kind == "int":
            assert type(v) is int, (k, v)
        else:
            assert type(v) in (int, float), (k, v)


def test_run_json_exit_status(capsys):
    assert main(["scenario", "run", "sva-btm", "--policy", "unpinned", "--vmid-bits", "8", "--json"]) == 1
    bad = json.loads(capsys.readouterr().out)          # stdout is exactly one JSON object
    _check_json_shape(bad, "sva-btm", "unpinned")
    assert bad["ok"] is False and bad["metrics"]["stale_dma"] > 0 and bad["policy"] == "unpinned"
    assert main(["scenario", "run", "sva-btm", "--policy", "shared", "--vmid-bits", "8", "--json"]) == 0
    good = json.loads(capsys.readouterr().out)
    _check_json_shape(good, "sva-btm", "shared")
    assert good["ok"] is True and good["scenario"] == "sva-btm" and good["metrics"]["rollovers"] > 0


def test_run_json_forwarding_metrics(capsys):
    """A run whose VM-exit ratio is not 0: the number reaches stdout as a JSON number, exit status 0 with ok."""
    rc = main(["scenario", "run", "no-btm-forwarding", "--policy", "shared", "--vmid-bits", "8", "--json"])
    d = json.loads(capsys.readouterr().out)
    _check_json_shape(d, "no-btm-forwarding", "shared")
    assert rc == (0 if d["ok"] else 1) == 0
    assert d["metrics"]["vm_exits_per_invalidation"] >= 1.0


def test_run_text_and_vms(capsys):
    assert main(["scenario", "run", "over-invalidation", "--policy", "restricted", "--vms", "2"]) == 0
    out = capsys.readouterr().out
    assert "VMs 2" in out and "OK:" in out


def test_run_trace_files(tmp_path, capsys):
    jl, txt, chrome = tmp_path / "t.jsonl", tmp_path / "t.log", tmp_path / "t.json"
    rc = main(["scenario", "run", "sva-btm", "--policy", "private", "--vmid-bits", "8", "--trace", str(jl),
               "--trace", str(txt), "--trace", str(chrome)])
    assert rc == 1
    events = [json.loads(line) for line in jl.read_text().splitlines()]
    # files opened before the machine existed still get the PC annotation and one track per vCPU
    trap = next(e for e in events if e["event"] == "tlbi_trap")
    assert trap["sym"] and trap["insn"].startswith("tlbi ")
    dvm = next(e for e in events if e["event"] == "dvm_tlbi")
    assert dvm["cpu"] == trap["cpu"] and dvm["src"] == "sva.cpu0"
    tracks = [e["args"]["name"] for e in json.loads(chrome.read_text())
              if e.get("ph") == "M" and e["name"] == "thread_name" and e["pid"] == 1]
    assert len(tracks) == len(set(tracks)) and "sva.cpu0" in tracks and not any(t.startswith("cpu") for t in tracks)
    names = {e["event"] for e in events}
    assert {"tlbi_trap", "dvm_tlbi", "smmu_btm_tlbi", "scenario_report", "kvm_vmid_rollover"} <= names
    stale = [e for e in events if e["event"] == "scenario_report" and e["outcome"] == "stale"]
    assert stale and all(e["vmid_cpu"] != e["vmid_ste"] for e in stale)
    assert "scenario_report vm=sva" in txt.read_text()


@pytest.mark.parametrize("argv", [["scenario", "run", "nope"], ["scenario", "run", "sva-btm", "--policy", "x"],
                                  ["scenario", "run", "sva-btm", "--vmid-bits", "12"],
                                  ["scenario", "run", "sva-btm", "--vms", "0"], ["scenario"],
                                  ["scenario", "report", "--policies", "bogus"],
                                  ["scenario", "report", "--format", "pdf"]])
def test_usage_errors(argv, capsys, tmp_path):
    assert main(argv + (["-o", str(tmp_path)] if "report" in argv else [])) == 125


def test_report_small_matrix(tmp_path, capsys):
    rc = main(["scenario", "report", "-o", str(tmp_path), "--scenarios",
               "sva-btm,over-invalidation,no-btm-forwarding", "--policies", "private,shared", "--widths", "8",
               "--sweep", "1,2", "-j", "1"])
    assert rc == 0
    cap = capsys.readouterr()
    # progress on stderr; not a terminal here, so plain lines (the bar is drawn only on a tty:
    # test_progress_bar_only_on_a_terminal)
    assert "[12/12] " in cap.err and "\r" not in cap.err and cap.err.count("\n") == 12
    md = (tmp_path / "report.md").read_text()
    assert "| sva-btm | private | 8 | **no** |" in md and "| sva-btm | shared | 8 | yes |" in md
    assert "![over_invalidation.svg](over_invalidation.svg)" in md and "![vm_exits.svg](vm_exits.svg)" in md
    for svg in ("over_invalidation.svg", "vm_exits.svg"):
        root = ET.fromstring((tmp_path / svg).read_text())
        assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["matrix"]) == 6 and len(data["over_invalidation_sweep"]) == 4
    over = {(r["policy"], r["vms"]): r["metrics"]["over_invalidated_entries"] for r in data["over_invalidation_sweep"]}
    assert over[("private", 2)] > over[("private", 1)] > 0 and over[("shared", 2)] == 0


def test_report_html(tmp_path, capsys):
    rc = main(["scenario", "report", "-o", str(tmp_path), "--format", "html", "--scenarios", "over-invalidation",
               "--policies", "private,shared", "--widths", "8", "--sweep", "1,2"])
    assert rc == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out and not (tmp_path / "report.md").exists()
    root = ET.fromstring((tmp_path / "report.html").read_text().split("\n", 1)[1])      # after the doctype
    ns = "{http://www.w3.org/1999/xhtml}"
    tables = root.findall(f".//{ns}table")
    rows = [[c.text or "".join(c.itertext()) for c in tr] for tr in tables[0].findall(f"{ns}tr")]
    assert rows[0][:4] == ["scenario", "policy", "VMID bits", "ok"]
    assert rows[1][:4] == ["over-invalidation", "private", "8", "no"] and rows[2][3] == "yes"
    sweep = {tr[0].text: [c.text for c in tr[1:]] for tr in tables[1].findall(f"{ns}tr")[1:]}
    assert int(sweep["private"][1]) > int(sweep["private"][0]) > 0 and sweep["shared"] == ["0", "0"]
    assert [i.get("src") for i in root.iter(f"{ns}img")] == ["over_invalidation.svg"]


def test_markdown_to_html_escapes_and_formats():
    from harness.scenarios.report import markdown_to_html
    page = markdown_to_html("# T\n\na `x<y` **b**\n\n| h | v |\n|---|---|\n| a \\| b | **no** |\n")
    root = ET.fromstring(page.split("\n", 1)[1])
    ns = "{http://www.w3.org/1999/xhtml}"
    assert root.find(f".//{ns}p/{ns}code").text == "x<y" and root.find(f".//{ns}p/{ns}b").text == "b"
    cells = root.findall(f".//{ns}td")
    assert cells[0].text == "a | b" and cells[1].find(f"{ns}b").text == "no"


def test_line_chart_scales_points():
    svg = line_chart_svg("t", "x", "y", {"a": [(1, 0), (2, 10)], "b": [(1, 5), (2, 5)]})
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    ya = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    yb = [float(p.split(",")[1]) for p in lines[1].get("points").split()]
    assert ya[0] > yb[0] > ya[1]                   # SVG y grows downwards: 0 lowest, 10 highest
    assert yb[0] == yb[1]


def test_progress_bar_counts():
    s = io.StringIO()
    bar = ProgressBar(4, s, width=8)
    for i in range(4):
        bar.step(f"job{i}")
    bar.close()
    assert s.getvalue().rstrip().endswith("job3") and "[########] 4/4" in s.getvalue()


def test_run_report_with_a_fake_runner(tmp_path):
    """run_report only arranges results: the files reflect what the runner returned."""
    from harness.scenarios.result import ScenarioResult

    def runner(name, policy, bits, vms):
        r = ScenarioResult(name, policy, bits, vms or 1, ok=policy == "shared")
        r.metrics["over_invalidated_entries"] = (vms or 1) * 7 if policy == "private" else 0
        return r
    m = Matrix(["over-invalidation"], ["private", "shared"], [8], (1, 3))
    files = run_report(tmp_path, m, runner, ProgressBar(1, io.StringIO()))
    assert "| private | 7 | 21 |" in files["report.md"].read_text()
    assert "vm_exits.svg" not in files


# -- scenario report: arguments checked first, results kept as they complete, -j ------------------------------
@pytest.mark.parametrize("argv, msg", [
    (["--sweep", "0"], "0 VMs: 1 to 64"), (["--sweep", "1,65"], "65 VMs: 1 to 64"), (["--sweep", "x"], "not a number"),
    (["--scenarios", "nosuch"], "unknown scenario 'nosuch' (choose from sva-btm, vmid-alias, over-invalidation, "
                                "no-btm-forwarding, kvm-ordering, sva-iopf, sva-ats, sva-dirty, virtio-iommu)"),
    (["--policies", "shared,bogus"], "unknown policy 'bogus' (choose from private, unpinned"),
    (["--widths", "12"], "unknown VMID width '12' (choose from 8, 16)"),
    (["-j", "0"], "at least 1"), (["--scenarios", ","], "no scenario given"),
])
def test_report_checks_every_argument_before_running(tmp_path, capsys, argv, msg):
    out = tmp_path / "rep"
    assert main(["scenario", "report", "-o", str(out), *argv]) == 125
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    assert not out.exists()                                  # nothing ran, nothing written


def test_report_output_directory_checked_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["scenario", "report", "-o", str(blocker / "sub"), "--scenarios", "sva-btm"]) == 125
    err = capsys.readouterr().err
    assert str(blocker / "sub") in err and err.count("\n") == 1 and "internal error" not in err


def test_scenario_run_vms_upper_bound(capsys):
    from harness.scenarios import MAX_VMS
    assert main(["scenario", "run", "sva-btm", "--vms", str(MAX_VMS + 1)]) == 125
    assert f"1 to {MAX_VMS}" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"1 to {MAX_VMS}"):
        from harness.scenarios import run_scenario
        run_scenario("sva-btm", "shared", 8, MAX_VMS + 1)


def _subparser(*path):
    from harness.cli import build_parser
    p = build_parser()
    for name in path:
        sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
        p = sub.choices[name]
    return p


@pytest.mark.parametrize("path", [("scenario", "report"), ("scenario", "run")])
def test_every_scenario_option_has_help_with_its_default(path):
    p = _subparser(*path)
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            assert a.help and "[" in a.help and a.help.rstrip().endswith("]"), (a.option_strings, a.help)


def test_report_help_documents_jobs():
    from harness.scenarios.cli import default_jobs
    h = _subparser("scenario", "report").format_help()
    assert "-j N, --jobs N" in h and f"[the CPUs available: {default_jobs()}]" in " ".join(h.split())


def _fake_result(name, policy, bits, vms):
    from harness.scenarios.result import ScenarioResult
    r = ScenarioResult(name, policy, bits, vms or 1, ok=policy == "shared", verdict=f"{name} under {policy}")
    r.metrics["over_invalidated_entries"] = (vms or 1) * 7 if policy == "private" else 0
    return r


def test_interrupted_report_keeps_what_finished(tmp_path):
    calls = []

    def runner(name, policy, bits, vms):
        calls.append((name, policy))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _fake_result(name, policy, bits, vms)
    m = Matrix(["over-invalidation"], ["private", "shared"], [8, 16], (1, 3))
    with pytest.raises(KeyboardInterrupt):
        run_report(tmp_path, m, runner, ProgressBar(1, io.StringIO()))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["complete"] is False and [(r["policy"], r["vmid_bits"]) for r in data["matrix"]] == \
        [("private", 8), ("private", 16)]
    md = (tmp_path / "report.md").read_text()
    assert "Interrupted: 2 of 8 runs finished." in md and "| over-invalidation | private | 16 |" in md


def test_results_json_is_written_after_every_job(tmp_path):
    seen = []

    def runner(name, policy, bits, vms):
        f = tmp_path / "results.json"
        seen.append(len(json.loads(f.read_text())["matrix"]) if f.exists() else 0)
        return _fake_result(name, policy, bits, vms)
    m = Matrix(["sva-btm"], ["private", "unpinned", "shared"], [8])
    run_report(tmp_path, m, runner, ProgressBar(1, io.StringIO()))
    assert seen == [0, 1, 2]
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is True


def test_a_failing_run_is_reported_and_the_rest_go_on(tmp_path):
    def runner(name, policy, bits, vms):
        if policy == "unpinned":
            raise RuntimeError("model bug")
        return _fake_result(name, policy, bits, vms)
    m = Matrix(["sva-btm", "no-btm-forwarding"], ["private", "unpinned", "shared"], [8], (1,))
    files = run_report(tmp_path, m, runner, ProgressBar(1, io.StringIO()))
    rows = json.loads(files["results.json"].read_text())["matrix"][:3]
    assert [r["ok"] for r in rows] == [False, False, True] and rows[1]["error"] == "RuntimeError: model bug"
    assert "the run failed: RuntimeError: model bug" in files["report.md"].read_text()


def _without_timing(path):
    d = json.loads(path.read_text())
    for k in ("matrix", "over_invalidation_sweep", "vm_exits_sweep"):
        for r in d[k]:
            r.pop("seconds")
    return d


def test_parallel_report_is_identical_to_serial(tmp_path, capsys):
    args = ["--scenarios", "over-invalidation,no-btm-forwarding", "--policies", "private,shared",
            "--widths", "8", "--sweep", "1"]
    assert main(["scenario", "report", "-o", str(tmp_path / "j1"), "-j", "1", *args]) == 0
    assert main(["scenario", "report", "-o", str(tmp_path / "j2"), "-j", "2", *args]) == 0
    capsys.readouterr()
    assert _without_timing(tmp_path / "j1" / "results.json") == _without_timing(tmp_path / "j2" / "results.json")
    for name in ("report.md", "over_invalidation.svg", "vm_exits.svg"):
        assert (tmp_path / "j1" / name).read_text() == (tmp_path / "j2" / name).read_text(), name


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    from harness.scenarios.report import LineProgress, make_progress
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = make_progress(2, stream)
        bar.show("starting")
        bar.step("a: ok")
        bar.step("b: NOT OK")
        bar.close()
    assert type(make_progress(2, pipe)) is LineProgress
    assert "\r[" in tty.getvalue() and "[##############################] 2/2 b: NOT OK" in tty.getvalue()
    assert pipe.getvalue() == "[1/2] a: ok\n[2/2] b: NOT OK\n"


def test_coincident_series_are_drawn_once_and_named_together():
    svg = line_chart_svg("t", "x", "y", {"private": [(1, 24), (2, 48)], "unpinned": [(1, 24), (2, 48)],
                                         "split": [(1, 24), (2, 48)], "restricted": [(1, 0), (2, 0)],
                                         "shared": [(1, 0), (2, 0)], "half": [(1, 12), (2, 0)]})
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert [p.get("data-names") for p in lines] == ["private,unpinned,split", "restricted,shared", "half"]
    legend = " ".join(t.text for t in root.iter(f"{ns}text"))
    assert "private = unpinned =" in legend and "restricted = shared" in legend and "drawn once" in legend
    assert "unpinned" not in legend.replace("private = unpinned =", "")   # each series named exactly once
    # every drawn line has its own colour, dash pattern and marker shape
    for attr in ("stroke", "stroke-dasharray", "data-marker"):
        assert len({p.get(attr) for p in lines}) == 3, attr
    assert {m.tag for m in root} >= {f"{ns}circle", f"{ns}rect", f"{ns}polygon"}


def _children(pid):
    import os
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _start_parallel_report(out):
    import os
    import signal
    import subprocess
    import sys
    import time
    from guestbin import ROOT
    p = subprocess.Popen([sys.executable, "-m", "harness", "scenario", "report", "-o", str(out), "-j", "2",
                          "--scenarios", "sva-btm,over-invalidation", "--sweep", "1,2,3,4"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not (out / "results.json").exists():
        assert p.poll() is None and time.time() - t0 < 60, "no job finished"
        time.sleep(0.1)
    return p


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_parallel_report_workers_exit_when_the_parent_is_killed(tmp_path):
    import os
    import time
    p = _start_parallel_report(tmp_path / "rep")
    kids = _children(p.pid)
    tree = kids + [g for k in kids for g in _children(k)]   # the workers (forked: harness/parallel.py run_jobs)
    assert len(tree) >= 2
    p.kill()
    p.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(os.path.exists(f"/proc/{x}") for x in tree):
        time.sleep(0.2)
    assert not [x for x in tree if os.path.exists(f"/proc/{x}")]    # no orphans left waiting for jobs


def test_parallel_report_on_sigterm_writes_what_finished(tmp_path):
    import signal
    out = tmp_path / "rep"
    p = _start_parallel_report(out)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] is False and data["matrix"]
    assert "Interrupted: " in (out / "report.md").read_text()
