"""The framing of the GDB Remote Serial Protocol (GDB manual, appendix "Remote Protocol": "Overview", "Packet
Acknowledgment", "Interrupts", "Binary Data"), as pure functions and a byte-fed reader: no sockets here.

* A packet is `$body#cc`: `cc` is the modulo-256 sum of the body's bytes (as sent, escapes included) in two
  hex digits. The receiver answers `+` (good checksum) or `-` (bad: the sender sends it again) until
  `QStartNoAckMode` turns acknowledgments off.
* Binary data (the `X` packet, `qXfer` replies) escapes `#`, `$`, `}` and `*` as `}` followed by the byte
  XOR 0x20. `*` followed by a count character `n` repeats the previous byte `n - 29` times (run-length
  encoding; the count never encodes `#` or `$`). The reader undoes both for every packet, as QEMU's gdbstub
  does (gdbstub/gdbstub.c `gdb_read_byte`), so handlers see plain bytes; the stub never run-length encodes.
* A 0x03 byte outside a packet is an interrupt request (Ctrl-C in gdb while the target runs).

Bad input never raises: a body longer than `MAX_PACKET` (the `PacketSize` the stub advertises) or with a bad
checksum is reported as `BadPacket` (the stub answers `-`, and `E22` for one too long); bytes outside packets
other than `+`, `-` and 0x03 are ignored (gdb may send a stray `+` at connection).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_PACKET", "checksum", "frame", "escape", "unescape", "Reader", "Packet", "BadPacket",
           "Interrupt", "Ack", "Nak", "ThreadId", "parse_thread_id", "parse_hex", "HEX"]

MAX_PACKET = 0x4000            # advertised PacketSize and the largest body accepted (bytes, after decoding)
_ESCAPE, _RLE = 0x7D, 0x2A     # '}', '*'
_MUST_ESCAPE = frozenset(b"#$}*")
HEX = re.compile(rb"[0-9a-fA-F]+")


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def frame(body: bytes) -> bytes:
    """`$body#cc` (the body as given: escape binary data first with `escape`)."""
    return b"$" + body + b"#%02x" % checksum(body)


def escape(data: bytes) -> bytes:
    """Binary data as a packet carries it: `#`, `$`, `}`, `*` become `}` + (byte ^ 0x20)."""
    if not _MUST_ESCAPE.intersection(data):
        return bytes(data)
    out = bytearray()
    for b in data:
        if b in _MUST_ESCAPE:
            out += bytes((_ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """The inverse of `escape` (a trailing lone `}` is dropped)."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == _ESCAPE:
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    body: bytes                # decoded (escapes and run-length encoding undone)


@dataclass(frozen=True)
class BadPacket:
    why: str                   # "checksum" or "too long"


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Nak:
    pass


Event = Packet | BadPacket | Interrupt | Ack | Nak


class Reader:
    """Bytes from the connection in, protocol events out (`feed`)."""

    def __init__(self, max_packet: int = MAX_PACKET):
        self.max_packet = max_packet
        self._in = False               # inside a packet (after '$')
        self._raw = bytearray()        # the body as received (the checksum covers it)
        self._sum: bytearray | None = None   # checksum digits once '#' was seen
        self._overrun = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for b in data:
            if not self._in:
                if b == 0x24:                       # '$'
                    self._in, self._sum, self._overrun = True, None, False
                    self._raw.clear()
                elif b == 0x03:
                    events.append(Interrupt())
                elif b == 0x2B:                     # '+'
                    events.append(Ack())
                elif b == 0x2D:                     # '-'
                    events.append(Nak())
                continue                            # anything else outside a packet: ignored
            if self._sum is None:
                if b == 0x23:                       # '#'
                    self._sum = bytearray()
                elif len(self._raw) <= 2 * self.max_packet + 8:
                    self._raw.append(b)
                else:
                    self._overrun = True
                continue
            self._sum.append(b)
            if len(self._sum) == 2:
                self._in = False
                events.append(self._finish(bytes(self._raw), bytes(self._sum)))
        return events

    def _finish(self, raw: bytes, digits: bytes) -> Event:
        if self._overrun:
            return BadPacket("too long")
        if not HEX.fullmatch(digits) or int(digits, 16) != checksum(raw):
            return BadPacket("checksum")
        body = _decode(raw)
        if body is None or len(body) > self.max_packet:
            return BadPacket("too long")
        return Packet(body)


def _decode(raw: bytes) -> bytes | None:
    """Undo escapes and run-length encoding; None when the result would be longer than a packet may be."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == _ESCAPE and i + 1 < n:
            out.append(raw[i + 1] ^ 0x20)
            i += 2
            continue
        if b == _RLE and out and i + 1 < n and 0x20 <= raw[i + 1] <= 0x7E:
            out += out[-1:] * (raw[i + 1] - 29)         # '*' + chr(n + 29): n more copies
            if len(out) > 2 * MAX_PACKET:
                return None
            i += 2
            continue
        out.append(b)
        i += 1
    return bytes(out)


# -- values in packets --------------------------------------------------------------------------------------

def parse_hex(text: bytes | str, limit: int = 1 << 64) -> int:
    """A hex number of a packet (digits only: no sign, prefix, blanks or '_', which int() would take);
    ValueError when it is not one or not below `limit`."""
    raw = text.encode("latin-1") if isinstance(text, str) else text
    if not HEX.fullmatch(raw):
        raise ValueError(f"not a hex number: {raw[:40]!r}")
    v = int(raw, 16)
    if v >= limit:
        raise ValueError(f"{raw[:40]!r} is out of range")
    return v


@dataclass(frozen=True)
class ThreadId:
    """A thread-id of the protocol: `[p<pid>.]<tid>`, each hex, -1 meaning all and 0 any (GDB manual
    "thread-id syntax"). `pid` is None when the id has no process part."""
    pid: int | None
    tid: int


def parse_thread_id(text: bytes | str) -> ThreadId:
    raw = text.decode("latin-1") if isinstance(text, bytes) else text
    pid = None
    if raw.startswith("p"):
        p, dot, raw = raw[1:].partition(".")
        pid = _id(p)
        if not dot:                      # "p<pid>": all threads of the process
            return ThreadId(pid, -1)
    return ThreadId(pid, _id(raw))


def _id(text: str) -> int:
    if text == "-1":
        return -1
    return parse_hex(text, 1 << 32)
