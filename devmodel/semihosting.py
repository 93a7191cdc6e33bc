"""Arm semihosting as QEMU implements it, as a pure request handler, with host access confined.

Operations and parameter blocks follow "Semihosting for AArch32 and AArch64" (Arm, 2020Q4 release of
ARM-software/abi-aa, chapter "Semihosting operations"); where the specification leaves a choice the answers
are those of QEMU 7.2 (`semihosting/arm-compat-semi.c`, `guestfd.c`, `syscalls.c`, `console.c`), checked
against `qemu-system-aarch64 -M virt -cpu max -semihosting` by tests/devmodel/test_semihosting_qemu.py.
On AArch64 the guest issues `HLT #0xF000` with the operation number in W0 and a parameter (usually a pointer
to a block of 64-bit fields) in X1; the result goes to X0. docs/semihosting.md lists every operation, the
few places where this model departs from QEMU (and why), and how the harness wires it.

* Console: SYS_WRITEC/SYS_WRITE0 and handles of `:tt` go to `output(data, stream)` (1 stdout, 2 stderr);
  SYS_READC and SYS_READ of a `:tt` read handle take bytes from `stdin(n)` (b"" at end of input, None when
  a non-blocking source has nothing yet: the call is then `blocked`, nothing consumed, to be re-issued).
* Files: only under `root` (a `ConfinedRoot`, see semihosting_fs.py); with `root=None` the guest sees no
  host file system (ENOENT). SYS_SYSTEM runs only with `allow_system=True` (and a root: its cwd).
* Time is virtual by default: `clock()` supplies ticks (e.g. retired instructions) at `tick_freq` per
  second for SYS_CLOCK, SYS_ELAPSED and SYS_TIME (`epoch` + elapsed seconds), so runs stay deterministic.
* Hostile input never raises: an unreadable parameter block or buffer gives EFAULT (`BusError` from the
  memory), bad handles EBADF, lengths are capped and data moves in bounded chunks.

Addresses in parameter blocks are guest virtual addresses: the `GuestMemory` the caller passes resolves them
(the harness walks, or caches, the guest's stage-1 translation).

Not modelled: the AArch32/T32 callers (`SVC #0x123456`, `HLT #0x3C`, 32-bit fields), QEMU's gdbstub target
(`-semihosting-config target=gdb`), its `arg=` and `chardev=` options (the harness gives the command line and
the input source instead).
"""
from __future__ import annotations

import errno as E
import os
import struct
from enum import IntEnum
from typing import Callable, Iterable, NamedTuple, Protocol

from .bus import BusError
from .semihosting_fs import ConfinedRoot, HostFile, open_flags
from .trace import NULL_TRACER, Tracer, define

__all__ = ["SysOp", "Semihosting", "SemihostingResult", "GuestMemory", "HeapInfo", "heapinfo_for_layout",
           "qemu_cmdline", "ADP_STOPPED_APPLICATION_EXIT", "HLT_SEMIHOSTING", "FEATURES",
           "SH_EXT_EXIT_EXTENDED", "SH_EXT_STDOUT_STDERR", "UNSUPPORTED_STATUS"]

define("semihosting_call", ("cpu", "op", "name", "param", "ret"), "a semihosting call and its result")

HLT_SEMIHOSTING = 0xD45E0000         # HLT #0xF000: 0xD4400000 | imm16 << 5 (Arm ARM C6.2 HLT)
ADP_STOPPED_APPLICATION_EXIT = 0x20026
# ":semihosting-features": magic "SHFB" then feature byte 0 (spec "Semihosting extensions").
SH_EXT_EXIT_EXTENDED = 1 << 0
SH_EXT_STDOUT_STDERR = 1 << 1
FEATURES = b"SHFB" + bytes([SH_EXT_EXIT_EXTENDED | SH_EXT_STDOUT_STDERR])
# An operation QEMU does not know: it prints "Unsupported SemiHosting SWI 0x.." and abort()s; a shell reports
# 128 + SIGABRT.
UNSUPPORTED_STATUS = 128 + 6

_MASK64 = (1 << 64) - 1
_DEAD = 0xDEADBEEF                   # QEMU's X0 for calls with no defined result (common_semi_dead_cb)
_RW_MAX = 0x7FFF_FFFF                # SYS_READ/SYS_WRITE lengths are capped at INT32_MAX as QEMU does
_CHUNK = 64 << 10                    # data moves between guest and host in pieces of at most this size
_PATH_MAX = 4096                     # names longer than this (with their NUL) fail with ENAMETOOLONG
_STRING_HOLD = 1 << 20               # SYS_WRITE0 holds this much before streaming the rest
_MAX_HANDLES = 1024                  # open handles per guest; beyond: EMFILE
_PAGE = 0x1000                       # strings are read in pieces that never cross a 4 KiB boundary
_TT, _FEATURES_NAME = b":tt", b":semihosting-features"

_u64 = struct.Struct("<Q")
_u64x2 = struct.Struct("<2Q")
_u64x3 = struct.Struct("<3Q")
_u64x4 = struct.Struct("<4Q")


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
    SYS_SYNCCACHE = 0x19             # reserved by the 2020Q4 spec; QEMU still answers 0 on A64
    SYS_EXIT_EXTENDED = 0x20
    SYS_ELAPSED = 0x30
    SYS_TICKFREQ = 0x31


_NAMES = {int(op): op.name for op in SysOp}


class GuestMemory(Protocol):
    """Guest memory by virtual address; both raise `BusError` for an address that is not mapped."""

    def read_bytes(self, addr: int, size: int) -> bytes: ...

    def write_bytes(self, addr: int, data: bytes) -> None: ...


class SemihostingResult(NamedTuple):
    ret: int | None                  # value for X0 (None: leave X0 alone: the call does not return)
    exit_status: int | None = None   # the run ends with this status (SYS_EXIT*, unsupported operation)
    name: str = ""
    blocked: bool = False            # no console input (SYS_READC, SYS_READ of :tt): re-issue the HLT later
    fatal: str | None = None         # why an unsupported operation ends the run (QEMU's message)
    interrupted: bool = False        # `overdue()` cut a call without end short: stop the vCPU on the HLT


class HeapInfo(NamedTuple):
    heap_base: int
    heap_limit: int
    stack_base: int
    stack_limit: int


def heapinfo_for_layout(ram_base: int, ram_size: int, blobs: Iterable[tuple[int, int]]) -> HeapInfo:
    """SYS_HEAPINFO as QEMU computes it for a `-kernel` boot: the largest range of RAM no loaded blob covers
    (`blobs`: (address, size) of every ELF PT_LOAD segment at its memory size, the device tree, ...) is the
    heap, and the stack is the same range growing down from its top (QEMU semihosting/arm-compat-semi.c
    `common_semi_find_bases`, hw/core/loader.c `rom_find_largest_gap_between`: the first of equal gaps wins,
    blobs of size 0 are not loaded). No RAM or no free range: all zero ("could not calculate")."""
    if ram_size <= 0:
        return HeapInfo(0, 0, 0, 0)
    top = ram_base + ram_size
    spans = sorted((max(a, ram_base), min(a + n, top)) for a, n in blobs if n > 0 and a < top and a + n > ram_base)
    best_base = best_size = 0
    cursor = ram_base
    for start, end in spans + [(top, top)]:
        if start - cursor > best_size:
            best_base, best_size = cursor, start - cursor
        cursor = max(cursor, end)
    return HeapInfo(best_base, best_base + best_size, best_base + best_size, best_base)


def qemu_cmdline(kernel: str, append: str | None = None) -> str:
    """The SYS_GET_CMDLINE string QEMU builds for `-kernel KERNEL -append APPEND` with no
    `-semihosting-config arg=`: the kernel path as given, then the words of APPEND split at spaces, joined by
    one space (semihosting/config.c `semihosting_arg_fallback`, `semihosting_get_cmdline`)."""
    return " ".join([kernel, *(w for w in (append or "").split(" ") if w)])


def _host_stdin(n: int) -> bytes:
    try:
        return os.read(0, n)
    except OSError:
        return b""


class _NoInput(Exception):
    """Console input is not there yet: the call has not happened (it is re-issued later)."""


class _Fail(Exception):
    """An operation fails with `errno` (returns -1 unless the handler says otherwise)."""

    def __init__(self, code: int):
        self.code = code


# -- handles -------------------------------------------------------------------------------------------
class _ConsoleIn:
    """`:tt` opened for reading: the input source."""
    __slots__ = ("sh",)
    interactive = True               # a read returns what there is (read(2) on a terminal or a pipe)

    def __init__(self, sh: "Semihosting"):
        self.sh = sh

    def read(self, n: int) -> bytes:
        data = self.sh.read_input(n)
        if data is None:
            raise _NoInput()
        return data

    def unread(self, data: bytes) -> None:
        self.sh.unread_input(data)

    def write(self, data: bytes) -> int:
        raise _Fail(E.EBADF)

    def seek(self, offset: int) -> None:
        raise _Fail(E.ESPIPE)

    def flen(self) -> int:
        return 0                     # fstat of a pipe or terminal: size 0 (QEMU answers the host fd's)

    def isatty(self) -> bool:
        return self.sh.isatty(0)

    def close(self) -> None:
        pass


class _ConsoleOut(_ConsoleIn):
    """`:tt` opened for writing (stdout) or appending (stderr), extension SH_EXT_STDOUT_STDERR."""
    __slots__ = ("stream",)

    def __init__(self, sh: "Semihosting", stream: int):
        super().__init__(sh)
        self.stream = stream

    def read(self, n: int) -> bytes:
        raise _Fail(E.EBADF)

    def write(self, data: bytes) -> int:
        self.sh.output(data, self.stream)
        return len(data)

    def isatty(self) -> bool:
        return self.sh.isatty(self.stream)


class _StaticFile:
    """`:semihosting-features`: a read-only byte sequence (QEMU syscalls.c staticfile_*)."""
    __slots__ = ("data", "pos")
    interactive = False

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def unread(self, data: bytes) -> None:
        self.pos -= len(data)

    def write(self, data: bytes) -> int:
        raise _Fail(E.EBADF)

    def seek(self, offset: int) -> None:
        if not 0 <= offset <= len(self.data):
            raise _Fail(E.EINVAL)
        self.pos = offset

    def flen(self) -> int:
        return len(self.data)

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        pass


_Handle = _ConsoleIn | _StaticFile | HostFile


class Semihosting:
    """One guest's semihosting state (handles, errno, console input) and its policy.

    `output(data, stream)`: console output, stream 1 (stdout) or 2 (stderr).
    `clock()`: virtual ticks since the start at `tick_freq` per second (SYS_CLOCK, SYS_ELAPSED, SYS_TIME).
    `root`: directory the guest's files live in (None: no host files). `allow_system`: run SYS_SYSTEM.
    `stdin(n)`: up to n bytes of console input, b"" at the end, or None when there is none yet (the call is
    then `blocked`); default: the host's standard input, read blocking.
    `readc_eof`: what SYS_READC returns at the end of input; None (default) blocks as QEMU does.
    `isatty(stream)`: whether console stream 0/1/2 is a terminal for SYS_ISTTY (default: always).
    `cmdline`: the SYS_GET_CMDLINE string (see `qemu_cmdline`). `heap`: the SYS_HEAPINFO answer (see
    `heapinfo_for_layout`; None: zeros). `time()`: seconds since 1970 for SYS_TIME instead of the default
    `epoch + clock() // tick_freq`. `tmpnam_pid`: the number SYS_TMPNAM puts where QEMU puts its pid.
    `overdue()`: whether the run is out of wall time, asked between the 1 MiB pieces of a SYS_WRITE0 string
    (one whose NUL never comes - the VA space wraps, and pages may alias - is as unbounded under QEMU): when it
    says so the call ends `interrupted`, its output so far written (default: never).
    """

    def __init__(self, output: Callable[[bytes, int], None], *, clock: Callable[[], int] = lambda: 0,
                 tick_freq: int = 1_000_000_000, log: Callable[[str, str], None] | None = None,
                 tracer: Tracer = NULL_TRACER, root: str | os.PathLike | None = None, allow_system: bool = False,
                 stdin: Callable[[int], bytes] | None = None, readc_eof: int | None = None,
                 isatty: Callable[[int], bool] | None = None, cmdline: str | bytes = "",
                 heap: HeapInfo | None = None, time: Callable[[], int] | None = None, epoch: int = 0,
                 tmpnam_pid: int = 0, overdue: Callable[[], bool] | None = None):
        self.output = output
        self.clock = clock
        self.tick_freq = tick_freq
        self.log = log
        self.tracer = tracer
        self.fs = ConfinedRoot(root) if root is not None else None
        self.allow_system = allow_system
        self.stdin = stdin if stdin is not None else _host_stdin
        self.readc_eof = readc_eof
        self.isatty = isatty if isatty is not None else (lambda stream: True)
        self.cmdline = cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline)
        self.heap = heap if heap is not None else HeapInfo(0, 0, 0, 0)
        self.time = time
        self.epoch = epoch
        self.tmpnam_pid = tmpnam_pid
        self.overdue = overdue
        self.errno = 0
        self.handles: dict[int, _Handle] = {}
        self._pending = b""                          # console input read but not yet delivered
        self._handlers: dict[int, Callable[[int, GuestMemory], int | SemihostingResult]] = {
            int(op): getattr(self, "_" + op.name.lower()) for op in SysOp}
        # prebuilt answers of the console calls (no allocation per call on the hot path)
        self._writec_done = SemihostingResult(_DEAD, None, "SYS_WRITEC")
        self._write0_done = SemihostingResult(_DEAD, None, "SYS_WRITE0")
        self._write_done = SemihostingResult(0, None, "SYS_WRITE")

    def close(self) -> None:
        """Close every host file the guest left open and the root."""
        for h in self.handles.values():
            try:
                h.close()
            except OSError:
                pass
        self.handles.clear()
        if self.fs is not None:
            self.fs.close()

    # -- dispatch -----------------------------------------------------------------------------------
    def call(self, op: int, param: int, mem: GuestMemory, cpu: int = 0) -> SemihostingResult:
        op &= 0xFFFF_FFFF                            # W0: the top half of X0 is not part of the number
        handler = self._handlers.get(op)
        if handler is None:
            res = self._unsupported(op, param)
        else:
            try:
                res = handler(param, mem)
            except BusError as e:                    # an unreadable parameter block (QEMU do_fault)
                self._guest_error(f"semihosting {_NAMES[op]}: parameter at {e.addr:#x} is not mapped")
                self.errno, res = E.EFAULT, -1
            except _Fail as e:
                self.errno, res = e.code, -1
            except OSError as e:                     # a host file operation failed: its errno
                self.errno, res = e.errno or E.EIO, -1
            if res.__class__ is not SemihostingResult:
                res = SemihostingResult(res, None, _NAMES[op])
        if "semihosting_call" in self.tracer.enabled:
            self.tracer.emit("semihosting_call", cpu=cpu, op=op, name=res.name, param=param, ret=res.ret)
        return res

    def _unsupported(self, op: int, param: int) -> SemihostingResult:
        msg = f"Unsupported SemiHosting SWI {op:#04x}"
        if self.log:
            self.log("unimp", f"semihosting: {msg} (param {param:#x}): the run ends with status "
                              f"{UNSUPPORTED_STATUS} as QEMU's abort()")
        return SemihostingResult(None, UNSUPPORTED_STATUS, f"{op:#x}", fatal=msg)

    def _guest_error(self, msg: str) -> None:
        if self.log:
            self.log("guest_errors", msg)

    def _unimp(self, msg: str) -> None:
        if self.log:
            self.log("unimp", msg)

    # -- guest memory helpers -----------------------------------------------------------------------
    @staticmethod
    def _cstring(mem: GuestMemory, addr: int, limit: int) -> tuple[bytes, bool]:
        """Bytes at `addr` up to their NUL (excluded) and whether one was found within `limit` bytes; reads
        never cross a 4 KiB boundary the string does not reach."""
        n = min(_PAGE - (addr & (_PAGE - 1)), 256, limit)
        chunk = mem.read_bytes(addr & _MASK64, n)
        nul = chunk.find(0)
        if nul >= 0:
            return chunk[:nul], True                 # the common case: one short read
        parts = [chunk]
        got = n
        while got < limit:
            addr += n
            n = min(_PAGE - (addr & (_PAGE - 1)), limit - got)
            chunk = mem.read_bytes(addr & _MASK64, n)
            nul = chunk.find(0)
            if nul >= 0:
                parts.append(chunk[:nul])
                return b"".join(parts), True
            parts.append(chunk)
            got += n
        return b"".join(parts), False

    def _name(self, mem: GuestMemory, addr: int, length: int) -> bytes:
        """A file name or command: `length` bytes and their NUL terminator, as QEMU's validate_strlen checks
        it (length + 1 == 0: up to the NUL), cut at the first NUL."""
        tlen = (length + 1) & _MASK64
        if tlen == 0:
            s, ok = self._cstring(mem, addr, _PATH_MAX)
            if not ok:
                raise _Fail(E.ENAMETOOLONG)
            return s
        if tlen > _PATH_MAX:
            raise _Fail(E.ENAMETOOLONG)
        data = mem.read_bytes(addr, tlen)
        if data[-1] != 0:
            raise _Fail(E.EINVAL)
        return data[:data.find(0)]

    def _handle(self, value: int) -> _Handle:
        h = self.handles.get(value & 0xFFFF_FFFF)    # QEMU keeps guest fds in an int
        if h is None:
            raise _Fail(E.EBADF)
        return h

    def _alloc(self, h: _Handle) -> int:
        n = 1                                        # lowest free handle, never 0 (QEMU alloc_guestfd)
        while n in self.handles:
            n += 1
        if n > _MAX_HANDLES:
            h.close()
            raise _Fail(E.EMFILE)
        self.handles[n] = h
        return n

    def console_handles(self) -> dict[int, int]:
        """The handles of `:tt` opened for writing and their stream (1 stdout, 2 stderr)."""
        return {h: f.stream for h, f in self.handles.items() if type(f) is _ConsoleOut}

    def read_input(self, n: int) -> bytes | None:
        """Up to `n` bytes of console input (b"" at its end, None when `stdin` has none yet)."""
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        data = self.stdin(n)
        return None if data is None else data[:n]

    def unread_input(self, data: bytes) -> None:
        """Give back console input that could not be delivered (the guest's buffer faulted)."""
        self._pending = data + self._pending

    # -- operations (spec chapter "Semihosting operations") --------------------------------------------
    def _sys_open(self, param: int, mem: GuestMemory) -> int:
        name_ptr, mode, length = _u64x3.unpack(mem.read_bytes(param, 24))
        name, _ = self._cstring(mem, name_ptr, _PATH_MAX)
        if mode >= 12:
            raise _Fail(E.EINVAL)
        if name == _TT:                              # length ignored, as QEMU compares the C string
            return self._alloc(_ConsoleIn(self) if mode < 4 else _ConsoleOut(self, 1 if mode < 8 else 2))
        if name == _FEATURES_NAME:
            if mode > 1:
                raise _Fail(E.EACCES)                # only "r"/"rb" (spec "Semihosting extensions")
            return self._alloc(_StaticFile(FEATURES))
        name = self._name(mem, name_ptr, length)
        if self.fs is None:
            self._unimp(f"semihosting SYS_OPEN {name!r}: no host files (no semihosting root): ENOENT")
            raise _Fail(E.ENOENT)
        try:
            return self._alloc(self.fs.open(name, open_flags(mode)))
        except OSError as e:
            if e.errno == E.EACCES:
                self._guest_error(f"semihosting SYS_OPEN {name!r}: refused (outside the root or not a file)")
            raise

    def _sys_close(self, param: int, mem: GuestMemory) -> int:
        (value,) = _u64.unpack(mem.read_bytes(param, 8))
        h = self._handle(value)
        del self.handles[value & 0xFFFF_FFFF]
        h.close()
        return 0

    def _sys_writec(self, param: int, mem: GuestMemory) -> SemihostingResult:
        try:
            self.output(mem.read_bytes(param, 1), 1)
        except BusError:
            self._guest_error(f"semihosting SYS_WRITEC: {param:#x} is not mapped")
        return self._writec_done                     # X0 is corrupted: QEMU leaves 0xdeadbeef

    def _sys_write0(self, param: int, mem: GuestMemory) -> SemihostingResult:
        addr = param
        try:
            s, ok = self._cstring(mem, addr, _STRING_HOLD)
            while not ok:                            # longer than we hold: stream it
                self.output(s, 1)
                if self.overdue is not None and self.overdue():
                    return SemihostingResult(None, None, "SYS_WRITE0", interrupted=True)
                addr += len(s)
                s, ok = self._cstring(mem, addr, _STRING_HOLD)
        except BusError:
            self._guest_error(f"semihosting SYS_WRITE0: string at {param:#x} runs into unmapped memory")
            return self._write0_done                 # QEMU writes nothing and leaves errno alone
        if s:
            self.output(s, 1)
        return self._write0_done

    def _sys_write(self, param: int, mem: GuestMemory) -> int | SemihostingResult:
        left = self._transfer("SYS_WRITE", param, mem, self._write_step)
        return self._write_done if left == 0 else left

    def _sys_read(self, param: int, mem: GuestMemory) -> int | SemihostingResult:
        try:
            return self._transfer("SYS_READ", param, mem, self._read_step)
        except _NoInput:                             # a console read before any input: nothing happened
            return SemihostingResult(None, None, "SYS_READ", blocked=True)

    def _transfer(self, what: str, param: int, mem: GuestMemory,
                  step: Callable[[_Handle, GuestMemory, int, int], tuple[int, bool]]) -> int:
        """SYS_READ/SYS_WRITE `{handle, buf, len}`: move at most 2^31 - 1 bytes in chunks; returns the bytes
        not moved (all of them on an error, which sets errno)."""
        value, buf, length = _u64x3.unpack(mem.read_bytes(param, 24))
        done = 0
        try:
            h = self._handle(value)
            todo = min(length, _RW_MAX)
            while done < todo:
                n, more = step(h, mem, (buf + done) & _MASK64, min(todo - done, _CHUNK))
                done += n
                if not more:
                    break
        except BusError:
            self._guest_error(f"semihosting {what}: buffer at {(buf + done) & _MASK64:#x} is not mapped")
            self.errno = E.EFAULT
        except _Fail as e:
            self.errno = e.code
        except OSError as e:
            self.errno = e.errno or E.EIO
        return length - done

    @staticmethod
    def _write_step(h: _Handle, mem: GuestMemory, addr: int, n: int) -> tuple[int, bool]:
        data = mem.read_bytes(addr, n)
        written = h.write(data)
        return written, written == n                 # a short write ends the call

    @staticmethod
    def _read_step(h: _Handle, mem: GuestMemory, addr: int, n: int) -> tuple[int, bool]:
        data = h.read(n)
        if not data:
            return 0, False                          # end of file
        try:
            mem.write_bytes(addr, data)
        except BusError:
            h.unread(data)                           # the position (or the input) is as before the copy
            raise
        return len(data), not h.interactive          # a console read returns what there is

    def _sys_readc(self, param: int, mem: GuestMemory) -> int | SemihostingResult:
        data = self.read_input(1)
        if data:
            return data[0]
        if data is not None and self.readc_eof is not None:
            return self.readc_eof
        # QEMU halts the vCPU until console input arrives (at the end of input: never).
        return SemihostingResult(None, None, "SYS_READC", blocked=True)

    def _sys_iserror(self, param: int, mem: GuestMemory) -> int:
        (status,) = _u64.unpack(mem.read_bytes(param, 8))
        return int(status >= 1 << 63)                # a negative value is an error

    def _sys_istty(self, param: int, mem: GuestMemory) -> int:
        (value,) = _u64.unpack(mem.read_bytes(param, 8))
        if self._handle(value).isatty():
            return 1
        self.errno = E.ENOTTY                        # as isatty(3) sets it (QEMU common_semi_istty_cb)
        return 0

    def _sys_seek(self, param: int, mem: GuestMemory) -> int:
        value, pos = _u64x2.unpack(mem.read_bytes(param, 16))
        h = self._handle(value)
        if pos >= 1 << 63:
            raise _Fail(E.EINVAL)                    # a negative offset (QEMU passes it as int64_t)
        h.seek(pos)
        return 0

    def _sys_flen(self, param: int, mem: GuestMemory) -> int:
        (value,) = _u64.unpack(mem.read_bytes(param, 8))
        return self._handle(value).flen()

    def _sys_tmpnam(self, param: int, mem: GuestMemory) -> int:
        buf, ident, size = _u64x3.unpack(mem.read_bytes(param, 24))
        name = b"/tmp/qemu-%x%02x\0" % (self.tmpnam_pid, ident & 0xFF)   # QEMU's format, pid fixed
        if len(name) > size:
            return -1                                # too small a buffer: QEMU leaves errno alone
        mem.write_bytes(buf, name)
        return 0

    def _sys_remove(self, param: int, mem: GuestMemory) -> int:
        ptr, length = _u64x2.unpack(mem.read_bytes(param, 16))
        name = self._name(mem, ptr, length)
        self._files("SYS_REMOVE", name).remove(name)
        return 0

    def _sys_rename(self, param: int, mem: GuestMemory) -> int:
        optr, olen, nptr, nlen = _u64x4.unpack(mem.read_bytes(param, 32))
        old = self._name(mem, optr, olen)
        new = self._name(mem, nptr, nlen)
        self._files("SYS_RENAME", old).rename(old, new)
        return 0

    def _files(self, what: str, name: bytes) -> ConfinedRoot:
        if self.fs is None:
            self._unimp(f"semihosting {what} {name!r}: no host files (no semihosting root): ENOENT")
            raise _Fail(E.ENOENT)
        return self.fs

    def _sys_clock(self, param: int, mem: GuestMemory) -> int:
        return self.clock() * 100 // self.tick_freq  # centiseconds

    def _sys_time(self, param: int, mem: GuestMemory) -> int:
        if self.time is not None:
            return self.time()
        return self.epoch + self.clock() // self.tick_freq

    def _sys_system(self, param: int, mem: GuestMemory) -> int:
        if not self.allow_system or self.fs is None:         # refused before looking at the guest's block
            why = "not allowed" if not self.allow_system else "needs a semihosting root (its cwd)"
            self._unimp(f"semihosting SYS_SYSTEM (param {param:#x}): {why}: EACCES")
            raise _Fail(E.EACCES)
        ptr, length = _u64x2.unpack(mem.read_bytes(param, 16))
        cmd = self._name(mem, ptr, length)
        import subprocess                   # here, not at import: start-up of every run (few guests call it)
        p = subprocess.run([b"/bin/sh", b"-c", cmd], cwd=self.fs.path, stdin=subprocess.DEVNULL,
                           capture_output=True, check=False)
        if p.stdout:
            self.output(p.stdout, 1)
        if p.stderr:
            self.output(p.stderr, 2)
        return p.returncode << 8 if p.returncode >= 0 else -p.returncode   # system(3)'s wait status

    def _sys_errno(self, param: int, mem: GuestMemory) -> int:
        return self.errno

    def _sys_get_cmdline(self, param: int, mem: GuestMemory) -> int:
        buf, size = _u64x2.unpack(mem.read_bytes(param, 16))
        line = self.cmdline + b"\0"
        if len(line) > size:
            raise _Fail(E.E2BIG)
        mem.write_bytes((param + 8) & _MASK64, _u64.pack(len(line) - 1))   # QEMU: length first, then text
        mem.write_bytes(buf, line)
        return 0

    def _sys_heapinfo(self, param: int, mem: GuestMemory) -> int:
        (block,) = _u64.unpack(mem.read_bytes(param, 8))    # X1 -> pointer -> four-field block
        for i, v in enumerate(self.heap):
            mem.write_bytes((block + 8 * i) & _MASK64, _u64.pack(v & _MASK64))
        return 0

    def _sys_exit(self, param: int, mem: GuestMemory) -> SemihostingResult:
        return self._exit("SYS_EXIT", param, mem)

    def _sys_exit_extended(self, param: int, mem: GuestMemory) -> SemihostingResult:
        return self._exit("SYS_EXIT_EXTENDED", param, mem)

    def _exit(self, name: str, param: int, mem: GuestMemory) -> SemihostingResult:
        # AArch64: X1 points to {reason, subcode} for both SYS_EXIT and SYS_EXIT_EXTENDED.
        reason, subcode = _u64x2.unpack(mem.read_bytes(param, 16))
        if reason == ADP_STOPPED_APPLICATION_EXIT:
            return SemihostingResult(None, subcode & 0xFF, name)     # exit(3) keeps the low 8 bits
        self._guest_error(f"semihosting {name} with reason {reason:#x} (not ApplicationExit): status 1")
        return SemihostingResult(None, 1, name)

    def _sys_synccache(self, param: int, mem: GuestMemory) -> int:
        return 0                                     # no caches to maintain

    def _sys_elapsed(self, param: int, mem: GuestMemory) -> int:
        mem.write_bytes(param, _u64.pack(self.clock() & _MASK64))
        return 0

    def _sys_tickfreq(self, param: int, mem: GuestMemory) -> int:
        return self.tick_freq
