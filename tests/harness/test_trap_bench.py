"""tools/benches/trap.py runs and checks its own work (traps and syncs per iteration); the ratio goal itself
is for `python3 tools/bench.py trap`, not for a unit test on a shared machine."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from trap_paths import trap_path  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("trap_path")   # every test on the native and the Python trap

BENCH = Path(__file__).resolve().parents[2] / "tools" / "benches" / "trap.py"


def test_trap_bench_smoke(capsys):
    spec = importlib.util.spec_from_file_location("smmu_bench_trap_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(["--iters", "2000", "--repeat", "1"])
    assert r["bare"] > 0 and r["harness"] > 0 and r["harness_jsonl"] > 0
    assert abs(r["ratio"] - r["harness"] / r["bare"]) < 1e-9
    out = capsys.readouterr().out
    assert "ratio" in out and "jsonl" in out
