"""Guest builds (harness/build.py): default ziglang toolchain, cache by content, overrides, errors."""
import shutil
import sys
from pathlib import Path

import pytest

from harness.build import (BuildError, build_guest, build_options, toolchain_from_env, LINKER_SCRIPT,
                           RUNTIME_SOURCES, TESTS_DIR)
from harness.elfload import load_elf

HELLO = TESTS_DIR / "hello.c"


def test_default_toolchain_is_pinned_ziglang():
    tc = toolchain_from_env({})
    assert tc.cc[1:4] == ("-m", "ziglang", "cc") and "-mcpu=generic+v8_4a+xs" in tc.cc
    assert tc.ld[1:] == ("-m", "ziglang", "ld.lld")


def test_overrides():
    tc = toolchain_from_env({"CROSS_COMPILE": "aarch64-linux-gnu-"})
    assert tc.cc == ("aarch64-linux-gnu-gcc",) and tc.ld == ("aarch64-linux-gnu-ld",)
    tc = toolchain_from_env({"CC": "clang", "LD": "ld.lld -v"})
    assert tc.cc == ("clang",) and tc.ld == ("ld.lld", "-v") and "--target=aarch64-none-elf" in tc.arch_flags


def test_cache_hits(tmp_path):
    cache = tmp_path / "cache"
    first = build_guest([HELLO], cache=cache)
    again = build_guest([HELLO], cache=cache)
    assert first.compiled == len(RUNTIME_SOURCES) + 1 and first.linked           # runtime + hello.c
    assert (again.compiled, again.linked, again.path) == (0, False, first.path)


def test_source_change_rebuilds_only_that_object(tmp_path):
    cache = tmp_path / "cache"
    build_guest([HELLO], cache=cache)
    src = tmp_path / "hello.c"
    src.write_text(HELLO.read_text().replace("arithmetic", "arithmetic!"))
    r = build_guest([src], cache=cache)
    assert r.compiled == 1 and r.linked
    out = tmp_path / "out" / "hello.elf"
    r2 = build_guest([src], cache=cache, output=out)
    assert r2.path == out and out.read_bytes() == r.path.read_bytes() and r2.compiled == 0


def test_cc_override_is_used(tmp_path):
    cc = f"{sys.executable} -m ziglang cc -target aarch64-freestanding"
    tc = toolchain_from_env({"CC": cc})
    assert tc.ld == (sys.executable, "-m", "ziglang", "ld.lld")
    r = build_guest([HELLO], cache=tmp_path, toolchain=tc)
    assert load_elf(r.path).entry == 0x4008_0000


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="GNU cross toolchain (Debian gcc-aarch64-linux-gnu) not installed")
def test_cross_compile_gnu(tmp_path):
    tc = toolchain_from_env({"CROSS_COMPILE": "aarch64-linux-gnu-"})
    r = build_guest([HELLO], cache=tmp_path, toolchain=tc)
    assert load_elf(r.path).entry == 0x4008_0000


def test_no_runtime_marker_and_errors(tmp_path):
    assert "no-runtime" in build_options(TESTS_DIR / "exit7.S")
    r = build_guest([TESTS_DIR / "exit7.S"], cache=tmp_path)
    assert r.compiled == 1
    with pytest.raises(BuildError, match="no such source"):
        build_guest([tmp_path / "nope.c"], cache=tmp_path)
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(BuildError, match="compiling .*bad.c failed") as e:
        build_guest([bad], cache=tmp_path)
    assert "undeclared" in str(e.value)
    assert LINKER_SCRIPT.read_text().count("0x40080000") == 1


def test_cli_build(tmp_path):
    from guestbin import run_cli
    out = tmp_path / "h.elf"
    p = run_cli("build", HELLO, "-o", out, env={"SMMU_HARNESS_CACHE": str(tmp_path / "c")})
    assert p.returncode == 0 and p.stdout.strip() == str(out) and out.is_file()
    p = run_cli("build", tmp_path / "missing.c")
    # a missing source is bad input (125, as for `run`), not a failed compile (1: see test_cli_compile_error)
    assert p.returncode == 125 and "no such source file" in p.stderr and "Traceback" not in p.stderr


def test_cli_compile_error_exits_1(tmp_path):
    from guestbin import run_cli
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    p = run_cli("build", bad, env={"SMMU_HARNESS_CACHE": str(tmp_path / "c")})
    assert p.returncode == 1 and "undeclared" in p.stderr and "Traceback" not in p.stderr


NEEDS_FOO = '#include "guest.h"\n#ifndef FOO\n#error FOO not defined\n#endif\nint main(void) { return FOO; }\n'


def test_cli_cflags_value_may_start_with_a_dash(tmp_path, capsys):
    """`--cflags "-DFOO"` (the README's form) is a value, not an unknown option; every form reaches the compiler."""
    from harness.cli import main
    src = tmp_path / "foo.c"
    src.write_text(NEEDS_FOO)
    for i, form in enumerate([["--cflags", "-DFOO=5"], ["--cflags=-DFOO=5"], ["--cflags", "-Wall -DFOO=5"],
                              ["--cflags", "-Wall", "--cflags", "-DFOO=5"]]):
        elf = tmp_path / f"foo{i}.elf"
        assert main(["build", str(src), "-o", str(elf), *form]) == 0, (form, capsys.readouterr().err)
        assert main(["run", str(elf)]) == 5, form


def test_cli_cflags_O0_links_and_runs(tmp_path, capsys):
    """Any -O level links: the runtime never needs a sanitizer runtime (zig's clang enables UBSan at -O0)."""
    from harness.cli import main
    out = tmp_path / "hello0.elf"
    assert main(["build", str(HELLO), "-o", str(out), "--cflags=-O0"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["run", str(out)]) == 0
    assert capsys.readouterr().out.endswith("SUMMARY: 5 tests, 0 unexpected failures, 0 skipped\n")


@pytest.mark.parametrize("case", ["output is a directory", "source is a directory", "output directory missing",
                                  "include directory missing", "cache unusable"])
def test_cli_build_path_errors_are_one_line_125(tmp_path, capsys, monkeypatch, case):
    from harness.cli import main
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = {"output is a directory": [HELLO, "-o", tmp_path],
            "source is a directory": [tmp_path],
            "output directory missing": [HELLO, "-o", tmp_path / "missing" / "dir" / "x.elf"],
            "include directory missing": [HELLO, "-I", tmp_path / "noinc"],
            "cache unusable": [HELLO]}[case]
    message = {"output is a directory": "is a directory", "source is a directory": "is a directory",
               "output directory missing": f"no such directory {tmp_path / 'missing' / 'dir'}",
               "include directory missing": "no such directory",
               "cache unusable": "set SMMU_HARNESS_CACHE to a writable directory"}[case]
    if case == "cache unusable":
        monkeypatch.setenv("SMMU_HARNESS_CACHE", str(blocker / "cache"))
    assert main(["build", *map(str, args)]) == 125
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "missing").exists()          # nothing created on the way


def test_cache_dir_outside_a_checkout(tmp_path, monkeypatch):
    """An installed package (no pyproject.toml next to guest_fw) caches in the user's cache directory, never
    next to the package (site-packages)."""
    from harness import build
    assert build.cache_dir({"SMMU_HARNESS_CACHE": str(tmp_path / "x")}) == tmp_path / "x"
    assert build.cache_dir({}) == build.GUEST_FW.parent / ".guest-cache"          # this checkout
    fake = tmp_path / "site-packages" / "guest_fw"
    fake.mkdir(parents=True)
    monkeypatch.setattr(build, "GUEST_FW", fake)
    assert build.cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "smmu-harness"
    assert build.cache_dir({}) == Path.home() / ".cache" / "smmu-harness"


def test_toolchain_identity_is_asked_once_per_process(tmp_path, monkeypatch):
    """A new Toolchain per build (toolchain_from_env) must not start `--version` again: two interpreter and
    zig start-ups per guest were most of a cached catalogue guest's time. Another PATH asks again."""
    import subprocess
    from harness import build
    monkeypatch.setattr(build, "_IDENTITIES", {})
    calls = []
    real = subprocess.Popen

    def counting(cmd, *a, **kw):
        calls.append(cmd)
        return real(cmd, *a, **kw)
    monkeypatch.setattr(subprocess, "Popen", counting)
    first = build_guest([HELLO], cache=tmp_path)
    assert [c[-1] for c in calls].count("--version") == 2
    again = build_guest([HELLO], cache=tmp_path)
    assert [c[-1] for c in calls].count("--version") == 2 and again.path == first.path and again.compiled == 0
    monkeypatch.setenv("PATH", str(tmp_path) + ":" + __import__("os").environ["PATH"])
    assert toolchain_from_env().identity() == toolchain_from_env().identity()
    assert [c[-1] for c in calls].count("--version") == 4
