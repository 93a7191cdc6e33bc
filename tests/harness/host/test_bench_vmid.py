"""The `vmid` benchmark runs (quick mode) and reports consistent figures."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "tools" / "benches" / "vmid.py"


def test_vmid_bench_quick(capsys):
    spec = importlib.util.spec_from_file_location("smmu_bench_vmid_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--quick"])
    out = capsys.readouterr().out
    assert "vcpu_load fast path" in out and "rollover (16-bit, 1000 live VMs" in out
    assert r["baseline_per_s"] > 0 and r["fast_load_put_per_s"] > 0
    assert r["fast_ratio"] == r["fast_load_put_per_s"] / (r["fast_load_put_per_s"] / r["fast_ratio"])
    # A rollover (bitmap reset + 8 CPUs + one broadcast) costs more than one baseline call.
    assert r["rollover_in_baseline_iters"] > 1 and r["reload_1000_s"] > 0
