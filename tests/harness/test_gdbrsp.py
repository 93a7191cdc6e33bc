"""The remote protocol's framing (harness/gdbrsp.py) against the GDB manual's rules: checksums, acknowledgments,
interrupts, binary escapes, run-length encoding, thread ids, numbers; bad input gives events, never raises."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.gdbrsp import (MAX_PACKET, Ack, BadPacket, Interrupt, Nak, Packet, Reader, ThreadId, checksum, escape,
                            frame, parse_hex, parse_thread_id, unescape)


def test_checksum_and_frame_follow_the_manual_example():
    # GDB manual "Overview": the checksum is the modulo-256 sum of the packet's characters
    assert checksum(b"g") == 0x67 and frame(b"g") == b"$g#67"
    assert frame(b"qSupported") == b"$qSupported#37"
    assert frame(b"") == b"$#00"


@given(st.binary(max_size=300))
def test_escape_round_trips_and_leaves_no_special_byte(data):
    esc = escape(data)
    assert unescape(esc) == data
    assert not set(esc) & set(b"#$*")
    # every '}' in the escaped form starts an escape: the byte after it, XOR 0x20, was special
    i = 0
    while i < len(esc):
        if esc[i] == 0x7D:
            assert esc[i + 1] ^ 0x20 in b"#$}*"
            i += 2
        else:
            i += 1


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=17))
def test_reader_decodes_escaped_packets_fed_in_any_pieces(data, step):
    raw = frame(escape(data))
    r = Reader()
    events = []
    for i in range(0, len(raw), step):
        events += r.feed(raw[i:i + step])
    assert events == [Packet(data)]


def test_reader_events_outside_packets():
    r = Reader()
    assert r.feed(b"+-\x03junk") == [Ack(), Nak(), Interrupt()]         # other bytes are ignored
    # 0x03 inside a packet is data, not an interrupt
    assert r.feed(frame(b"X0,1:\x03")) == [Packet(b"X0,1:\x03")]


def test_reader_refuses_a_bad_checksum_and_bad_digits():
    r = Reader()
    assert r.feed(b"$g#00") == [BadPacket("checksum")]
    assert r.feed(b"$g#zz") == [BadPacket("checksum")]
    assert r.feed(b"$g#67") == [Packet(b"g")]                           # the reader recovers


def test_reader_expands_run_length_encoding():
    # manual: "0* " means the same as "0000" (' ' is 32: 32 - 29 = 3 more)
    body = b"m0* "
    assert Reader().feed(b"$" + body + b"#" + b"%02x" % checksum(body)) == [Packet(b"m0000")]
    body = b"*!"                                                        # nothing to repeat: kept as is
    assert Reader().feed(b"$" + body + b"#" + b"%02x" % checksum(body)) == [Packet(b"*!")]


def test_reader_bounds_packets():
    r = Reader()
    big = b"a" * (MAX_PACKET + 1)
    assert r.feed(frame(big)) == [BadPacket("too long")]
    huge = b"b" * (4 * MAX_PACKET)                                      # never buffered whole
    assert r.feed(frame(huge)) == [BadPacket("too long")]
    # run-length encoding that would expand past the limit
    body = b"c" + b"*~" * (MAX_PACKET // 50)
    assert r.feed(b"$" + body + b"#" + b"%02x" % checksum(body)) == [BadPacket("too long")]
    assert r.feed(frame(b"a" * MAX_PACKET)) == [Packet(b"a" * MAX_PACKET)]


@pytest.mark.parametrize("text,value", [("0", 0), ("1f", 0x1F), ("FFFFFFFFFFFFFFFF", (1 << 64) - 1)])
def test_parse_hex(text, value):
    assert parse_hex(text) == value == parse_hex(text.encode())


@pytest.mark.parametrize("text", ["", "0x10", "-1", " 1", "1_0", "1 ", "g", "10000000000000000", "١"])
def test_parse_hex_refuses_what_int_would_take_or_overflow(text):
    with pytest.raises(ValueError):
        parse_hex(text)


@pytest.mark.parametrize("text,tid", [
    ("1", ThreadId(None, 1)), ("-1", ThreadId(None, -1)), ("0", ThreadId(None, 0)), ("p1.2", ThreadId(1, 2)),
    ("p01.02", ThreadId(1, 2)), ("p1.-1", ThreadId(1, -1)), ("p-1.-1", ThreadId(-1, -1)), ("p2", ThreadId(2, -1)),
    ("pa.b", ThreadId(10, 11)),
])
def test_thread_ids(text, tid):
    assert parse_thread_id(text) == tid


@pytest.mark.parametrize("text", ["", "p", "p1.", "x1", "p1.2.3", "-2", "p1.-2", "100000000"])
def test_bad_thread_ids(text):
    with pytest.raises(ValueError):
        parse_thread_id(text)
