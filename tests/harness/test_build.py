"""Guest builds (harness/build.py): default ziglang toolchain, cache by content, overrides, errors."""
import shutil
import sys

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
    assert p.returncode == 1 and "no such source file" in p.stderr and "Traceback" not in p.stderr
