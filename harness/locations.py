"""Where the shipped guest firmware and the cache directory are: the part of harness/build.py that a plain
`run` needs (an image path as the README spells it, the native helpers' cache), importable without the
builder's toolchain records (start-up of `run`, tools/bench.py qemu). harness.build re-exports all of it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["GUEST_FW", "cache_dir", "shipped_path"]

GUEST_FW = Path(__file__).resolve().parent.parent / "guest_fw"


def cache_dir(env: Mapping[str, str] | None = None, guest_fw: Path | None = None) -> Path:
    """`$SMMU_HARNESS_CACHE`; else `.guest-cache/` in a writable source checkout (the one holding `guest_fw`);
    else the user's cache directory (`$XDG_CACHE_HOME/smmu-harness`, default `~/.cache/smmu-harness`): an
    installed package never writes into site-packages."""
    env = os.environ if env is None else env
    if env.get("SMMU_HARNESS_CACHE"):
        return Path(env["SMMU_HARNESS_CACHE"])
    root = (GUEST_FW if guest_fw is None else guest_fw).parent
    if (root / "pyproject.toml").is_file() and (root / "harness").is_dir() and os.access(root, os.W_OK):
        return root / ".guest-cache"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smmu-harness"


def shipped_path(path: str | os.PathLike) -> Path:
    """A relative `guest_fw/...` path as the README spells it: the path itself when it exists (run from a
    source checkout), else the installed package's copy (a wheel install, run from any directory)."""
    p = Path(path)
    if not p.exists() and not p.is_absolute() and p.parts[:1] == (GUEST_FW.name,):
        alt = GUEST_FW.parent / p
        if alt.exists():
            return alt
    return p
