"""kvm-unit-tests (the shipped arm64 images of commit 1da1819e, tests/fixtures/) through `smmu-harness
unittests`' runner: every test of its arm/unittests.cfg gets the verdict qemu-system-aarch64 7.2 gives it.

QEMU_72 is what `ACCEL=tcg ./run_tests.sh -j 1` printed with Debian's qemu-system-aarch64 7.2.22 on a 2-CPU
machine (MAX_SMP=2). A test that cannot get QEMU's verdict yet because the feature it exercises is not on the
board is xfail(strict=True) with that feature as the reason: the day it passes, the mark must go. A test QEMU
fails must fail here the same way: having run to its SUMMARY (a report failure), not by dying, unless OURS
names the verdict this board gives instead (a QEMU bug this board does not have).

Where QEMU is installed, a few tests also run under the real arm/run command and the verdicts are compared.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

from harness.catalogue import parse_catalogue
from harness.exits import EXIT_BUDGET
from harness.unittests import Options, format_line, run_qemu, run_suite, run_test

KUT = Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e"
CFG = KUT / "arm" / "unittests.cfg"
MAX_SMP = 2                       # the machine QEMU_72 was measured on
QEMU = shutil.which("qemu-system-aarch64")

QEMU_72 = {name: "PASS" for name in (
    "selftest-setup selftest-vectors-kernel selftest-vectors-user selftest-smp pci-test pmu-cycle-counter "
    "pmu-event-counter-config pmu-sw-incr gicv2-ipi gicv3-ipi gicv2-active gicv3-active its-introspection psci "
    "timer cache debug-bp debug-wp debug-sstep mte-sync mte-async mte-asymm").split()}
QEMU_72.update({name: "FAIL" for name in "pmu-event-introspection gicv2-mmio gicv2-mmio-up gicv2-mmio-3p".split()})
# every other test of the catalogue: SKIP (manual, migration, or what QEMU 7.2 TCG lacks)

# Where this board gives another verdict than QEMU 7.2, and why (README's kvm-unit-tests table). QEMU 7.2's
# GICv2 neither masks the ITARGETSR bits of CPUs that do not exist nor keeps byte writes; devmodel/gic does
# both (IHI 0048B 4.3.12). With one CPU both are RAZ/WI (the same section), so gicv2-mmio-up fails on both.
OURS = {"gicv2-mmio": "PASS", "gicv2-mmio-3p": "PASS"}
NOT_YET: dict[str, str] = {}          # every test gets QEMU 7.2's verdict now


@functools.cache
def entries():
    return {e.name: e for e in parse_catalogue(CFG, MAX_SMP)}


def _params():
    out = []
    for name in entries():
        marks = [pytest.mark.xfail(strict=True, reason=NOT_YET[name])] if name in NOT_YET else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def test_fixture_is_the_whole_suite():
    names = list(entries())
    assert len(names) == 42 and set(QEMU_72) <= set(names) and set(NOT_YET) <= set(names)
    assert all(e.source.is_file() for e in entries().values())


# The catalogue's wall-clock timeouts are arm/run's, for an idle machine; the suite shares its cores with other
# jobs (timer, 10 s, needs 2.5 s of CPU here), so the verdict checks give every test at least this many seconds.
LOADED_TIMEOUT = 60


@functools.cache
def ours(name: str):
    """The runner's result for a test (once per worker process: the cross-check reuses it)."""
    entry = entries()[name]
    return run_test(entry, Options(timeout=max(entry.timeout or 0, LOADED_TIMEOUT)))


@pytest.mark.parametrize("name", _params())
def test_verdict_as_qemu_7_2(name):
    r = ours(name)
    want = OURS.get(name, QEMU_72.get(name, "SKIP"))
    assert r.verdict == want, format_line(r) + "\n" + r.message + "\n" + r.output[-2000:]
    if want == "FAIL":             # QEMU's failures are report failures: the test ran to its summary
        assert r.status == 3 and "unexpected failures" in r.detail, format_line(r)
    if want == "PASS":
        assert r.status == 0 and r.detail.startswith("(") and "unexpected" not in r.detail


def test_runner_lines_and_ordering_with_two_workers(capsys):
    """run_tests.sh's lines, in catalogue order whatever finishes first; pre-run skips with their reason."""
    import io
    names = ("selftest-smp", "micro-bench", "pmu-chained-counters", "its-migration", "pmu-event-introspection",
             "mte-sync")
    one, two = io.StringIO(), io.StringIO()
    r1 = run_suite(CFG, Options(tests=names), jobs=1, out=one, maxsmp=MAX_SMP)
    r2 = run_suite(CFG, Options(tests=names), jobs=2, out=two, maxsmp=MAX_SMP)
    assert one.getvalue() == two.getvalue()
    assert [r.verdict for r in r1] == [r.verdict for r in r2] == ["PASS", "FAIL", "SKIP", "SKIP", "SKIP", "PASS"]
    assert one.getvalue().splitlines() == [                      # catalogue order, not the order asked
        "PASS selftest-smp (1 tests)", "FAIL pmu-event-introspection (1 tests, 1 unexpected failures)",
        "SKIP pmu-chained-counters (1 tests, 1 skipped)",
        "SKIP its-migration (migration is not modelled (QEMU's migration harness))",
        "SKIP micro-bench (test marked as manual run only)", "PASS mte-sync (2 tests)"]


def test_tap13_output():
    import io
    out = io.StringIO()
    run_suite(CFG, Options(tests=("pmu-event-introspection", "micro-bench", "pmu-chained-counters", "cache")),
              tap=True, out=out, maxsmp=MAX_SMP)
    lines = out.getvalue().splitlines()
    assert lines[0] == "TAP version 13" and lines[-1] == "1..3"
    assert lines[1:-1] == [                                        # the guests' lines, as under QEMU 7.2
        "not ok 1 - pmu-event-introspection: pmu: pmu-event-introspection: Check required events are implemented",
        "ok 2 - pmu-chained-counters: pmu: pmu-chained-counters: 32-bit overflows: Skip test as event 0x1e is not"
        " supported # skip",
        "ok 3 - cache: IDC-DIC: code generation"]


def test_group_selects_nodefault_tests_and_timeouts_are_failures():
    e = entries()["micro-bench"]
    assert run_test(e).reason == "test marked as manual run only"
    # -g runs nodefault tests; micro-bench is accel = kvm: skipped for that instead
    assert run_test(e, Options(group="micro-bench")).reason == "kvm only, but ACCEL=tcg"
    r = run_test(entries()["selftest-smp"], Options(timeout=0.01))
    assert (r.verdict, r.status, r.reason) == ("FAIL", EXIT_BUDGET, "timeout; duration=90s")


CROSS_CHECK = ("selftest-setup", "psci", "pmu-event-introspection", "pmu-chained-counters", "gicv2-mmio-up",
               "pci-test", "pmu-cycle-counter", "pmu-sw-incr", "mte-sync", "mte-async", "mte-asymm")


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
@pytest.mark.parametrize("name", CROSS_CHECK)
def test_same_verdict_and_summary_as_qemu_here(name):
    entry = entries()[name]
    q, r = run_qemu(entry, QEMU), ours(name)
    assert (r.verdict, r.detail, r.status) == (q.verdict, q.detail, q.status), format_line(q) + " / " + format_line(r)
    assert r.verdict == QEMU_72.get(name, "SKIP")


@pytest.mark.parametrize("args, status", [
    (["pmu.flat", "--append", "pmu-event-introspection"], 3),                        # FAIL: exit(1) -> 3
    (["pmu.flat", "--append", "pmu-event-introspection", "--no-chr-testdev"], 3),    # the EXIT: STATUS=3 line
    (["pmu.flat", "--append", "pmu-chained-counters"], 77),                          # every test skipped
    (["selftest.flat", "--append", "setup smp=2 mem=256", "-smp", "2", "-m", "256"], 0)])
def test_run_gives_arm_runs_status(args, status, capsys):
    from harness.cli import main
    assert main(["run", str(KUT / "arm" / args[0]), *args[1:]]) == status
    assert f"EXIT: STATUS={status if status else 1}" in capsys.readouterr().out


def test_run_with_the_environment_as_initrd_runs_errata_guarded_tests(tmp_path, capsys):
    """psci's cpu-on test runs only with ERRATA_FORCE=y, which arm/run's -initrd environment gives TCG runs."""
    from harness.cli import main
    from harness.unittests import environment
    env = tmp_path / "env"
    env.write_bytes(environment())
    psci = str(KUT / "arm" / "psci.flat")
    assert main(["run", psci, "-smp", "2", "--initrd", str(env)]) == 0
    assert "PASS: psci: cpu-on" in capsys.readouterr().out
    assert main(["run", psci, "-smp", "2"]) == 0
    assert "SKIP: psci: Skipping unsafe cpu-on test" in capsys.readouterr().out


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_pci_test_lists_the_bus_and_runs_the_testdev_as_qemu_does():
    """pci-test's output under arm/run's QEMU command line, line for line: the device listing (IDs, class,
    the BARs it assigned: 32-bit memory at 0x10000000, I/O at 0x3eff0000) and the six testdev tests."""
    def body(out: str) -> list[str]:
        return [ln for ln in out.splitlines() if ln.startswith(("00.", "\tBAR", "pci-testdev", "PASS"))]

    q, r = run_qemu(entries()["pci-test"], QEMU), ours("pci-test")
    assert body(r.output) == body(q.output) and len(body(q.output)) == 11, r.output
