"""tools/benches/harness.py runs and reports both rates (the >= 0.9 goal is checked by `tools/bench.py harness`
on 10^8 instructions; a short run here only proves the benchmark works)."""
import importlib.util
from pathlib import Path


def test_bench_harness_small_run(capsys):
    path = Path(__file__).resolve().parents[2] / "tools" / "benches" / "harness.py"
    spec = importlib.util.spec_from_file_location("bench_harness_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--insns", "2000000", "--repeat", "1"])
    assert r["insns"] == 2_000_000 and r["harness_rate"] > 0 and r["bare_rate"] > 0
    assert r["ratio"] == r["harness_rate"] / r["bare_rate"]
    assert "ratio" in capsys.readouterr().out
