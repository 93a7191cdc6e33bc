"""A normal (non-editable) install works: build the wheel, install it into a fresh venv, and run what a newcomer
runs first (a scenario; the README tour's build + run) from outside the source tree, with the guest cache in
the user's cache directory (never in site-packages)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_build_wheels() -> bool:
    import setuptools
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    return p


@pytest.mark.slow
@pytest.mark.skipif(not _can_build_wheels(), reason="building a wheel offline needs the 'wheel' package "
                                                    "(in the test extra) or setuptools >= 70.1")
def test_wheel_install_runs_scenarios_and_samples(tmp_path):
    # the wheel is built from a copy of the tree, so nothing is written into the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".guest-cache", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "whl",
          src])
    (wheel,) = (tmp_path / "whl").glob("smmu_harness-*.whl")
    with zipfile.ZipFile(wheel) as z:                  # every file guest builds and scenarios may read
        shipped = set(z.namelist())
    missing = [str(f.relative_to(src)) for f in (src / "guest_fw").rglob("*") if f.is_file()
               and str(f.relative_to(src)) not in shipped]
    assert not missing, missing
    venv = tmp_path / "venv"
    # system site packages: unicorn, capstone, pyelftools and ziglang come from this machine (no download)
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    py, tool = venv / "bin" / "python", venv / "bin" / "smmu-harness"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    site = Path(_run([py, "-c", "import harness, os; print(os.path.dirname(os.path.dirname(harness.__file__)))"],
                     cwd=tmp_path).stdout.strip())
    assert site.is_relative_to(venv), site                           # the wheel's copy, not this checkout
    for d in ("harness", "devmodel", "guest_fw"):                   # an installed package is read-only
        subprocess.run(["chmod", "-R", "a-w", site / d], check=True)

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SMMU_HARNESS_CACHE", "PYTHONPATH")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "xdg"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    try:
        p = _run([tool, "scenario", "run", "sva-btm", "--policy", "shared", "--vmid-bits", "8", "--json"],
                 cwd=work, env=env)
        assert '"ok": true' in p.stdout and '"scenario": "sva-btm"' in p.stdout
        # the README tour, word for word, from a directory that has no guest_fw/
        _run([tool, "build", "guest_fw/tests/smp_remap_local.c", "-o", "remap.elf"], cwd=work, env=env)
        p = _run([tool, "run", "remap.elf", "--cpus", "2"], cwd=work, env=env)
        assert "INFO: CPU0 reads page B after CPU1's TLBI: the broadcast reached it" in p.stdout
        p = subprocess.run([tool, "run", "remap.elf", "--cpus", "2", "--hcr-fb", "0", "--expect-trace",
                            "guest_fw/tests/smp_remap_local_fb0.jsonl"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 3, p.stderr                          # stale read, and the golden matches
        # a guest of one's own, against the installed runtime
        (work / "mine.c").write_text('#include "guest.h"\nint main(void)\n{\n\treport(1, "mine");\n'
                                     '\treturn report_summary();\n}\n')
        _run([tool, "build", "mine.c", "-o", "mine.elf", "--cflags", "-DFOO"], cwd=work, env=env)
        p = _run([tool, "run", "mine.elf"], cwd=work, env=env)
        assert "PASS: mine" in p.stdout
    finally:
        subprocess.run(["chmod", "-R", "u+w", site], check=False)
    assert list((home / "xdg" / "smmu-harness").glob("elf/*.elf"))     # the user's cache directory
    assert not (site / ".guest-cache").exists() and not (work / ".guest-cache").exists()
