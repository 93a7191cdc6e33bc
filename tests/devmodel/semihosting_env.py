"""Test helper: a `Semihosting` over 1 MiB of fake guest RAM (a devmodel `Bus`, so unmapped addresses raise
`BusError` as the harness's memory does), with parameter blocks, strings and buffers placed for the caller."""
from __future__ import annotations

import struct

from devmodel.bus import Bus
from devmodel.semihosting import Semihosting

RAM = 0x4000_0000
RAM_SIZE = 1 << 20
UNMAPPED = 0x1_0000_0000


class Input:
    """A console input source over fixed bytes (b"" once they are used up); records each request."""

    def __init__(self, data: bytes = b""):
        self.data = bytearray(data)
        self.asked: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        out = bytes(self.data[:n])
        del self.data[:n]
        return out


class Env:
    def __init__(self, **kw):
        self.bus = Bus()
        self.bus.add_ram(RAM, RAM_SIZE)
        self.out: list[tuple[int, bytes]] = []
        self.log: list[tuple[str, str]] = []
        kw.setdefault("stdin", Input())
        self.sh = Semihosting(lambda data, stream: self.out.append((stream, data)),
                              log=lambda c, m: self.log.append((c, m)), **kw)
        self.next = RAM + 0x1000

    # -- guest memory -------------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        """Bump allocation from RAM + 4 KiB, starting over when RAM is used up (tests use data at once)."""
        assert size <= RAM_SIZE - 0x1000
        addr = (self.next + align - 1) & -align
        if addr + size > RAM + RAM_SIZE:
            addr = RAM + 0x1000
        self.next = addr + size
        return addr

    def put(self, data: bytes) -> int:
        addr = self.alloc(len(data) + 1)
        self.bus.write_bytes(addr, data)
        return addr

    def string(self, s: bytes | str) -> int:
        return self.put((s.encode() if isinstance(s, str) else s) + b"\0")

    def block(self, *fields: int) -> int:
        return self.put(struct.pack(f"<{len(fields)}Q", *(f & (1 << 64) - 1 for f in fields)))

    def read(self, addr: int, size: int) -> bytes:
        return self.bus.read_bytes(addr, size)

    # -- calls --------------------------------------------------------------------------------------
    def call(self, op: int, *fields: int, param: int | None = None):
        return self.sh.call(op, self.block(*fields) if param is None else param, self.bus)

    def ret(self, op: int, *fields: int, param: int | None = None) -> int:
        r = self.call(op, *fields, param=param).ret
        return r - (1 << 64) if r is not None and r >= 1 << 63 else r

    @property
    def errno(self) -> int:
        return self.sh.call(0x13, 0, self.bus).ret

    def open(self, name: bytes | str, mode: int) -> int:
        raw = name.encode() if isinstance(name, str) else name
        return self.ret(0x01, self.string(raw), mode, len(raw))

    def write(self, handle: int, data: bytes) -> int:
        return self.ret(0x05, handle, self.put(data), len(data))

    def readh(self, handle: int, n: int) -> tuple[int, bytes]:
        buf = self.alloc(n)
        left = self.ret(0x06, handle, buf, n)
        return left, self.read(buf, n - left) if 0 <= left <= n else b""

    def stream(self, n: int) -> bytes:
        return b"".join(d for s, d in self.out if s == n)
