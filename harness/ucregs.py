"""Register access for the harness's hot paths: a fixed set of registers read in one C call.

The Unicorn 2.1 Python binding builds ctypes objects on every `reg_read`/`reg_read_batch`/`cpr_read` (measured
here: ~4 us per `reg_read`, ~17 us for a two-register `reg_read_batch`, ~8 us per `cpr_read`), which dominates
a semihosting call. `RegBatch(uc, regs)` prepares the argument arrays once and calls the library's
`uc_reg_read_batch` directly (~1 us for a dozen registers); system registers go in the same batch as
`UC_ARM64_REG_CP_REG` entries (the binding's `UcRegCP64` layout: crn, crm, op0, op1, op2, val).
`RegWriter(uc, regs)` writes 64-bit core registers the same way. The calls go through prototypes that take
plain integers (the binding's own argtypes convert each argument on every call), and the values are packed and
unpacked with one `struct` format (a ctypes array converts element by element). Both fall back to the binding's public API when
its library handle is not where unicorn 2.1 keeps it (tests/harness/test_ucregs.py checks both paths agree).
"""
from __future__ import annotations

import ctypes
import struct
from typing import Any, Callable, Sequence

from unicorn.arm64_const import UC_ARM64_REG_CP_REG

try:   # unicorn 2.1's ctypes library handle (also used by harness/trap.py)
    from unicorn.unicorn_py3.unicorn import uclib as _uclib
except ImportError:                                   # pragma: no cover - other unicorn packaging
    _uclib = None

__all__ = ["RegBatch", "RegWriter", "Reg", "fast_path_available"]

#: a core register id (UC_ARM64_REG_*) or a system register encoding (op0, op1, CRn, CRm, op2)
Reg = int | tuple[int, int, int, int, int]


_CP_SIZE, _CP_VAL = 32, 24          # the binding's UcRegCP64: crn, crm, op0, op1, op2 (u32 each), val (u64 at 24)
_CP_HEAD = struct.Struct("<5I")


def fast_path_available(uc: Any) -> bool:
    return _uclib is not None and getattr(uc, "_uch", None) is not None


def _entry(name: str, *args: Any) -> Callable[..., int]:
    """The library function `name` with plain integer (pointer) arguments: no per-call argtypes conversion."""
    addr = ctypes.cast(getattr(_uclib, name), ctypes.c_void_p).value
    return ctypes.CFUNCTYPE(ctypes.c_int, *args)(addr)


class RegBatch:
    """`read()` returns the values of `regs` (in order) from one `uc_reg_read_batch` call."""

    def __init__(self, uc: Any, regs: Sequence[Reg], *, fast: bool | None = None):
        self.regs = tuple(regs)
        n = len(self.regs)
        if fast is None:
            fast = fast_path_available(uc)
        if not fast:
            self.read = lambda: tuple(uc.reg_read(r) if isinstance(r, int) else uc.cpr_read(*r)
                                      for r in self.regs)
            return
        # one buffer: an 8-byte slot per core register, a UcRegCP64 per system register; the values are
        # unpacked with one struct format that skips the rest
        size = sum(8 if isinstance(r, int) else _CP_SIZE for r in self.regs)
        buf = ctypes.create_string_buffer(size)
        base = ctypes.addressof(buf)
        ids = (ctypes.c_int * n)()
        ptrs = (ctypes.c_void_p * n)()
        fmt, off = "<", 0
        for i, r in enumerate(self.regs):
            ptrs[i] = base + off
            if isinstance(r, int):
                ids[i] = r
                fmt, off = fmt + "Q", off + 8
            else:
                op0, op1, crn, crm, op2 = r
                _CP_HEAD.pack_into(buf, off, crn, crm, op0, op1, op2)
                ids[i] = UC_ARM64_REG_CP_REG
                fmt, off = fmt + f"{_CP_VAL}xQ", off + _CP_SIZE
        unpack = struct.Struct(fmt).unpack_from
        call = _entry("uc_reg_read_batch", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
        h, ids_p, ptrs_p = uc._uch.value, ctypes.addressof(ids), ctypes.addressof(ptrs)
        keep = (buf, ids, ptrs, uc)           # the memory the C call uses lives as long as this closure

        def read() -> tuple[int, ...]:
            call(h, ids_p, ptrs_p, n)
            return unpack(keep[0])
        self.read = read


class RegWriter:
    """`write(*values)` sets the core registers `regs` (UC_ARM64_REG_*, in order) to 64-bit values in one C
    call (`uc_reg_write_batch`)."""

    def __init__(self, uc: Any, regs: int | Sequence[int], *, fast: bool | None = None):
        regs = (regs,) if isinstance(regs, int) else tuple(regs)
        if fast is None:
            fast = fast_path_available(uc)
        if not fast:
            def slow(*values: int) -> None:
                for r, v in zip(regs, values):
                    uc.reg_write(r, v)
            self.write = slow
            return
        n = len(regs)
        buf = ctypes.create_string_buffer(8 * n)
        ids = (ctypes.c_int * n)(*regs)
        ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(buf) + 8 * i for i in range(n)))
        call = _entry("uc_reg_write_batch", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
        h, ids_p, ptrs_p = uc._uch.value, ctypes.addressof(ids), ctypes.addressof(ptrs)
        pack = struct.Struct(f"<{n}Q").pack_into
        keep = (buf, ids, ptrs, uc)           # the memory the C call uses lives as long as this closure

        def write(*values: int) -> None:
            pack(keep[0], 0, *values)
            call(h, ids_p, ptrs_p, n)
        self.write = write
