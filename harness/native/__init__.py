"""Native helpers: C sources shipped in this package, compiled at first use, loaded with ctypes.

`tlbi_trap.c` is the native half of the TLBI trap (harness/trap.py): a Unicorn SYS hook and DSB code hooks in
C that record TLBIs and the DSBs after them into a per-vCPU buffer, which Python delivers in a batch at the
next observation point (harness/observe.py). It is built with the system C compiler (`cc`, else `gcc` or
`clang`) against the headers the unicorn wheel ships (`unicorn/include`), into `native/` of the harness's
cache directory (`harness.build.cache_dir`: `$SMMU_HARNESS_CACHE`, a checkout's `.guest-cache/`, else
`$XDG_CACHE_HOME/smmu-harness`), under a name that hashes the source, the headers, the compiler and the flags;
the write goes to a temporary name and is renamed, so parallel processes (pytest-xdist) are safe. The library
takes Unicorn's entry points from the library the Python binding loaded (`tt_init`), so it never links
against a second copy of libunicorn.

`console.c` (the native console path, harness/console.py) is built and loaded the same way by
`harness.native.console` (`library()`, `status()`).

Without a compiler, without the headers, or when the build fails, `tlbi_trap()` answers None and `status()`
says why: the pure-Python trap runs and gives the same traces. `SMMU_HARNESS_NATIVE=0` forces the Python path
(`enabled()` is False); any other value, or none, lets the native one run where it can.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from collections.abc import Callable
from types import ModuleType

__all__ = ["ENV", "enabled", "tlbi_trap", "status", "TtCpu", "TtRecord", "CALLBACK", "TT_ABI", "TT_PASS",
           "TT_NATIVE", "TT_EMULATED", "TT_UNDEFINED", "TT_REC_TLBI", "TT_REC_DSB", "TT_WHY_FULL",
           "TT_WHY_UNDEFINED", "TT_DSB_SYNCS", "TT_ENCODINGS", "RECORD_SIZE"]

ENV = "SMMU_HARNESS_NATIVE"
SOURCE = Path(__file__).resolve().parent / "tlbi_trap.c"
CFLAGS = ("-O2", "-shared", "-fPIC", "-std=gnu11", "-Wall", "-Wextra", "-Werror")

# the constants of tlbi_trap.c
TT_ABI = 3
TT_PASS, TT_NATIVE, TT_EMULATED, TT_UNDEFINED = 0, 1, 2, 3
TT_REC_TLBI, TT_REC_DSB = 1, 2
TT_WHY_FULL, TT_WHY_UNDEFINED = 1, 2
TT_DSB_SYNCS = 0x100
TT_ENCODINGS = 2048
TT_CX_SEQ, TT_CX_MSGS, TT_CX_TS, TT_CX_PENDING, TT_CX_TRAPS, TT_CX_OUT, TT_CX_WHY, TT_CX_VM, TT_CX_PLAN = range(9)
TT_CX_STATE = 9                    # int64s of tt_cx_run's state
TT_CX_DONE, TT_CX_UNKNOWN, TT_CX_PYTHON, TT_CX_FULL = 0, 1, 2, 3
TT_PLAN_TLBI, TT_PLAN_SETS, TT_PLAN_CLEARS, TT_PLAN_PYTHON = 1, 2, 4, 8


class TtRecord(ctypes.Structure):
    _fields_ = (("pc", ctypes.c_uint64), ("xt", ctypes.c_uint64), ("info", ctypes.c_uint64))


RECORD_SIZE = ctypes.sizeof(TtRecord)


class TtCpu(ctypes.Structure):
    """tlbi_trap.c's `tt_cpu` (checked against `tt_sizeof()` at load)."""
    _fields_ = (("n", ctypes.c_uint32), ("cap", ctypes.c_uint32), ("pending", ctypes.c_uint32),
                ("why", ctypes.c_uint32), ("undefined", TtRecord), ("buf", ctypes.c_void_p), ("uc", ctypes.c_void_p),
                ("callback", ctypes.c_void_p), ("sys_hook", ctypes.c_size_t), ("sites", ctypes.c_void_p),
                ("cls", (ctypes.c_uint8 * TT_ENCODINGS) * 4), ("range_addr", ctypes.c_void_p),
                ("range_info", ctypes.c_void_p), ("range_n", ctypes.c_uint32), ("range_cap", ctypes.c_uint32),
                ("range_hook", ctypes.c_size_t), ("ranged", ctypes.c_uint32), ("pad", ctypes.c_uint32))


#: the callback type of `tt_new`: (cpu, why) -> the SYS hook's return value for TT_WHY_UNDEFINED
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.POINTER(TtCpu), ctypes.c_uint32)

_lib: ctypes.CDLL | None = None
_status: str | None = None


def enabled() -> bool:
    """May the native path run (`SMMU_HARNESS_NATIVE` is not 0)?"""
    return os.environ.get(ENV, "").strip() != "0"


def status() -> str:
    """What `tlbi_trap()` found: "loaded PATH", or why the Python path runs."""
    return status_of(sys.modules[__name__], SOURCE, _load)


def _compiler() -> str | None:
    import shutil                                  # here, not at import: start-up of `run` (hashlib too)

    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _unicorn_include() -> Path | None:
    try:
        import unicorn
    except ImportError:                            # pragma: no cover - unicorn is a dependency
        return None
    inc = Path(unicorn.__file__).resolve().parent / "include"
    return inc if (inc / "unicorn" / "unicorn.h").is_file() else None


def _library_path(cc: str, inc: Path, source: Path = SOURCE) -> Path:
    from ..locations import cache_dir               # not ..build (start-up of `run`)

    h = _sha256()
    for part in (source.read_bytes(), cc.encode(), " ".join(CFLAGS).encode(), _machine().encode(),
                 sys.platform.encode()):
        h.update(part + b"\0")
    h.update(_headers_digest(inc))
    return cache_dir() / "native" / f"{source.stem}-{h.hexdigest()[:16]}.so"


@functools.lru_cache(maxsize=None)
def _headers_digest(inc: Path) -> bytes:
    """The unicorn headers' names, sizes and modification times, hashed once per process (every native
    library's name uses it). Their stat, not their bytes: reading the ~30 headers cost ~0.9 ms of each run's
    start-up, and a reinstalled or edited header gets a new mtime, so it still names a new library."""
    h = _sha256()
    with os.scandir(inc / "unicorn") as it:
        for e in sorted((e for e in it if e.name.endswith(".h")), key=lambda e: e.name):
            st = e.stat()
            h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.digest()


def _sha256():
    """A SHA-256 hash object without importing `hashlib`, whose OpenSSL backend costs 2 ms of every run's
    start-up: CPython's built-in `_sha256` (the same digest) where there is one (3.11), else hashlib's."""
    try:
        from _sha256 import sha256
    except ImportError:                            # pragma: no cover - Python 3.12 names it _sha2
        from hashlib import sha256
    return sha256()


def _machine() -> str:
    """`platform.machine()` without importing `platform` (1 ms of start-up): on POSIX it is `os.uname().machine`
    (the `platform` module's own source of it)."""
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform                                # pragma: no cover - no os.uname (Windows)
    return platform.machine()


def _build(cc: str, inc: Path, out: Path, source: Path = SOURCE) -> str | None:
    """Compile `source` (default `tlbi_trap.c`) to `out` (atomically); None, or why it failed."""
    import subprocess
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".so")
        os.close(fd)
    except OSError as e:
        return f"cache directory {out.parent}: {e.strerror or e}"
    try:
        r = subprocess.run([cc, *CFLAGS, "-I", str(inc), str(source), "-o", tmp], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            first = (r.stderr or r.stdout).strip().splitlines()
            return f"{cc} failed (exit {r.returncode}): {first[0] if first else ''}"
        os.replace(tmp, out)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run {cc}: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_library(source: Path, load: Callable[[ctypes.CDLL, Path], ctypes.CDLL | str]
                 ) -> tuple[ctypes.CDLL | None, str]:
    """Build `source` into the cache if it is not there, open it and let `load` check its ABI and declare its
    functions: (the library, "loaded PATH"), or (None, why the Python path runs). Every native helper's loader."""
    cc, inc = _compiler(), _unicorn_include()
    if cc is None:
        return None, "no C compiler (cc, gcc, clang) on PATH"
    if inc is None:
        return None, "the unicorn package has no C headers (unicorn/include)"
    path = _library_path(cc, inc, source)
    if not path.is_file():
        why = _build(cc, inc, path, source)
        if why is not None:
            return None, why
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"cannot load {path}: {e}"
    got = load(lib, path)
    return (None, got) if isinstance(got, str) else (got, f"loaded {path}")


def unicorn_entry_points(*names: str) -> list[int | None]:
    """The addresses of these functions in the libunicorn the Python binding loaded (a helper's `*_init`)."""
    from unicorn.unicorn_py3.unicorn import uclib

    return [ctypes.cast(getattr(uclib, f), ctypes.c_void_p).value for f in names]


def handshake(lib: ctypes.CDLL, path: Path, prefix: str, expected: dict[str, int], entry_points: tuple[str, ...]
              ) -> str | None:
    """The first step of every helper's `load`: each `<prefix>_<name>()` of `expected` (the ABI number, the
    sizes of the structures Python shares with it) returns the value Python expects, then `<prefix>_init`
    accepts the addresses of `entry_points` in the loaded libunicorn. None if both hold, else why not (one
    line naming the file)."""
    checks = [getattr(lib, f"{prefix}_{name}") for name in expected]
    init = getattr(lib, f"{prefix}_init")
    for f in (*checks, init):
        f.restype = ctypes.c_int
    got, want = tuple(f() for f in checks), tuple(expected.values())
    if got != want:
        return f"{path}: {'/'.join(expected)} {got}, expected {want}"
    init.argtypes = (ctypes.c_void_p,) * len(entry_points)
    if init(*unicorn_entry_points(*entry_points)) != 0:
        return f"{path}: {prefix}_init refused Unicorn's entry points"
    return None


def _load(lib: ctypes.CDLL, path: Path) -> ctypes.CDLL | str:
    why = handshake(lib, path, "tt", {"abi": TT_ABI, "sizeof": ctypes.sizeof(TtCpu)},
                    ("uc_reg_read", "uc_reg_write", "uc_ctl", "uc_hook_add", "uc_hook_del"))
    if why is not None:
        return why
    lib.tt_new.restype = ctypes.POINTER(TtCpu)
    lib.tt_new.argtypes = (ctypes.c_void_p, ctypes.c_uint32, CALLBACK)
    lib.tt_add_dsb.restype = ctypes.c_int
    lib.tt_add_dsb.argtypes = (ctypes.POINTER(TtCpu), ctypes.c_uint64, ctypes.c_uint32)
    lib.tt_ranged.restype = ctypes.c_int
    lib.tt_ranged.argtypes = (ctypes.POINTER(TtCpu), ctypes.c_int)
    lib.tt_free.restype = None
    lib.tt_free.argtypes = (ctypes.c_void_p,)
    lib.tt_render.restype = ctypes.c_long                 # trace lines from compact records (trace/sinks.py)
    lib.tt_render.argtypes = (ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p)
    lib.tt_cx_new.restype = ctypes.c_void_p              # compact records from trap records (harness/trap.py)
    lib.tt_cx_new.argtypes = (ctypes.c_uint32,)
    lib.tt_cx_free.restype = lib.tt_cx_clear.restype = None
    lib.tt_cx_free.argtypes = lib.tt_cx_clear.argtypes = (ctypes.c_void_p,)
    lib.tt_cx_add.restype = ctypes.c_long
    lib.tt_cx_add.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)
    lib.tt_cx_run.restype = ctypes.c_long
    lib.tt_cx_run.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_long)
    lib.tt_cx_tally.restype = ctypes.c_long
    lib.tt_cx_tally.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                ctypes.c_uint64, ctypes.c_uint64)
    lib.tt_cx_counts.restype = ctypes.c_long
    lib.tt_cx_counts.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)
    return lib


def load_once(module: ModuleType, source: Path, load: Callable[[ctypes.CDLL, Path], ctypes.CDLL | str]
              ) -> ctypes.CDLL | None:
    """The library of the helper `module` (this package, `console`, `sysreg`): `open_library(source, load)` on
    first use, its answer kept in the module's `_lib` and `_status` (a failure is not retried in the process);
    None when disabled. Every helper's `library()`."""
    if not enabled():
        return None
    if module._lib is None and module._status is None:
        module._lib, module._status = open_library(source, load)
    return module._lib


def status_of(module: ModuleType, source: Path, load: Callable[[ctypes.CDLL, Path], ctypes.CDLL | str]) -> str:
    """What `load_once` found for `module`: "loaded PATH", or why the Python path runs. Every helper's `status()`."""
    if not enabled():
        return f"disabled ({ENV}=0)"
    load_once(module, source, load)
    return module._status or "not loaded"


def tlbi_trap() -> ctypes.CDLL | None:
    """The loaded `tlbi_trap.c` library (built on first use), or None (`status()` says why)."""
    return load_once(sys.modules[__name__], SOURCE, _load)
