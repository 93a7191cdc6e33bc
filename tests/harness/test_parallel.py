"""harness/parallel.py: the pool's start method (fork from a single-threaded parent, forkserver otherwise) and
that forking keeps the output of `unittests -j` the serial one (nothing the parent buffered printed twice)."""
from __future__ import annotations

import threading

from guestbin import ROOT, run_cli

from harness import parallel

KUT = ROOT / "tests" / "fixtures" / "kvm-unit-tests-1da1819e" / "arm" / "unittests.cfg"


def test_fork_only_without_other_threads(monkeypatch):
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert parallel._context(["json"]).get_start_method() == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)       # pytest-xdist's execnet threads
    assert parallel._context(["json"]).get_start_method() == "forkserver"


def test_parallel_tap_output_is_the_serial_output():
    """-t prints its header before the workers start: a forked worker must not print it again."""
    names = ("selftest-vectors-kernel", "selftest-vectors-user", "debug-sstep")
    one = run_cli("unittests", KUT, "-t", "-j", "1", *names, timeout=120)
    two = run_cli("unittests", KUT, "-t", "-j", "2", *names, timeout=120)
    assert one.returncode == two.returncode == 0, one.stderr
    assert one.stdout == two.stdout and one.stdout.count("TAP version 13") == 1 and "1..6" in one.stdout


def test_unittests_submits_multi_vcpu_tests_first_and_prints_in_catalogue_order(monkeypatch):
    import io

    from harness import unittests

    submitted = []

    def fake_run_jobs(fn, items, jobs, finished, failed, preload=()):
        submitted.extend(e.name for e, _ in items)
        for k in reversed(range(len(items))):                  # finish in any order
            finished(k, unittests.TestResult(items[k][0].name, "PASS", detail="(1 tests)"))
    monkeypatch.setattr(parallel, "run_jobs", fake_run_jobs)
    out = io.StringIO()
    names = ("selftest-vectors-kernel", "selftest-smp", "timer", "gicv2-ipi")
    res = unittests.run_suite(KUT, unittests.Options(tests=names), jobs=2, out=out, maxsmp=2)
    assert submitted == ["selftest-smp", "gicv2-ipi", "selftest-vectors-kernel", "timer"]
    assert [r.name for r in res] == [line.split()[1] for line in out.getvalue().splitlines()] == \
        ["selftest-vectors-kernel", "selftest-smp", "gicv2-ipi", "timer"]
