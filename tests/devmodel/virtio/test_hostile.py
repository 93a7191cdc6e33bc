"""Hostile drivers (virtio v1.2 2.1.2, 2.7): every class of malformed ring gives the architectural answer --
the device enters its error state (DEVICE_NEEDS_RESET and a configuration change notification on Version 2,
halted queues on both), the fault is counted and traced, nothing reaches the backend, no exception -- and a
reset brings the device back."""
from __future__ import annotations

import pytest

from devmodel.bus import BusError
from devmodel.virtio import Status, VirtioDevice
from devmodel.virtio.console import VIRTIO_CONSOLE_F_MULTIPORT
from devmodel.virtio.constants import F_INDIRECT_DESC, F_VERSION_1, INT_CONFIG
from devmodel.virtio.ring import (VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, RingFault)

from .conftest import ConsoleRig
from .driver import (QUEUE_DESC_LOW, QUEUE_NUM, QUEUE_READY, QUEUE_SEL, Guest, make_rig, pack_desc)

OUTSIDE = 0x1000                    # no RAM or device there


def loop(tx, g):
    tx.put_desc(0, g.buffer(b"a"), 1, VIRTQ_DESC_F_NEXT, 1)
    tx.put_desc(1, g.buffer(b"b"), 1, VIRTQ_DESC_F_NEXT, 0)
    tx.publish(0)


def next_range(tx, g):
    tx.put_desc(0, g.buffer(b"a"), 1, VIRTQ_DESC_F_NEXT, tx.num)
    tx.publish(0)


def head_range(tx, g):
    tx.publish(tx.num)


def avail_jump(tx, g):
    tx.put_desc(0, g.buffer(b"a"), 1)
    tx.set_avail_idx(tx.num + 1)


def order(tx, g):
    tx.put_desc(0, g.alloc(4, 16), 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    tx.put_desc(1, g.buffer(b"r"), 1)
    tx.publish(0)


def too_long(tx, g):
    tx.put_desc(0, g.alloc(16, 16), 0x8000_0000, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    tx.put_desc(1, g.alloc(16, 16), 0x8000_0001, VIRTQ_DESC_F_WRITE)           # 2^32 + 1 bytes in all
    tx.publish(0)


def addr_range(tx, g):
    tx.put_desc(0, 2**64 - 4, 8)
    tx.publish(0)


def buffer_outside(tx, g):
    tx.put_desc(0, OUTSIDE, 4)
    tx.publish(0)


def indirect_table(entries: list[bytes], length: int | None = None, flags: int = VIRTQ_DESC_F_INDIRECT):
    def build(tx, g):
        table = g.alloc(16 * max(len(entries), 1), 16)
        g.bus.write_bytes(table, b"".join(entries))
        tx.put_desc(0, table, 16 * len(entries) if length is None else length, flags)
        tx.publish(0)
    return build


def chained(n: int, addr: int) -> list[bytes]:
    return [pack_desc(addr, 1, VIRTQ_DESC_F_NEXT if i < n - 1 else 0, i + 1) for i in range(n)]


def indirect_outside(tx, g):
    tx.put_desc(0, OUTSIDE, 32, VIRTQ_DESC_F_INDIRECT)
    tx.publish(0)


RING_CASES = {
    RingFault.LOOP: loop,
    RingFault.NEXT_RANGE: next_range,
    RingFault.HEAD_RANGE: head_range,
    RingFault.AVAIL_JUMP: avail_jump,
    RingFault.ORDER: order,
    RingFault.TOO_LONG: too_long,
    RingFault.ADDR_RANGE: addr_range,
    RingFault.BUFFER_UNREACHABLE: buffer_outside,
    RingFault.DESC_UNREACHABLE: indirect_outside,
    RingFault.INDIRECT_SIZE: indirect_table([pack_desc(0x4000_0000, 1)], length=17),
    RingFault.INDIRECT_NEXT: indirect_table([pack_desc(0x4000_0000, 1)], flags=VIRTQ_DESC_F_INDIRECT | 1),
    RingFault.INDIRECT_NESTED: indirect_table([pack_desc(0x4000_0000, 16, VIRTQ_DESC_F_INDIRECT)]),
    RingFault.TOO_MANY: indirect_table(chained(1100, 0x4000_0000)),
}


def assert_error_state(c: ConsoleRig, fault: RingFault, queue: int = 1):
    dev, t = c.console, c.t
    assert dev.errors[fault.value] == 1 and dev.broken
    assert all(vq.halted for vq in dev.vqs)
    [err] = c.rig.events("virtio_error")
    assert (err["reason"], err["queue"]) == (fault.value, queue)
    if t.legacy:
        assert not dev.status & Status.DEVICE_NEEDS_RESET and not dev.isr & INT_CONFIG
    else:
        assert dev.status & Status.DEVICE_NEEDS_RESET
        assert dev.isr & INT_CONFIG and c.rig.irqs[-1] == 1 and t.irq_level == 1
    assert any("guest_errors" == cat and fault.value in msg for cat, msg in c.rig.logs)


def assert_recovers(c: ConsoleRig):
    c.drv.w(0x70, 0)                     # reset
    assert c.console.status == 0 and not c.console.broken and c.t.irq_level == 0
    rx, tx = c.up()
    tx.add([b"1q"])
    tx.kick()
    assert c.testdev.exit_code == 1 and c.testdev.exit_status == 3


@pytest.mark.parametrize("fault", list(RING_CASES), ids=lambda f: f.name)
def test_each_malformed_ring_puts_the_device_in_its_error_state(console, fault):
    rx, tx = console.up()
    RING_CASES[fault](tx, console.rig.guest)
    tx.kick()
    assert_error_state(console, fault)
    assert console.out == b""                                 # nothing reached the backend
    # a broken device ignores further notifications and pops nothing
    tx.add([b"9q"])
    tx.kick()
    assert console.rig.events("virtio_queue_notify")[-1]["handled"] == 0
    assert console.testdev.exit_code is None and tx.used() == []
    assert_recovers(console)


def test_indirect_without_the_feature(modern):
    rx, tx = modern.up(wanted=F_VERSION_1)                    # INDIRECT_DESC not accepted
    indirect_table([pack_desc(modern.rig.guest.buffer(b"x"), 1)])(tx, modern.rig.guest)
    tx.kick()
    assert_error_state(modern, RingFault.INDIRECT_FEATURE)


@pytest.mark.parametrize("num", [0, 3, 2048])
def test_bad_queue_size_at_enable(modern, num):
    d = modern.drv
    d.init()
    d.w(QUEUE_SEL, 1)
    d.w(QUEUE_NUM, num)
    g = modern.rig.guest
    d.program_rings(g.alloc(4096, 16), g.alloc(4096, 2), g.alloc(4096, 4))
    d.w(QUEUE_READY, 1)
    assert not d.r(QUEUE_READY)
    assert modern.console.errors[RingFault.QUEUE_SIZE.value] == 1
    assert modern.console.status & Status.DEVICE_NEEDS_RESET


@pytest.mark.parametrize("rings,fault", [
    ((0x4010_0008, 0x4020_0000, 0x4030_0000), RingFault.MISALIGNED),
    ((OUTSIDE, 0x4020_0000, 0x4030_0000), RingFault.RING_UNREACHABLE),
    ((0x4010_0000, 0x4020_0000, 0x8000_0000), RingFault.RING_UNREACHABLE),
])
def test_bad_ring_addresses_at_enable(modern, rings, fault):
    d = modern.drv
    d.init()
    d.w(QUEUE_SEL, 0)
    d.w(QUEUE_NUM, 16)
    d.program_rings(*rings)
    d.w(QUEUE_READY, 1)
    assert not d.r(QUEUE_READY) and modern.console.errors[fault.value] == 1
    d.w(QUEUE_DESC_LOW, 0x4010_0000)                           # still configurable after the refusal


def test_legacy_bad_queue_align(legacy):
    d = legacy.drv
    d.init()
    d.w(QUEUE_SEL, 0)
    d.w(QUEUE_NUM, 16)
    d.w(0x03C, 3000)                                          # QueueAlign not a power of 2
    d.w(0x040, 0x40100)
    assert not d.r(0x040) and legacy.console.errors[RingFault.MISALIGNED.value] == 1
    assert not legacy.console.status & Status.DEVICE_NEEDS_RESET


class HoldingDevice(VirtioDevice):
    """Pops chains and keeps them (a device whose requests complete later)."""
    device_id = 0x7F

    def __init__(self, memory, tracer, log):
        super().__init__(memory, queue_sizes=[4], tracer=tracer, log=log, name="hold")
        self.held = []

    def handle_queue(self, vq):
        while (c := vq.pop()) is not None:
            self.held.append(c)


def test_more_chains_in_flight_than_the_queue_size():
    rig = make_rig(HoldingDevice)
    d = rig.driver
    d.init()
    q = d.setup_queue(0, 4)
    d.driver_ok()
    for _ in range(4):
        q.put_desc(0, rig.guest.buffer(b"x"), 1)
        q.publish(0)                                          # the same head again and again
    q.kick()
    assert len(rig.device.held) == 4 and not rig.device.broken
    q.publish(0)
    q.kick()
    assert rig.device.errors[RingFault.SIZE_EXCEEDED.value] == 1 and rig.device.broken


class FlakyMemory:
    """Guest memory whose writes to [lo, hi) fail (an IOMMU mapping removed behind the device's back)."""

    def __init__(self, bus, lo=0, hi=0):
        self.bus, self.lo, self.hi = bus, lo, hi

    def read_bytes(self, addr, size):
        return self.bus.read_bytes(addr, size)

    def write_bytes(self, addr, data):
        if addr < self.hi and addr + len(data) > self.lo:
            raise BusError(addr, len(data), "unmapped by the IOMMU")
        self.bus.write_bytes(addr, data)


def test_used_ring_unmapped_after_enable():
    from devmodel.virtio import VirtioConsole
    guest = Guest()
    mem = FlakyMemory(guest.bus)
    rig = make_rig(lambda _m, tracer, log: VirtioConsole(mem, tracer=tracer, log=log), guest=guest)
    d = rig.driver
    d.init()
    d.setup_queue(0)
    tx = d.setup_queue(1)
    d.driver_ok()
    mem.lo, mem.hi = tx.used_ring, tx.used_ring + 4096
    tx.add([b"x"])
    tx.kick()
    assert rig.device.errors[RingFault.RING_UNREACHABLE.value] == 1
    assert rig.device.status & Status.DEVICE_NEEDS_RESET


NO_MULTIPORT = ~VIRTIO_CONSOLE_F_MULTIPORT & (2**64 - 1)


def test_receive_buffer_outside_memory_fails_at_write(modern):
    rx, tx = modern.up(NO_MULTIPORT)                            # DRIVER_OK opens port 0 for the guest
    rx.put_desc(0, OUTSIDE, 8, VIRTQ_DESC_F_WRITE)
    rx.publish(0)
    assert modern.console.write_to_guest(b"hello") == 0
    assert modern.console.errors[RingFault.BUFFER_UNREACHABLE.value] == 1 and modern.console.broken


def test_wrong_direction_buffers_are_returned_empty(modern):
    rx, tx = modern.up(NO_MULTIPORT)
    tx.add([b"ab"], [4])                                       # device-writable part in a transmitq
    tx.kick()
    assert modern.out == b"ab" and tx.used()[0].len == 0
    rx.add([b"readable"])                                      # device-readable buffer in a receiveq
    rx.add([], [8])
    assert modern.console.write_to_guest(b"hi") == 2
    first, second = rx.used()
    assert first.len == 0 and (second.len, second.data) == (2, b"hi")
    assert modern.console.errors["wrong_direction"] == 2 and not modern.console.broken


def test_features_ok_with_version1_missing_or_unoffered_bits_is_refused(modern):
    d = modern.drv
    for features in (0, F_INDIRECT_DESC, F_VERSION_1 | 1):       # no VERSION_1; no VERSION_1; SIZE not offered
        d.w(0x70, 0)
        d.add_status(Status.ACKNOWLEDGE | Status.DRIVER)
        d.write_features(features)
        d.add_status(Status.FEATURES_OK)
        assert not d.status() & Status.FEATURES_OK
    assert [r["refused"] for r in modern.rig.events("virtio_set_status") if r["refused"]] == [8, 8, 8]
