"""harness/catalogue.py (kvm-unit-tests' unittests.cfg format) and the `smmu-harness unittests` runner on this
project's own guests: parsing as the bash scripts parse, skips, verdicts, lines, exit statuses."""
from __future__ import annotations

import io

import pytest
from guestbin import ROOT, assert_no_traceback, run_cli

from harness.catalogue import CatalogueError, disabled, expand_smp, parse_catalogue
from harness.cli import main
from harness.unittests import (COLOURS, Options, TestResult, format_line, machine_config, qemu_command,
                               run_suite, run_test, skip_reason)

TESTS = ROOT / "guest_fw" / "tests"


def _cfg(tmp_path, text: str):
    p = tmp_path / "unittests.cfg"
    p.write_text(text)
    return p


@pytest.mark.parametrize("smp, maxsmp, cpus", [("2", 4, 2), ("$MAX_SMP", 4, 4), ("${MAX_SMP}", 3, 3),
                                               ("$((($MAX_SMP < 8)?$MAX_SMP:8))", 2, 2),
                                               ("$((($MAX_SMP < 8)?$MAX_SMP:8))", 12, 8),
                                               ("$((($MAX_SMP < 3)?$MAX_SMP:3))", 16, 3),
                                               ("$(( 2 * (1 + 2) - 10 % 4 ))", 1, 4), ("$((!0 && 5 >= 5))", 1, 1)])
def test_smp_expands_as_bash(smp, maxsmp, cpus):
    assert expand_smp(smp, maxsmp) == cpus


@pytest.mark.parametrize("bad", ["$((1 +))", "$(( 1 / 0 ))", "two", "$(( x ))"])
def test_smp_that_bash_would_not_expand_is_an_error(bad, tmp_path):
    with pytest.raises(CatalogueError, match="smp"):
        parse_catalogue(_cfg(tmp_path, f"[t]\nfile = t.flat\nsmp = {bad}\n"))


def test_kvm_unit_tests_keys_quotes_and_triple_quoted_params(tmp_path):
    p = _cfg(tmp_path, "# comment\n[a]\nfile = a.flat\nsmp = 2\ntest_args = 'setup smp=2 mem=256'\n"
                       "qemu_params = -m 256 -machine gic-version=3  # inline comment\nkvmtool_params = --mem 256\n"
                       "groups = selftest nodefault\narch = arm64\naccel = tcg\ntimeout = 10s\n"
                       "disabled_if = [[ \"$TARGET\" != qemu ]]\n\n[b]\nfile = b.flat\nqemu_params = \"\"\"-m 64\n"
                       "  -machine virtualization=on\"\"\"\ntest_args = \"cycle-counter 0\"\n")
    a, b = parse_catalogue(p)
    assert (a.cpus, a.test_args, a.qemu_params, a.groups, a.arch, a.accel, a.timeout, a.disabled_if) == \
           (2, "setup smp=2 mem=256", ("-m", "256", "-machine", "gic-version=3"), ("selftest", "nodefault"),
            "arm64", "tcg", 10.0, '[[ "$TARGET" != qemu ]]')
    assert not a.is_source and a.source == tmp_path / "a.flat"
    assert (b.qemu_params, b.test_args, b.timeout, b.cpus) == (("-m", "64", "-machine", "virtualization=on"),
                                                               "cycle-counter 0", 90.0, 1)
    assert (machine_config(a).ram_mib, machine_config(a).gic_version) == (256, 3)
    assert (machine_config(b).ram_mib, machine_config(b).start_el) == (64, 2)
    assert qemu_command(a)[-6:] == ["-append", "setup smp=2 mem=256", "-m", "256", "-machine", "gic-version=3"]


@pytest.mark.parametrize("text, msg", [("[t]\nfile = t.flat\nqemu_params = \"\"\"-m 64\n", "unterminated"),
                                       ("file = t.flat\n", "before the first"), ("[t]\nfile t.flat\n", "not a"),
                                       ("[t]\nfile = a.flat\n[t]\nfile = b.flat\n", "twice"),
                                       ("[t]\nfile = a.flat\ntest_args = 'open\n", "test_args")])
def test_catalogue_errors_name_the_line(tmp_path, text, msg):
    with pytest.raises(CatalogueError, match=msg):
        parse_catalogue(_cfg(tmp_path, text))


@pytest.mark.parametrize("cond, env, result", [
    ('[[ "$TARGET" != qemu ]]', {"TARGET": "qemu"}, False), ('[[ "$TARGET" != qemu ]]', {"TARGET": "kvmtool"}, True),
    ('[[ "$TARGET" != qemu ]] && [[ "$CONFIG_EFI" = y ]]', {"TARGET": "kvmtool", "CONFIG_EFI": ""}, False),
    ('[[ "$TARGET" == qemu ]] || [[ "$CONFIG_EFI" = y ]]', {"TARGET": "x", "CONFIG_EFI": "y"}, True)])
def test_disabled_if(cond, env, result):
    assert disabled(cond, env) is result


def test_disabled_if_not_understood_is_a_skip_saying_so(tmp_path):
    (tmp_path / "t.flat").write_bytes(b"\0" * 16)
    e, = parse_catalogue(_cfg(tmp_path, "[t]\nfile = t.flat\ndisabled_if = test -f /etc/passwd\n"))
    assert "only [[ a == b ]]" in skip_reason(e, Options())


@pytest.mark.parametrize("body, reason", [
    ("groups = nodefault", "test marked as manual run only"), ("arch = arm", "arm only"),
    ("accel = kvm", "kvm only, but ACCEL=tcg"), ("machine = sbsa", "sbsa only"),
    ("disabled_if = [[ \"$TARGET\" == qemu ]]", 'disabled because: [[ "$TARGET" == qemu ]]'),
    ("check = /nonexistent/x=1", "/nonexistent/x not equal to 1"),
    ("qemu_params = -icount 0", "not modelled: -icount 0"), ("groups = its migration", "migration is not modelled")])
def test_skips_as_run_tests_sh(tmp_path, body, reason):
    (tmp_path / "t.flat").write_bytes(b"\0" * 16)
    e, = parse_catalogue(_cfg(tmp_path, f"[t]\nfile = t.flat\n{body}\n"))
    r = run_test(e)
    assert (r.verdict, r.status) == ("SKIP", None) and r.reason.startswith(reason)
    assert format_line(r) == f"SKIP t ({r.reason})"


def test_missing_image_is_skipped_like_run_tests_sh(tmp_path):
    e, = parse_catalogue(_cfg(tmp_path, "[t]\nfile = gone.flat\n"))
    assert run_test(e).reason == f"Test file '{tmp_path / 'gone.flat'}' not found"


def test_colours_only_when_asked():
    r = TestResult("t", "PASS", "(1 tests)")
    assert format_line(r) == "PASS t (1 tests)"
    assert format_line(r, colour=True) == f"{COLOURS['PASS']}PASS\033[0m t (1 tests)"
    out = io.StringIO()                      # not a terminal: no colours
    assert out.isatty() is False


def _own(tmp_path, *names_and_bodies):
    text = "".join(f"[{n}]\nfile = {TESTS / f}\n{extra}\n" for n, f, extra in names_and_bodies)
    return _cfg(tmp_path, text)


def test_own_guests_pass_on_their_expected_status(tmp_path):
    cfg = _own(tmp_path, ("hello", "hello.c", ""), ("fails", "report_fail.c", ""),
               ("fails_expected", "report_fail.c", "exit = 1"), ("dies", "undef.c", "exit = 132"))
    out = io.StringIO()
    res = run_suite(cfg, out=out)
    assert [r.verdict for r in res] == ["PASS", "FAIL", "PASS", "PASS"]
    assert res[1].reason.startswith("exit status 1, expected 0")
    assert out.getvalue().splitlines()[0] == "PASS hello (5 tests, 0 unexpected failures, 0 skipped)"


def test_cli_exit_statuses(tmp_path):
    cfg = _own(tmp_path, ("hello", "hello.c", ""), ("fails", "report_fail.c", ""))
    assert main(["unittests", str(cfg), "hello"]) == 0
    assert main(["unittests", str(cfg)]) == 1
    assert main(["unittests", str(cfg), "nosuch"]) == 125
    assert main(["unittests", str(cfg), "-j", "0"]) == 125
    assert main(["unittests", str(tmp_path / "none.cfg")]) == 125
    bad = tmp_path / "bad.cfg"
    bad.write_text("[x]\nfle = a.c\n")
    assert main(["unittests", str(bad)]) == 125


def test_cli_lists_and_defaults_to_this_projects_catalogue(tmp_path):
    p = run_cli("unittests", "-l", "-g", "runtime", cwd=tmp_path)
    assert_no_traceback(p)
    assert p.returncode == 0 and p.stdout.split()[:3] == ["hello", "report_fail", "exit7"]
    bad = run_cli("unittests", "--max-smp", "0")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1


def test_cli_parallel_output_is_the_serial_output(tmp_path):
    cfg = _own(tmp_path, ("a", "hello.c", ""), ("b", "exit7.S", "exit = 7"), ("c", "smp.c", "smp = 2"),
               ("d", "report_fail.c", ""))
    one, two = run_cli("unittests", cfg, "-j", "1", timeout=120), run_cli("unittests", cfg, "-j", "2", timeout=120)
    assert one.returncode == two.returncode == 1
    assert one.stdout == two.stdout and one.stdout.splitlines()[1] == "PASS b "


def test_environment_is_arm_runs_for_tcg():
    import os
    from harness.unittests import environment
    lines = environment().decode().splitlines()
    env = dict(x.split("=", 1) for x in lines)
    assert lines[0] == "TARGET=qemu" and lines[-1] == "ERRATA_FORCE=y" and env["QEMU_ACCEL"] == "tcg"
    assert env["KERNEL_VERSION_STRING"] == os.uname().release and env["KERNEL_VERSION"].isdigit()
    assert env["QEMU_VERSION_STRING"] == ""                     # not a QEMU binary
