"""The two implementations of the TLBI trap (harness/trap.py): the native hook (harness/native, records
delivered in batches at observation points) and the pure-Python hooks. `trap_path` is a fixture that runs a
test once on each (`pytestmark = pytest.mark.usefixtures("trap_path")` in a module that imports it); the
native run fails, rather than silently testing the Python path twice, when this machine can build the helper
(a C compiler and unicorn's headers) but the trap did not get it."""
from __future__ import annotations

import shutil

import pytest

from harness import native

PATHS = ("native", "python")


def native_expected() -> bool:
    """Can this machine run the native trap (what tests/harness/test_trap_paths.py checks it does), and has the
    user not turned it off (`SMMU_HARNESS_NATIVE=0`: the tests that need it then skip)?"""
    return native.enabled() and any(shutil.which(c) for c in ("cc", "gcc", "clang"))


def use_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Select the trap path `path` for the traps and vCPUs made from now on."""
    monkeypatch.setenv(native.ENV, "1" if path == "native" else "0")
    if path == "native" and native.tlbi_trap() is None:
        if native_expected():
            pytest.fail(f"native TLBI trap not built here: {native.status()}")
        pytest.skip(f"native TLBI trap unavailable: {native.status()}")


@pytest.fixture(params=PATHS)
def trap_path(request, monkeypatch) -> str:
    use_path(monkeypatch, request.param)
    return request.param
