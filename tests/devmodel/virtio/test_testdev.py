"""chr-testdev (QEMU chardev/testdev.c): the '<code>q' exit protocol and its corner cases."""
from __future__ import annotations

import pytest

from devmodel.trace import ListSink, Tracer
from devmodel.virtio.testdev import BUF_SIZE, ChrTestdev, eat_packet, qemu_exit_status


@pytest.mark.parametrize("buf,result", [
    (b"3q", (2, 3)),
    (b"q", (1, 0)),
    (b" \t12 \nq", (7, 12)),
    (b"12x", (3, None)),            # another command byte: the packet is eaten, nothing happens
    (b"x3q", (1, None)),
    (b"12", (0, None)),             # incomplete: wait for more
    (b"  ", (0, None)),
    (b"", (0, None)),
    (b"4294967299q", (11, 3)),      # a C int: wraps at 2^32
])
def test_eat_packet(buf, result):
    assert eat_packet(buf) == result


@pytest.mark.parametrize("code,status", [(0, 1), (1, 3), (3, 7), (127, 255), (128, 1), (-1, 255)])
def test_qemu_exit_status(code, status):
    assert qemu_exit_status(code) == status


def collect(**kw):
    codes = []
    sink = ListSink()
    tracer = Tracer(sinks=[sink])
    tracer.enable("chr_testdev_*")
    return ChrTestdev(on_exit=codes.append, tracer=tracer, **kw), codes, sink


def test_exit_once_with_qemus_status():
    td, codes, sink = collect()
    assert td.write(b"hello 5") == 7 and codes == []
    td.write(b"q and then more 9q")
    assert codes == [5] and td.exit_status == 11
    [ev] = sink.of("chr_testdev_exit")
    assert (ev["code"], ev["status"]) == (5, 11)


def test_packet_split_across_writes():
    td, codes, _ = collect()
    for b in (b"1", b"2", b" ", b"q"):
        td.write(b)
    assert codes == [12]


def test_noise_before_the_command():
    td, codes, _ = collect()
    td.write(b"abc" * 40 + b"7q")          # far more than the buffer, in one write
    assert codes == [7]


def test_a_full_buffer_without_a_packet_wedges_like_qemu():
    td, codes, sink = collect()
    td.write(b"1" * BUF_SIZE)              # fills the buffer exactly: QEMU returns
    assert not td.wedged
    td.write(b"q")                         # no room: QEMU spins in testdev_chr_write for ever
    assert td.wedged and codes == [] and td.exit_code is None
    td.write(b"0q")
    assert codes == []
    [ev] = sink.of("chr_testdev_wedged")
    assert ev["buffered"] == b"1" * BUF_SIZE


def test_without_callback():
    td = ChrTestdev()
    td.write(b"2q")
    assert td.exit_code == 2 and td.received == 2
