"""`sysreg.c`, the native MRS prefilter of a vCPU (harness/sysregs.py installs it): built, cached and loaded
like `tlbi_trap.c` (harness/native/__init__.py: same compiler, headers, cache directory and rules;
`SMMU_HARNESS_NATIVE=0` disables it). `library()` is the loaded library or None (`status()` says why): then
the Python MRS hook runs, with the same values and traces.

`SrClock` and `SrCpu` mirror the C structs (checked against `sr_sizeof_*()` at load), `index(enc)` is the
bit of an encoding in `SrCpu.python`.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from . import handshake, load_once, status_of

__all__ = ["SrClock", "SrCpu", "SrCpReg", "CALLBACK", "FAST_PCT", "FAST_VCT", "index", "library", "status"]

SOURCE = Path(__file__).resolve().parent / "sysreg.c"
SR_ABI = 2
FAST_PCT, FAST_VCT = 1, 2              # SrCpu.fast: CNTPCT_EL0 / CNTVCT_EL0 at EL1 served in C
ENCODINGS = 32768


class SrClock(ctypes.Structure):
    """sysreg.c's `sr_clock`: the machine's virtual clock while lent to the C hook (harness/clock.py)."""
    _fields_ = (("now", ctypes.c_uint64), ("cap", ctypes.c_uint64), ("samples", ctypes.c_uint64),
                ("k", ctypes.c_uint32), ("lent", ctypes.c_uint32), ("stopped", ctypes.c_uint32),
                ("pad", ctypes.c_uint32))


class SrCpu(ctypes.Structure):
    """sysreg.c's `sr_cpu`."""
    _fields_ = (("clock", ctypes.c_void_p), ("uc", ctypes.c_void_p), ("callback", ctypes.c_void_p),
                ("hook", ctypes.c_size_t), ("cntvoff", ctypes.c_uint64), ("served", ctypes.c_uint64),
                ("fast", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("python", ctypes.c_uint8 * (ENCODINGS // 8)))


class SrCpReg(ctypes.Structure):
    """Unicorn's `uc_arm64_cp_reg` (unicorn/arm64.h)."""
    _fields_ = (("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64))


#: `sr_new`'s callback: (cpu, Xt register id, the access) -> the MRS hook's return value
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.POINTER(SrCpu), ctypes.c_int, ctypes.POINTER(SrCpReg))

_lib: ctypes.CDLL | None = None
_status: str | None = None


def index(enc: tuple[int, int, int, int, int]) -> int:
    """The bit of (op0, op1, CRn, CRm, op2) in `SrCpu.python` (op0 is 2 or 3)."""
    op0, op1, crn, crm, op2 = enc
    return (op0 & 1) << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


def status() -> str:
    """"loaded PATH", or why the Python MRS hook runs."""
    return status_of(sys.modules[__name__], SOURCE, _load)


def _load(lib: ctypes.CDLL, path: Path) -> ctypes.CDLL | str:
    why = handshake(lib, path, "sr", {"abi": SR_ABI, "sizeof_clock": ctypes.sizeof(SrClock),
                                      "sizeof_cpu": ctypes.sizeof(SrCpu)},
                    ("uc_reg_read", "uc_reg_write", "uc_hook_add", "uc_emu_stop"))
    if why is not None:
        return why
    lib.sr_new.restype = ctypes.POINTER(SrCpu)
    lib.sr_new.argtypes = (ctypes.c_void_p, ctypes.POINTER(SrClock), CALLBACK)
    lib.sr_free.restype = None
    lib.sr_free.argtypes = (ctypes.c_void_p,)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded `sysreg.c` library (built on first use), or None (`status()` says why)."""
    return load_once(sys.modules[__name__], SOURCE, _load)
