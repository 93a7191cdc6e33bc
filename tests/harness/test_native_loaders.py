"""Every native helper (tlbi_trap.c, console.c, sysreg.c) is loaded through harness.native's one cache
(`load_once`/`status_of`): opened once per process, a failure kept and not retried, the same answer when
disabled. No library is built here (`open_library` is replaced)."""
from __future__ import annotations

import ctypes

import pytest

from harness import native
from harness.native import console, sysreg

HELPERS = [(native, native.tlbi_trap), (console, console.library), (sysreg, sysreg.library)]


@pytest.mark.parametrize("module, library", HELPERS, ids=["tlbi_trap", "console", "sysreg"])
def test_a_helper_is_opened_once_and_its_failure_kept(module, library, monkeypatch):
    opened = []

    def refuse(source, load):
        opened.append(source)
        return None, f"test: {source.name} not built"
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setattr(native, "open_library", refuse)
    monkeypatch.setattr(module, "_lib", None)
    monkeypatch.setattr(module, "_status", None)
    assert library() is None and library() is None
    assert module.status() == f"test: {module.SOURCE.name} not built"
    assert opened == [module.SOURCE]


@pytest.mark.parametrize("module, library", HELPERS, ids=["tlbi_trap", "console", "sysreg"])
def test_disabled_helpers_say_so_alike(module, library, monkeypatch):
    monkeypatch.setenv(native.ENV, "0")
    monkeypatch.setattr(native, "open_library", lambda *a: pytest.fail("opened while disabled"))
    assert library() is None and module.status() == "disabled (SMMU_HARNESS_NATIVE=0)"


def test_the_library_name_follows_the_unicorn_headers_and_the_source(tmp_path):
    """A native library's cache name changes when a Unicorn header is edited or replaced (its size or mtime)
    or when the C source changes, so a stale build is never loaded."""
    import os

    inc = tmp_path / "include"
    (inc / "unicorn").mkdir(parents=True)
    header = inc / "unicorn" / "unicorn.h"
    header.write_text("int uc;\n")
    (inc / "unicorn" / "README").write_text("not a header\n")
    src = tmp_path / "x.c"
    src.write_text("int x;\n")

    def name() -> str:
        native._headers_digest.cache_clear()
        return native._library_path("cc", inc, src).name

    first = name()
    assert first == name()
    (inc / "unicorn" / "README").write_text("still not a header\n")
    assert name() == first                                   # only headers count
    st = header.stat()
    os.utime(header, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = name()
    assert touched != first
    header.write_text("int uc; int more;\n")
    os.utime(header, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # same mtime, other size
    assert name() not in (first, touched)
    edited = name()
    src.write_text("int y;\n")
    assert name() != edited


class _Fn:
    def __init__(self, value: int):
        self.value, self.calls = value, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.value


class _Lib:
    def __init__(self, **fns: int):
        for name, value in fns.items():
            setattr(self, name, _Fn(value))


def test_every_helper_checks_its_abi_and_sizes_then_hands_over_unicorns_entry_points(tmp_path):
    """`native.handshake`, the first step of the three loaders: a wrong ABI number or structure size is refused
    with both tuples and the file's name before `init` runs; `init` gets the addresses of the named entry
    points in the loaded libunicorn, and a non-zero answer is refused."""
    path = tmp_path / "libx.so"
    lib = _Lib(x_abi=2, x_sizeof=48, x_init=0)
    assert native.handshake(lib, path, "x", {"abi": 2, "sizeof": 40}, ("uc_reg_read",)) == \
        f"{path}: abi/sizeof (2, 48), expected (2, 40)"
    assert lib.x_init.calls == []
    assert native.handshake(lib, path, "x", {"abi": 2, "sizeof": 48}, ("uc_reg_read", "uc_hook_add")) is None
    (args,) = lib.x_init.calls
    assert list(args) == native.unicorn_entry_points("uc_reg_read", "uc_hook_add") and all(args)
    assert lib.x_init.argtypes == (ctypes.c_void_p,) * 2 and lib.x_abi.restype is ctypes.c_int
    lib.x_init.value = -1
    assert native.handshake(lib, path, "x", {"abi": 2, "sizeof": 48}, ("uc_emu_stop",)) == \
        f"{path}: x_init refused Unicorn's entry points"
