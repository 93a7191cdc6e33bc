"""kvm-unit-tests' ITS tests beyond the MAX_SMP=2 baseline of test_kvm_unit_tests.py: its-trigger needs 4 vCPUs
("Test requires at least 4 vcpus"); with MAX_SMP=4 it runs (MAPD/MAPC/MAPTI, INT, INV/INVALL with the LPI
configuration table, MAPD V=0) and must give the verdict and summary QEMU 7.2 gives it."""
from __future__ import annotations

import functools
import shutil

import pytest

from harness.catalogue import parse_catalogue
from harness.unittests import format_line, run_qemu, run_test

from test_kvm_unit_tests import CFG

QEMU = shutil.which("qemu-system-aarch64")


@functools.cache
def entry():
    return {e.name: e for e in parse_catalogue(CFG, 4)}["its-trigger"]


@functools.cache
def ours():
    return run_test(entry())


def test_its_trigger_with_four_vcpus_passes():
    assert entry().cpus == 4
    r = ours()
    assert (r.verdict, r.status, r.detail) == ("PASS", 0, "(6 tests)"), format_line(r) + "\n" + r.output[-2000:]


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_its_trigger_as_qemu_with_four_vcpus():
    q, r = run_qemu(entry(), QEMU), ours()
    assert (r.verdict, r.detail, r.status) == (q.verdict, q.detail, q.status), format_line(q) + " / " + format_line(r)
