"""harness.pytest_plugin: unittests.cfg parsing, running an entry against its golden trace (and catching a
regression), and collection of guest_fw/ as pytest items."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from harness.build import GUEST_FW
from harness.pytest_plugin import CatalogueError, parse_catalogue, run_entry

CATALOGUE = GUEST_FW / "tests" / "unittests.cfg"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "unittests.cfg"
    p.write_text(text)
    return p


def test_parse_keys_and_defaults(tmp_path):
    p = _write(tmp_path, "[a]\nfile = a.c\nsmp = 2\ngroups = x y\ntimeout = 5s\nel = 2\nhcr_fb = 0\n"
                         "vmid = 0x10\nexit = 3\nexpect_trace = a.jsonl\n\n[b]\nfile = b.S\n")
    a, b = parse_catalogue(p)
    assert (a.name, a.cpus, a.groups, a.timeout, a.el, a.hcr_fb, a.vmid, a.exit) == \
           ("a", 2, ("x", "y"), 5.0, 2, False, 16, 3)
    assert a.source == tmp_path / "a.c" and a.expect_trace == tmp_path / "a.jsonl"
    assert (b.cpus, b.el, b.hcr_fb, b.exit, b.expect_trace, b.vmid) == (1, 1, True, 0, None, None)


@pytest.mark.parametrize("body, msg", [("file = a.c\ncpu = 2\n", "unknown key"), ("cpus = 2\n", "no file"),
                                       ("file = a.c\nel = 3\n", "el = 3"), ("file = a.c\nhcr_fb = 2\n", "hcr_fb"),
                                       ("file = a.c\ncpus = two\n", "not an integer")])
def test_parse_errors_name_the_problem(tmp_path, body, msg):
    with pytest.raises(CatalogueError, match=msg):
        parse_catalogue(_write(tmp_path, "[t]\n" + body))


def test_parse_qemu_verdicts(tmp_path):
    p = _write(tmp_path, "[a]\nfile = a.c\nqemu = status 132: no FEAT_XS\n[b]\nfile = b.c\n"
                         "qemu = as a: FB is 0 without EL2\n[c]\nfile = c.c\nqemu = output: Op1/Op2 swapped\n"
                         "[d]\nfile = d.c\n")
    a, b, c, d = parse_catalogue(p)
    assert (a.qemu.kind, a.qemu.status, a.qemu.reason) == ("status", 132, "no FEAT_XS")
    assert (b.qemu.kind, b.qemu.entry, b.qemu.reason) == ("as", "a", "FB is 0 without EL2")
    assert (c.qemu.kind, c.qemu.status, c.qemu.entry) == ("output", None, None) and d.qemu is None


@pytest.mark.parametrize("value, msg", [("status 132", "expected 'status N"), ("status: why", "is not 'status N'"),
                                        ("status 999: why", "is not"), ("exits 1: why", "is not"),
                                        ("output:", "expected"), ("as t: itself", "no other test"),
                                        ("as nosuch: why", "no other test")])
def test_parse_qemu_verdict_errors(tmp_path, value, msg):
    with pytest.raises(CatalogueError, match=msg):
        parse_catalogue(_write(tmp_path, f"[t]\nfile = t.c\nqemu = {value}\n"))


def test_shipped_catalogue_has_at_least_ten_guests_with_goldens():
    entries = parse_catalogue(CATALOGUE)
    for e in entries:
        assert e.source.is_file(), e.name
        assert e.expect_trace is None or e.expect_trace.is_file(), e.name
    # the golden-trace suite: at least ten guest programs with a golden trace
    assert len({e.source for e in entries if e.expect_trace is not None}) >= 10


def _entry(name):
    return next(e for e in parse_catalogue(CATALOGUE) if e.name == name)


def test_run_entry_matches_golden_and_catches_a_regression():
    fb0 = _entry("tlbi_fb0")
    ok = run_entry(fb0)
    assert ok.ok and ok.outcome.exit_code == 0
    assert [r["broadcast"] for r in ok.records if r["event"] == "tlbi_trap"] == [False, False, False, True]
    # the same guest with FB=1 broadcasts the local TLBIs: the golden compare reports the first difference
    bad = run_entry(dataclasses.replace(fb0, hcr_fb=True))
    assert not bad.ok and bad.diff is not None
    assert bad.diff.index == 0 and bad.diff.key == "broadcast"


def test_stale_read_without_broadcast():
    """The acceptance pair: TLBI VAE1IS reaches CPU0 (exit 0), a local TLBI VAE1 with FB=0 does not (exit 3:
    CPU0 read the old page through its stale TLB entry)."""
    fresh = run_entry(_entry("smp_remap"))
    stale = run_entry(_entry("smp_remap_local_fb0"))
    assert fresh.outcome.exit_code == 0 and b"reads page B" in fresh.output
    assert stale.outcome.exit_code == 3 and b"stale TLB entry" in stale.output
    remap = [r for r in fresh.records if r["event"] == "tlbi_trap" and r["op"] == "VAE1IS"]
    assert len(remap) == 1 and remap[0]["cpu"] == 1 and remap[0]["addr"] == 0x8000_0000
    assert any(r["event"] == "dvm_tlbi" and r["op"] == "VAE1IS" and r["dst"] == "vm0.cpu0" for r in fresh.records)
    assert not any(r["event"] == "dvm_tlbi" for r in stale.records)


def test_pytest_collects_guest_items():
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        str(GUEST_FW)], capture_output=True, text=True, cwd=GUEST_FW.parent, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [x for x in r.stdout.splitlines() if "unittests.cfg::" in x]
    assert "guest_fw/tests/unittests.cfg::smp_remap" in ids and len(ids) == len(parse_catalogue(CATALOGUE))
