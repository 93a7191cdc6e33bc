"""pytest plugin: guest regression tests from `unittests.cfg` catalogues (kvm-unit-tests style).

`pytest guest_fw/` collects every `[name]` section of `guest_fw/**/unittests.cfg` as one test item (registered
by `guest_fw/conftest.py`). Each item builds its guest (harness/build.py, cached and safe under
pytest-xdist `-n auto`), runs it on a fresh `Machine` with the TLBI trap plugin, checks the exit status and,
with `expect_trace =`, compares the selected trace events with the golden JSON Lines file
(`--update-golden` rewrites the golden files instead).

Keys of a section: `file` (source next to the catalogue), `cpus` (or `smp`), `groups` (space-separated; each
becomes a pytest marker, so `-m tlbi` selects), `timeout` (seconds), `expect_trace`, `el` (1 or 2),
`hcr_fb` (0/1), `vmid`, `exit` (expected status, default 0), `trace_events` (globs), `max_insns`.
Unknown keys are an error (a typo must not silently change what a test checks).
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["GuestEntry", "parse_catalogue", "run_entry", "GuestRunResult", "CatalogueError"]

KNOWN_KEYS = {"file", "cpus", "smp", "groups", "timeout", "expect_trace", "el", "hcr_fb", "vmid", "exit",
              "trace_events", "max_insns"}


class CatalogueError(Exception):
    """A unittests.cfg section that cannot be run as written."""


@dataclass(frozen=True)
class GuestEntry:
    name: str
    source: Path
    cpus: int = 1
    groups: tuple[str, ...] = ()
    timeout: float = 30.0
    expect_trace: Path | None = None
    el: int = 1
    hcr_fb: bool = True
    vmid: int | None = None
    exit: int = 0
    trace_events: str | None = None
    max_insns: int | None = None


def _int(sec: configparser.SectionProxy, key: str, default: int | None, where: str) -> int | None:
    if key not in sec:
        return default
    try:
        return int(sec[key], 0)
    except ValueError:
        raise CatalogueError(f"{where}: {key} = {sec[key]!r} is not an integer") from None


def parse_catalogue(path: str | Path) -> list[GuestEntry]:
    path = Path(path)
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    cp.optionxform = str
    try:
        cp.read_string(path.read_text(), source=str(path))
    except configparser.Error as e:
        raise CatalogueError(f"{path}: {e}") from None
    out = []
    for name in cp.sections():
        sec = cp[name]
        where = f"{path}:[{name}]"
        unknown = set(sec) - KNOWN_KEYS
        if unknown:
            raise CatalogueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if "file" not in sec:
            raise CatalogueError(f"{where}: no file =")
        src = path.parent / sec["file"]
        el = _int(sec, "el", 1, where)
        if el not in (1, 2):
            raise CatalogueError(f"{where}: el = {el} (1 or 2)")
        fb = _int(sec, "hcr_fb", 1, where)
        if fb not in (0, 1):
            raise CatalogueError(f"{where}: hcr_fb = {fb} (0 or 1)")
        try:
            timeout = float(sec.get("timeout", "30").rstrip("s"))
        except ValueError:
            raise CatalogueError(f"{where}: timeout = {sec['timeout']!r}") from None
        out.append(GuestEntry(
            name=name, source=src, cpus=_int(sec, "cpus", _int(sec, "smp", 1, where), where),
            groups=tuple(sec.get("groups", "").split()), timeout=timeout,
            expect_trace=path.parent / sec["expect_trace"] if "expect_trace" in sec else None,
            el=el, hcr_fb=bool(fb), vmid=_int(sec, "vmid", None, where), exit=_int(sec, "exit", 0, where),
            trace_events=sec.get("trace_events"), max_insns=_int(sec, "max_insns", None, where)))
    return out


@dataclass
class GuestRunResult:
    entry: GuestEntry
    outcome: Any
    output: bytes
    diff: Any = None
    updated: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome.exit_code == self.entry.exit and self.diff is None


def run_entry(entry: GuestEntry, update_golden: bool = False, trace_file: str | Path | None = None
              ) -> GuestRunResult:
    """Build and run one catalogue entry (the same path `smmu-harness run` takes with these options)."""
    from harness.build import build_guest
    from harness.machine import Machine
    from harness.trace import Annotator, TraceSession
    from harness.trap import TlbiTrap

    if not entry.source.is_file():
        raise CatalogueError(f"[{entry.name}]: {entry.source} does not exist")
    if entry.expect_trace is not None and not update_golden and not entry.expect_trace.is_file():
        raise CatalogueError(f"[{entry.name}]: golden {entry.expect_trace} missing (run with --update-golden)")
    elf = build_guest([entry.source], name=entry.source.stem)
    output = bytearray()
    m = Machine(console=lambda vm, data, stream: output.extend(data))
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=entry.cpus, start_el=entry.el, vmid=entry.vmid)
    for v in vm.vcpus:
        v.hcr_fb = entry.hcr_fb
    vm.load(str(elf))

    def read(cpu, pc, n):
        word = m.vcpus[cpu].insn_at(pc) if cpu is not None else None
        return None if word is None else word.to_bytes(4, "little")

    annotate = Annotator(read, lambda cpu, pc: m.vcpus[cpu].vm.symbolize(pc) if cpu is not None else None)
    session = TraceSession(trace=trace_file, fmt="jsonl", events=entry.trace_events,
                           expect_trace=entry.expect_trace, update_golden=update_golden and
                           entry.expect_trace is not None)
    with session:
        session.attach(m.tracer, annotate=annotate, where=trap.where)
        outcome = m.run(timeout=entry.timeout, max_insns=entry.max_insns)
    return GuestRunResult(entry, outcome, bytes(output), session.diff, session.updated,
                          session.collect.objs if session.collect is not None else [])


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
