"""Arm semihosting (the subset a test guest needs), as a pure request handler.

Operation numbers and parameter blocks follow "Semihosting for AArch32 and AArch64" (Arm, version 3.0,
chapter 6 "Semihosting operations"). On AArch64 the guest issues `HLT #0xF000` with the operation number in
W0 and a parameter (usually a pointer to a block of 64-bit fields) in X1; the result goes in X0.

Handled: SYS_OPEN (only the console ":tt"), SYS_CLOSE, SYS_WRITEC, SYS_WRITE0, SYS_WRITE (console
handles), SYS_READC (no input: returns -1), SYS_ISERROR, SYS_ISTTY, SYS_CLOCK, SYS_ERRNO, SYS_EXIT,
SYS_EXIT_EXTENDED, SYS_ELAPSED, SYS_TICKFREQ. Exit status as QEMU computes it: the subcode when the reason is
ADP_Stopped_ApplicationExit, else 1.

Time is virtual (`clock()` supplies ticks, e.g. retired instructions), so runs stay deterministic.

Not modelled: host file access (SYS_OPEN of anything but ":tt" fails with ENOENT), SYS_READ, SYS_SEEK,
SYS_FLEN, SYS_REMOVE, SYS_RENAME, SYS_SYSTEM, SYS_TIME, SYS_TMPNAM, SYS_GET_CMDLINE, SYS_HEAPINFO (all return
-1 and are reported as unimplemented). Addresses in parameter blocks are guest virtual addresses: the
`GuestMemory` the caller passes resolves them (the harness walks the guest's stage-1 tables).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Protocol

from .bus import BusError
from .trace import NULL_TRACER, Tracer, define

__all__ = ["SysOp", "Semihosting", "SemihostingResult", "GuestMemory", "ADP_STOPPED_APPLICATION_EXIT",
           "HLT_SEMIHOSTING"]

define("semihosting_call", ("cpu", "op", "name", "param", "ret"), "a semihosting call and its result")

HLT_SEMIHOSTING = 0xD45E0000         # HLT #0xF000: 0xD4400000 | imm16 << 5 (Arm ARM C6.2 HLT)
ADP_STOPPED_APPLICATION_EXIT = 0x20026
_ENOENT = 2
_EBADF = 9
_MAX_STRING = 1 << 20                # SYS_WRITE0 reads at most this much before giving up


class SysOp(IntEnum):
    SYS_OPEN = 0x01
    SYS_CLOSE = 0x02
    SYS_WRITEC = 0x03
    SYS_WRITE0 = 0x04
    SYS_WRITE = 0x05
    SYS_READ = 0x06
    SYS_READC = 0x07
    SYS_ISERROR = 0x08
    SYS_ISTTY = 0x09
    SYS_SEEK = 0x0A
    SYS_FLEN = 0x0C
    SYS_TMPNAM = 0x0D
    SYS_REMOVE = 0x0E
    SYS_RENAME = 0x0F
    SYS_CLOCK = 0x10
    SYS_TIME = 0x11
    SYS_SYSTEM = 0x12
    SYS_ERRNO = 0x13
    SYS_GET_CMDLINE = 0x15
    SYS_HEAPINFO = 0x16
    SYS_EXIT = 0x18
    SYS_EXIT_EXTENDED = 0x20
    SYS_ELAPSED = 0x30
    SYS_TICKFREQ = 0x31


class GuestMemory(Protocol):
    def read_bytes(self, addr: int, size: int) -> bytes: ...

    def write_bytes(self, addr: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class SemihostingResult:
    ret: int | None              # value for X0 (None: the call does not return)
    exit_status: int | None = None
    name: str = ""


# Console handles handed out by SYS_OPEN(":tt", mode): modes 0-3 read (stdin), 4-7 write (stdout),
# 8-11 append (stderr), spec section 6.1 SYS_OPEN.
_STDIN, _STDOUT, _STDERR = 1, 2, 3


class Semihosting:
    """Console output goes to `output(data, stream)` with stream 1 (stdout) or 2 (stderr)."""

    def __init__(self, output: Callable[[bytes, int], None], *, clock: Callable[[], int] = lambda: 0,
                 tick_freq: int = 1_000_000_000, log: Callable[[str, str], None] | None = None,
                 tracer: Tracer = NULL_TRACER):
        self.output = output
        self.clock = clock
        self.tick_freq = tick_freq
        self.log = log
        self.tracer = tracer
        self.errno = 0
        self.open_handles: set[int] = set()

    def call(self, op: int, param: int, mem: GuestMemory, cpu: int = 0) -> SemihostingResult:
        op &= 0xFFFF_FFFF
        try:
            sop = SysOp(op)
            name = sop.name
        except ValueError:
            sop, name = None, f"{op:#x}"
        handler = getattr(self, "_" + name.lower(), None) if sop is not None else None
        if handler is None:
            if self.log:
                self.log("unimp", f"semihosting operation {name} not supported (param {param:#x})")
            res = SemihostingResult(-1, None, name)
        else:
            try:
                ret, status = handler(param, mem)
            except BusError as e:
                if self.log:
                    self.log("guest_errors", f"semihosting {name}: parameter at {e.addr:#x} is not guest RAM")
                ret, status = -1, None
            res = SemihostingResult(ret, status, name)
        if "semihosting_call" in self.tracer.enabled:
            self.tracer.emit("semihosting_call", cpu=cpu, op=op, name=name, param=param, ret=res.ret)
        return res

    @staticmethod
    def _fields(mem: GuestMemory, addr: int, n: int) -> list[int]:
        data = mem.read_bytes(addr, 8 * n)
        return [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(n)]

    # -- operations (spec chapter 6) ----------------------------------------------------------------
    def _sys_open(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        name_ptr, mode, length = self._fields(mem, param, 3)
        name = mem.read_bytes(name_ptr, min(length, 4096))
        if name != b":tt" or mode > 11:
            self.errno = _ENOENT
            return -1, None
        handle = (_STDIN, _STDOUT, _STDERR)[mode // 4]
        self.open_handles.add(handle)
        return handle, None

    def _sys_close(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        (handle,) = self._fields(mem, param, 1)
        if handle not in self.open_handles:
            self.errno = _EBADF
            return -1, None
        self.open_handles.discard(handle)
        return 0, None

    def _sys_writec(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        self.output(mem.read_bytes(param, 1), 1)
        return 0, None           # X0 is corrupted by SYS_WRITEC; 0 is as good as any value

    def _sys_write0(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        out = bytearray()
        addr = param
        while len(out) < _MAX_STRING:
            chunk = mem.read_bytes(addr, 1)
            if chunk == b"\0":
                break
            out += chunk
            addr += 1
        self.output(bytes(out), 1)
        return 0, None

    def _sys_write(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        handle, buf, length = self._fields(mem, param, 3)
        if handle not in (_STDOUT, _STDERR):
            self.errno = _EBADF
            return length, None          # returns the number of bytes NOT written
        self.output(mem.read_bytes(buf, length), 1 if handle == _STDOUT else 2)
        return 0, None

    def _sys_readc(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        return -1, None

    def _sys_iserror(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        (status,) = self._fields(mem, param, 1)
        return int(status >= 1 << 63), None      # a negative return value is an error

    def _sys_istty(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        (handle,) = self._fields(mem, param, 1)
        return int(handle in (_STDIN, _STDOUT, _STDERR)), None

    def _sys_clock(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        return self.clock() * 100 // self.tick_freq, None     # centiseconds

    def _sys_errno(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        return self.errno, None

    def _sys_elapsed(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        mem.write_bytes(param, (self.clock() & (1 << 64) - 1).to_bytes(8, "little"))
        return 0, None

    def _sys_tickfreq(self, param: int, mem: GuestMemory) -> tuple[int, None]:
        return self.tick_freq, None

    def _sys_exit(self, param: int, mem: GuestMemory) -> tuple[None, int]:
        # AArch64: X1 points to {reason, subcode} (spec 6.1 SYS_EXIT, "64-bit state").
        reason, subcode = self._fields(mem, param, 2)
        if reason == ADP_STOPPED_APPLICATION_EXIT:
            return None, subcode
        if self.log:
            self.log("guest_errors", f"semihosting exit with reason {reason:#x} (not ApplicationExit): status 1")
        return None, 1

    _sys_exit_extended = _sys_exit
