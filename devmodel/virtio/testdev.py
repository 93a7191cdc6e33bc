"""chr-testdev: QEMU's test-suite control character device (chardev/testdev.c), the backend kvm-unit-tests'
`-chardev testdev` puts behind a virtconsole port.

Protocol, as QEMU's `testdev_eat_packet` parses the bytes the guest writes: optional white space, decimal
digits (the argument, 0 if none), optional white space, then one command byte. `q` ends the run: QEMU calls
`exit((arg << 1) | 1)`, so the process status is `((code << 1) | 1) & 0xff` (`qemu_exit_status`). Any other
command byte ends the packet and is ignored. A packet may arrive in pieces across writes; incomplete
packets wait in a 32-byte buffer. kvm-unit-tests' `chr_testdev_exit(code)` (lib/chr-testdev.c) sends
`"%dq"` and its `exit()` also prints `EXIT: STATUS=((code << 1) | 1)`, which scripts/arch-run.bash reads when
there is no testdev.

Faithful corner cases: the argument is a C `int` (it wraps at 2^32); if the buffer fills with an
incomplete packet (e.g. 32 digits or blanks) and more bytes arrive, QEMU loops forever inside
`testdev_chr_write` -- here the testdev becomes `wedged` (traced once) and ignores everything after, so the
guest sees a device that never completes the write, as under QEMU. After `q` the testdev ignores further
bytes (QEMU has exited).
"""
from __future__ import annotations

from typing import Callable

from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)

__all__ = ["ChrTestdev", "eat_packet", "qemu_exit_status", "BUF_SIZE"]

BUF_SIZE = 32                               # chardev/testdev.c BUF_SIZE
_SPACE = frozenset(b" \t\n\v\f\r")          # C isspace() in the "C" locale
_DIGITS = range(0x30, 0x3A)


def qemu_exit_status(code: int) -> int:
    """The exit status of QEMU's process after `<code>q`: exit((code << 1) | 1), as the OS keeps 8 bits."""
    return ((code << 1) | 1) & 0xFF


def _c_int(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v & 0x8000_0000 else v


def eat_packet(buf: bytes | bytearray) -> tuple[int, int | None]:
    """(bytes consumed, exit code or None) for the packet at the start of `buf`; (0, None) if incomplete."""
    it = iter(buf)
    used = 0

    def eat() -> int | None:
        nonlocal used
        c = next(it, None)
        if c is not None:
            used += 1
        return c

    c = eat()
    while c is not None and c in _SPACE:
        c = eat()
    arg = 0
    while c is not None and c in _DIGITS:
        arg = _c_int(arg * 10 + c - 0x30)
        c = eat()
    while c is not None and c in _SPACE:
        c = eat()
    if c is None:
        return 0, None
    return used, (arg if c == ord("q") else None)


class ChrTestdev:
    """The testdev backend. `write(data)` is what a virtconsole port calls with the guest's bytes;
    `on_exit(code)` runs once, when `<code>q` arrives (`exit_status` is then QEMU's process status)."""

    def __init__(self, on_exit: Callable[[int], object] | None = None, tracer: Tracer = NULL_TRACER):
        self.on_exit = on_exit
        self.tracer = tracer
        self.buf = bytearray()
        self.wedged = False
        self.exit_code: int | None = None
        self.received = 0

    @property
    def exit_status(self) -> int | None:
        return None if self.exit_code is None else qemu_exit_status(self.exit_code)

    def write(self, data: bytes) -> int:
        """Take the guest's bytes (all of them, as QEMU's chr_write returns the full length)."""
        self.received += len(data)
        pos = 0
        while pos < len(data) and self.exit_code is None and not self.wedged:
            room = BUF_SIZE - len(self.buf)
            if room == 0:
                self.wedged = True
                if "chr_testdev_wedged" in self.tracer.enabled:
                    self.tracer.emit("chr_testdev_wedged", buffered=bytes(self.buf))
                break
            self.buf += data[pos:pos + room]
            pos += room
            self._interpret()
        return len(data)

    def _interpret(self) -> None:
        while self.buf:
            eaten, code = eat_packet(self.buf)
            if eaten == 0:
                return
            del self.buf[:eaten]
            if code is not None:
                self._exit(code)
                return

    def _exit(self, code: int) -> None:
        self.exit_code = code
        if "chr_testdev_exit" in self.tracer.enabled:
            self.tracer.emit("chr_testdev_exit", code=code, status=qemu_exit_status(code))
        if self.on_exit is not None:
            self.on_exit(code)
