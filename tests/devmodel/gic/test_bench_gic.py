"""tools/benches/gic.py runs (quick) and reports the per-slice interrupt check against the baseline it measured
in the same run (the >= 0.5 goal itself is judged by `tools/bench.py gic`)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "tools" / "benches" / "gic.py"


def test_gic_bench_quick_run(capsys):
    spec = importlib.util.spec_from_file_location("smmu_bench_gic_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--quick"])
    out = capsys.readouterr().out
    for line in ("irq+fiq check", "SPI pulse+IAR1+EOIR1", "MSI->LPI+IAR1+EOIR1"):
        assert line in out, line
    assert r["check_ratio"] == r["check_per_s"] / r["baseline_per_s"]
    assert f"ratio {r['check_ratio']:.2f}" in out
    assert 0 < r["msi_round_trip_per_s"] and 0 < r["spi_round_trip_per_s"] < r["check_per_s"]
    assert r["ok"] == (r["check_ratio"] >= r["goal"] == 0.5)
