"""Loader of `console.c`, the native console path (harness/console.py uses it).

Built, cached and loaded like `tlbi_trap.c` (harness/native/__init__.py: the same compiler, headers, flags and
cache directory, a name hashing them and the source); Unicorn's entry points come from the library the Python
binding loaded (`cn_init`). `library()` answers None when the native helpers are disabled
(`SMMU_HARNESS_NATIVE=0`) or the library cannot be built or loaded, and `status()` says why: the Python path
then runs, with the same output.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from . import handshake, load_once, status_of

__all__ = ["CnCpu", "CALLBACK", "library", "status", "CN_WHY_INTR", "CN_WHY_FULL", "CN_WHY_MMIO_READ",
           "CN_WHY_MMIO_WRITE", "CN_SRC_SEMIHOSTING", "CN_SRC_UART", "CN_SRC_SEMIHOSTING_ERR", "CN_SEMIHOSTING",
           "CN_UART_TX", "CN_UART_FR", "CN_SUSPEND"]

SOURCE = Path(__file__).resolve().parent / "console.c"

# the constants of console.c
CN_ABI = 2
CN_WHY_INTR, CN_WHY_FULL, CN_WHY_MMIO_READ, CN_WHY_MMIO_WRITE = 1, 2, 3, 4
CN_SRC_SEMIHOSTING, CN_SRC_UART, CN_SRC_SEMIHOSTING_ERR = 1, 2, 3
CN_SEMIHOSTING, CN_UART_TX, CN_UART_FR, CN_SUSPEND = 1, 2, 4, 8


class CnCpu(ctypes.Structure):
    """console.c's `cn_cpu` (checked against `cn_sizeof()` at load)."""
    _fields_ = (("n", ctypes.c_uint32), ("cap", ctypes.c_uint32), ("src", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("uart_fr", ctypes.c_uint32), ("why", ctypes.c_uint32),
                ("arg", ctypes.c_uint64 * 3), ("uart_last", ctypes.c_uint64), ("native_calls", ctypes.c_uint64),
                ("tt_out", ctypes.c_uint64 * 2),
                ("buf", ctypes.c_void_p), ("ram", ctypes.c_void_p), ("ram_base", ctypes.c_uint64),
                ("ram_size", ctypes.c_uint64), ("tlbi_n", ctypes.c_void_p), ("uc", ctypes.c_void_p),
                ("callback", ctypes.c_void_p), ("intr_hook", ctypes.c_size_t))


#: the callback type of `cn_new`: (cpu, why) -> an MMIO read's value (else ignored)
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.POINTER(CnCpu), ctypes.c_uint32)

_lib: ctypes.CDLL | None = None
_status: str | None = None


def status() -> str:
    """What `library()` found: "loaded PATH", or why the Python console path runs."""
    return status_of(sys.modules[__name__], SOURCE, _load)


def _load(lib: ctypes.CDLL, path: Path) -> ctypes.CDLL | str:
    why = handshake(lib, path, "cn", {"abi": CN_ABI, "sizeof": ctypes.sizeof(CnCpu)},
                    ("uc_reg_read", "uc_reg_write_batch", "uc_hook_add", "uc_mmio_map"))
    if why is not None:
        return why
    lib.cn_new.restype = ctypes.POINTER(CnCpu)
    lib.cn_new.argtypes = (ctypes.c_void_p, ctypes.c_uint32, CALLBACK, ctypes.c_void_p, ctypes.c_uint64,
                           ctypes.c_uint64)
    lib.cn_map_uart.restype = ctypes.c_int
    lib.cn_map_uart.argtypes = (ctypes.POINTER(CnCpu), ctypes.c_uint64, ctypes.c_uint64)
    lib.cn_free.restype = None
    lib.cn_free.argtypes = (ctypes.c_void_p,)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded `console.c` library (built on first use), or None (`status()` says why)."""
    return load_once(sys.modules[__name__], SOURCE, _load)
