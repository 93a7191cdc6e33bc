"""pytest plugin: guest regression tests from `unittests.cfg` catalogues (kvm-unit-tests style).

`pytest guest_fw/` collects every `[name]` section of `guest_fw/**/unittests.cfg` as one test item (registered
by `guest_fw/conftest.py`). Each item builds its guest (harness/build.py, cached and safe under
pytest-xdist `-n auto`), runs it on a fresh `Machine` with the TLBI trap plugin, checks the exit status and,
with `expect_trace =`, compares the selected trace events with the golden JSON Lines file
(`--update-golden` rewrites the golden files instead).

The catalogue is read by harness/catalogue.py, the parser `smmu-harness unittests` uses too (kvm-unit-tests'
format): keys `file` (source next to the catalogue), `cpus` (or `smp`), `groups` (space-separated; each
becomes a pytest marker, so `-m tlbi` selects), `timeout` (seconds), `expect_trace`, `el` (1 or 2),
`hcr_fb` (0/1), `vmid`, `exit` (expected status, default 0), `trace_events` (globs), `max_insns`, and
kvm-unit-tests' own. Unknown keys are an error (a typo must not silently change what a test checks). Items
run through `harness.unittests.run_entry`, the runner's own path.
"""
from __future__ import annotations

import pytest

from .catalogue import CatalogueError, TestEntry, parse_catalogue
from . import unittests
from .unittests import RunRecord

__all__ = ["GuestEntry", "parse_catalogue", "run_entry", "GuestRunResult", "CatalogueError"]

#: the catalogue's test entries (harness/catalogue.py: one parser for this and `smmu-harness unittests`)
GuestEntry = TestEntry


class GuestRunResult(RunRecord):
    """What `run_entry` gave for `entry`; `ok` when the status is the expected one and the golden matched."""

    def __init__(self, entry: TestEntry, rec: RunRecord):
        super().__init__(rec.outcome, rec.output, rec.diff, rec.updated, rec.records, rec.testdev_used)
        self.entry = entry

    @property
    def ok(self) -> bool:
        return self.outcome.exit_code == self.entry.exit and self.diff is None


def run_entry(entry: TestEntry, update_golden: bool = False, trace_file=None) -> GuestRunResult:
    """Build and run one catalogue entry (`harness.unittests.run_entry`, the path `smmu-harness run` takes)."""
    return GuestRunResult(entry, unittests.run_entry(entry, update_golden=update_golden, trace_file=trace_file))


# --- pytest hooks -------------------------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("smmu-harness guests")
    group.addoption("--update-golden", action="store_true", default=False,
                    help="rewrite the expect_trace golden files of the guest tests instead of comparing")


def pytest_collect_file(file_path, parent):
    if file_path.name == "unittests.cfg":
        return GuestCatalogue.from_parent(parent, path=file_path)
    return None


class GuestTestFailure(Exception):
    pass


class GuestCatalogue(pytest.File):
    def collect(self):
        try:
            entries = parse_catalogue(self.path)
        except CatalogueError as e:
            raise self.CollectError(str(e)) from None
        for e in entries:
            for g in e.groups:
                self.config.addinivalue_line("markers", f"{g}: guest test group (unittests.cfg)")
            yield GuestItem.from_parent(self, name=e.name, entry=e)


class GuestItem(pytest.Item):
    def __init__(self, *, entry: GuestEntry, **kw):
        super().__init__(**kw)
        self.entry = entry
        for g in entry.groups:
            self.add_marker(g)

    def runtest(self) -> None:
        update = bool(self.config.getoption("--update-golden", default=False))
        try:
            r = run_entry(self.entry, update_golden=update)
        except CatalogueError as e:
            raise GuestTestFailure(str(e)) from None
        problems = []
        if r.outcome.exit_code != self.entry.exit:
            problems.append(f"exit status {r.outcome.exit_code}, expected {self.entry.exit}: {r.outcome.message}")
        if r.diff is not None:
            problems.append(str(r.diff))
        if problems:
            tail = r.output.decode("utf-8", "replace").splitlines()[-15:]
            raise GuestTestFailure("\n".join(problems + ["guest output (last lines):"] + ["  " + x for x in tail]))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GuestTestFailure):
            return f"guest test [{self.entry.name}] ({self.entry.source.name}):\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"guest {self.entry.name}"
