"""tools/benches/semihosting.py runs and checks its own work (the console really received the bytes); the
ratio goal itself is for `python3 tools/bench.py semihosting`, not for a unit test on a shared machine."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "tools" / "benches" / "semihosting.py"


def test_semihosting_bench_smoke(capsys):
    spec = importlib.util.spec_from_file_location("smmu_bench_semihosting_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--calls", "4000", "--repeat", "1"])
    assert r["baseline_per_s"] > 0 and r["writec_per_s"] > 0 and r["write0_per_s"] > 0 and r["write_per_s"] > 0
    assert abs(r["writec_ratio"] - r["writec_per_s"] / r["baseline_per_s"]) < 1e-9
    assert r["ok"] == (r["writec_ratio"] >= r["goal"])
    assert "SYS_WRITEC" in capsys.readouterr().out


def test_bench_registered():
    spec = importlib.util.spec_from_file_location("smmu_bench_main_test", BENCH.parents[1] / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "semihosting" in mod.NAMES
