"""tools/benches/smmu.py runs (small sizes) and prints hits, 4-level misses and recorded faults against the dict
baselines it measured in the same run (the goals themselves are judged by `tools/bench.py smmu` at full
size)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "tools" / "benches" / "smmu.py"


def test_smmu_bench_small_run(capsys):
    spec = importlib.util.spec_from_file_location("smmu_bench_smmu_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--pages", "64", "--accesses", "4000", "--repeat", "1"])
    out = capsys.readouterr().out
    for line in ("IOTLB hits", "4-level misses", "dict (function)", "dict (inline)", "recorded faults"):
        assert line in out, line
    assert r["hits_per_s"] > 0 and r["misses_4level_per_s"] > 0
    assert r["dict_inline_per_s"] > 0 and r["dict_call_per_s"] > 0
    # the ratios are computed from the rates measured in this run, not constants
    assert r["hits_vs_dict_call"] == r["hits_per_s"] / r["dict_call_per_s"]
    assert r["hits_vs_dict_inline"] == r["hits_per_s"] / r["dict_inline_per_s"]
    assert f"{r['hits_vs_dict_call']:.2f}x" in out and f"{r['hits_vs_dict_inline']:.2f}x" in out
    # a 4-level walk costs more than an IOTLB hit
    assert r["misses_4level_per_s"] < r["hits_per_s"]
    assert r["faults_per_s"] > 0 and f"{r['faults_vs_dict_call']:.4f}x" in out
    assert r["faults_per_s"] < r["hits_per_s"]                     # a walk + an event record costs more
    assert "IOTLB hits, HTTU" in out and r["httu_hits_vs_hits"] == r["httu_hits_per_s"] / r["hits_per_s"] > 0
    assert r["ok"] == (r["hits_vs_dict_call"] >= r["goal"] == 0.25
                       and r["faults_vs_dict_call"] >= r["fault_goal"] == 0.002)
