"""Split virtqueues (virtio v1.2 section 2.7), device side: layouts, geometry, chains, indirect tables, index
wrap, queue sizes up to 32768, notification suppression in both directions, device limits."""
from __future__ import annotations

import ctypes

import pytest

from devmodel.trace import ListSink, Tracer
from devmodel.virtio.constants import F_EVENT_IDX, F_INDIRECT_DESC, F_NOTIFY_ON_EMPTY, VIRTQUEUE_MAX_SIZE
from devmodel.virtio.ring import (DESC_LAYOUT, MAX_CHAIN_SEGMENTS, USED_ELEM_LAYOUT, VIRTQ_AVAIL_F_NO_INTERRUPT,
                                  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
                                  VIRTQ_USED_F_NO_NOTIFY, RingAddrs, RingFault, Virtqueue, check_layout,
                                  legacy_layout, need_event, ring_sizes)

from .driver import DriverQueue, Guest


class Q:
    """A Virtqueue on its own, with the driver half and a record of the faults it reported."""

    def __init__(self, num=8, features=0, num_max=None, max_readable=1 << 20, guest=None):
        self.guest = guest or Guest()
        self.faults: list[RingFault] = []
        self.sink = ListSink()
        tracer = Tracer(sinks=[self.sink])
        tracer.enable("virtqueue_*")
        self.vq = Virtqueue(0, self.guest.bus, num_max or num, on_error=lambda q, f: self.faults.append(f),
                            tracer=tracer, dev="t", max_readable=max_readable)
        d, a, u = ring_sizes(num)
        addrs = RingAddrs(self.guest.alloc(d, 16), self.guest.alloc(a, 2), self.guest.alloc(u, 4))
        assert self.vq.enable(num, addrs) is None
        self.vq.features = features
        self.dq = DriverQueue(self.guest, None, 0, num, addrs.desc, addrs.avail, addrs.used)


# -- layouts and geometry ---------------------------------------------------------------------------------
class VringDesc(ctypes.LittleEndianStructure):            # Linux include/uapi/linux/virtio_ring.h
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint32), ("flags", ctypes.c_uint16),
                ("next", ctypes.c_uint16)]


class VringUsedElem(ctypes.LittleEndianStructure):
    _fields_ = [("id", ctypes.c_uint32), ("len", ctypes.c_uint32)]


@pytest.mark.parametrize("layout,struct", [(DESC_LAYOUT, VringDesc), (USED_ELEM_LAYOUT, VringUsedElem)])
def test_layouts_are_the_c_structures(layout, struct):
    assert layout.nbytes == ctypes.sizeof(struct)
    for name, _ in struct._fields_:
        f = layout.by_name[name]
        member = getattr(struct, name)
        assert (f.lsb // 8, f.width // 8) == (member.offset, member.size), name
    # a value packed by the layout reads back through the C structure
    raw = layout.to_bytes(layout.pack({n: i + 1 for i, (n, _) in enumerate(struct._fields_)}))
    c = struct.from_buffer_copy(raw)
    assert [getattr(c, n) for n, _ in struct._fields_] == list(range(1, len(struct._fields_) + 1))


def test_flag_values_are_linuxs():
    assert (VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT) == (1, 2, 4)
    assert VIRTQ_AVAIL_F_NO_INTERRUPT == VIRTQ_USED_F_NO_NOTIFY == 1


def test_part_sizes_are_the_spec_table():
    assert ring_sizes(1) == (16, 8, 14)
    assert ring_sizes(256) == (4096, 518, 2054)


@pytest.mark.parametrize("num,align,avail,used", [
    (128, 4096, 2048, 4096),        # kvm-unit-tests' queue: used ring on the next page (QEMU transcript)
    (256, 4096, 4096, 8192),
    (16, 64, 256, 320),             # 256 + 6 + 32 = 294 -> 320
    (1, 4, 16, 24),                 # 16 + 6 + 2 = 24
])
def test_legacy_layout(num, align, avail, used):
    base = 0x4000_0000
    assert legacy_layout(base, num, align) == RingAddrs(base, base + avail, base + used)


@pytest.mark.parametrize("num,addrs,fault", [
    (0, (0, 0, 0), RingFault.QUEUE_SIZE),
    (3, (0, 0, 0), RingFault.QUEUE_SIZE),
    (16, (0, 0, 0), RingFault.QUEUE_SIZE),          # above num_max 8
    (8, (8, 0, 0), RingFault.MISALIGNED),
    (8, (0, 1, 0), RingFault.MISALIGNED),
    (8, (0, 0, 2), RingFault.MISALIGNED),
    (8, (2**64 - 16, 0, 0), RingFault.RING_UNREACHABLE),
    (8, (0, 2, 4), None),
])
def test_check_layout(num, addrs, fault):
    assert check_layout(num, 8, RingAddrs(*addrs)) is fault


def test_queue_size_limit_is_32768():
    assert check_layout(VIRTQUEUE_MAX_SIZE, VIRTQUEUE_MAX_SIZE, RingAddrs(0, 0, 0)) is None
    assert check_layout(65536, 65536, RingAddrs(0, 0, 0)) is RingFault.QUEUE_SIZE
    with pytest.raises(ValueError):
        Virtqueue(0, Guest().bus, 65536, on_error=lambda q, f: None)


def test_need_event_follows_the_spec_example():
    # used_event 0: notify after the first buffer, not after the second, again once idx passes 0 after wrap
    assert need_event(0, 1, 0)
    assert not need_event(0, 2, 1)
    assert not need_event(0, 0, 0xFFFF)
    assert need_event(0, 1, 0xFFFF)                # a batch of two crossing the wrap
    assert need_event(5, 7, 3) and not need_event(5, 5, 3)


def test_enable_refuses_rings_outside_memory():
    vq = Virtqueue(0, Guest().bus, 8, on_error=lambda q, f: None)
    assert vq.enable(8, RingAddrs(0x1000, 0x4010_0000, 0x4010_1000)) is RingFault.RING_UNREACHABLE
    assert not vq.ready


# -- chains -------------------------------------------------------------------------------------------------
def test_pop_one_readable_buffer_and_push_it_back():
    q = Q()
    head = q.dq.add([b"hello"])
    assert q.vq.pending() == 1
    chain = q.vq.pop()
    assert (chain.head, chain.readable, chain.writable, chain.indirect) == (head, b"hello", (), False)
    assert q.vq.pop() is None
    assert q.vq.push(chain, 0)
    [used] = q.dq.used()
    assert (used.head, used.len) == (head, 0)
    assert q.vq.inflight == 0 and not q.faults
    [pop] = q.sink.of("virtqueue_pop")
    assert (pop["head"], pop["out_num"], pop["in_num"], pop["readable"], pop["writable"]) == (head, 1, 0, 5, 0)
    [fill] = q.sink.of("virtqueue_fill")
    assert (fill["head"], fill["len"], fill["idx"]) == (head, 0, 1)


def test_readable_then_writable_chain_scatters_the_reply():
    q = Q()
    q.dq.add([b"req", b"uest"], [3, 5])
    chain = q.vq.pop()
    assert chain.readable == b"request" and chain.capacity == 8 and len(chain.writable) == 2
    assert q.vq.push(chain, b"abcdefg")
    [used] = q.dq.used()
    assert (used.len, used.data) == (7, b"abcdefg")


def test_push_a_count_the_device_wrote_itself():
    q = Q()
    q.dq.add([], [16])
    chain = q.vq.pop()
    q.guest.bus.write_bytes(chain.writable[0][0], b"x" * 4)
    assert q.vq.push(chain, 4)
    assert q.dq.used()[0].data == b"xxxx"


def test_pushing_more_than_the_writable_capacity_is_a_device_bug():
    q = Q()
    q.dq.add([b"r"], [2])
    chain = q.vq.pop()
    with pytest.raises(ValueError):
        q.vq.push(chain, b"abc")
    with pytest.raises(ValueError):
        q.vq.push(chain, -1)


def test_indirect_table_with_both_directions():
    q = Q(features=F_INDIRECT_DESC)
    q.dq.add([b"in", b"direct"], [4], indirect=True)
    chain = q.vq.pop()
    assert chain.indirect and chain.readable == b"indirect" and chain.capacity == 4
    assert q.vq.push(chain, b"ok")
    assert q.dq.used()[0].data == b"ok"


def test_normal_descriptors_followed_by_an_indirect_one():
    """Spec 2.7.5.3.2: the device MUST handle zero or more chained descriptors then one indirect."""
    q = Q(features=F_INDIRECT_DESC)
    g = q.guest
    table = g.alloc(32, 16)
    q.dq.put_desc(0, g.buffer(b"b"), 1, 0, 0, table=table)
    q.dq.put_desc(0, g.buffer(b"a"), 1, VIRTQ_DESC_F_NEXT, 1)
    q.dq.put_desc(1, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)   # WRITE ignored here
    q.dq.publish(0)
    chain = q.vq.pop()
    assert chain.readable == b"ab" and chain.indirect and not q.faults


def test_zero_length_buffers_are_accepted():
    q = Q()
    q.dq.add([b""], [0])
    chain = q.vq.pop()
    assert chain.readable == b"" and chain.capacity == 0 and q.vq.push(chain, 0)


def test_chains_are_used_in_any_order():
    q = Q()
    heads = [q.dq.add([bytes([i])], [1]) for i in range(3)]
    chains = [q.vq.pop() for _ in heads]
    for c in reversed(chains):
        q.vq.push(c, c.readable)
    used = q.dq.used()
    assert [u.head for u in used] == heads[::-1] and [u.data for u in used] == [b"\x02", b"\x01", b"\x00"]


@pytest.mark.parametrize("start", [0xFFF0, 0xFFFE, 0x7FFF])
def test_sixteen_bit_indices_wrap(start):
    q = Q(num=4)
    q.vq.last_avail_idx = q.vq.used_idx = start          # as after `start` chains went through
    q.dq.avail_idx = q.dq.last_used = start
    q.guest.w16(q.dq.avail + 2, start)
    q.guest.w16(q.dq.used_ring + 2, start)
    for i in range(40):
        q.dq.add([b"%d" % i], [2])
        chain = q.vq.pop()
        assert chain.readable == b"%d" % i
        q.vq.push(chain, b"ok")
        [used] = q.dq.used()
        assert used.data == b"ok"
    assert q.vq.used_idx == (start + 40) & 0xFFFF == q.dq.used_idx() and not q.faults


@pytest.mark.slow
def test_a_full_wrap_of_the_indices_one_chain_at_a_time():
    q = Q(num=2)
    for i in range(65536 + 10):
        q.dq.add([b"x"])
        q.vq.push(q.vq.pop(), 0)
        q.dq.used()
    assert q.vq.used_idx == 10 and not q.faults


def test_queue_of_32768_entries():
    q = Q(num=VIRTQUEUE_MAX_SIZE)
    q.vq.last_avail_idx = q.vq.used_idx = 32766
    q.dq.avail_idx = q.dq.last_used = 32766
    q.dq.free = [32767, 32766, 0]
    for _ in range(3):                                    # slots 32766, 32767, then 0 of both rings
        q.dq.add([b"big"])
        q.vq.push(q.vq.pop(), 0)
    used = q.dq.used()
    assert [u.head for u in used] == [32767, 32766, 0] and not q.faults


# -- notification suppression -------------------------------------------------------------------------------
def test_no_interrupt_flag_without_event_idx():
    q = Q()
    q.dq.add([b"a"])
    q.vq.push(q.vq.pop(), 0)
    assert q.vq.should_notify()
    q.dq.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    assert not q.vq.should_notify()


def test_notify_on_empty_overrides_no_interrupt():
    q = Q(features=F_NOTIFY_ON_EMPTY)
    q.dq.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    q.dq.add([b"a"])
    q.dq.add([b"b"])
    q.vq.push(q.vq.pop(), 0)
    assert not q.vq.should_notify()                       # one chain still available
    q.vq.push(q.vq.pop(), 0)
    assert q.vq.should_notify()                           # ran out of available buffers


def test_event_idx_used_event():
    q = Q(features=F_EVENT_IDX)
    q.dq.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)      # ignored with EVENT_IDX (2.7.7.2)
    q.dq.set_used_event(2)
    results = []
    for _ in range(4):
        q.dq.add([b"x"])
        q.vq.push(q.vq.pop(), 0)
        results.append(q.vq.should_notify())
    # the first is always signalled (QEMU signalled_used_valid), then only when idx passes used_event 2
    assert results == [True, False, True, False]


def test_event_idx_avail_event_is_written_at_pop():
    q = Q(features=F_EVENT_IDX)
    for n in (1, 2, 3):
        q.dq.add([b"x"])
        q.vq.pop()
        assert q.dq.avail_event() == n


def test_set_notification_without_event_idx_uses_used_flags():
    q = Q()
    q.vq.set_notification(False)
    assert q.dq.used_flags() == VIRTQ_USED_F_NO_NOTIFY
    q.vq.set_notification(True)
    assert q.dq.used_flags() == 0


def test_set_notification_with_event_idx_uses_avail_event():
    q = Q(features=F_EVENT_IDX)
    q.dq.add([b"x"])
    q.dq.add([b"y"])
    q.vq.set_notification(False)
    q.vq.pop()
    assert q.dq.avail_event() == 0 and q.dq.used_flags() == 0       # not written while disabled
    q.vq.set_notification(True)
    assert q.dq.avail_event() == 2                                   # the driver's current index


# -- device limits and stale chains -------------------------------------------------------------------------
def test_chain_over_max_readable_is_returned_unprocessed():
    q = Q(max_readable=8)
    big = q.dq.add([b"0123456789"])
    small = q.dq.add([b"ok"])
    chain = q.vq.pop()
    assert chain.head == small and chain.readable == b"ok"
    [dropped] = q.dq.used()
    assert (dropped.head, dropped.len) == (big, 0)
    assert q.vq.stats["dropped"] == 1 and q.sink.of("virtqueue_drop")[0]["head"] == big and not q.faults


def test_max_chain_segments_is_accepted():
    q = Q(num=1024, features=F_INDIRECT_DESC)
    q.dq.add([b"x"] * (MAX_CHAIN_SEGMENTS - 1), [1], indirect=True)
    chain = q.vq.pop()
    assert chain is not None and len(chain.readable_segments) == MAX_CHAIN_SEGMENTS - 1 and not q.faults


def test_push_after_reset_is_stale():
    q = Q()
    q.dq.add([b"a"], [1])
    chain = q.vq.pop()
    used_before = q.guest.bus.read_bytes(q.dq.used_ring, 16)
    q.vq.reset()
    assert not q.vq.push(chain, b"z")
    assert q.guest.bus.read_bytes(q.dq.used_ring, 16) == used_before and q.vq.stats["stale_push"] == 1


def test_a_halted_queue_pops_nothing():
    q = Q()
    q.dq.add([b"a"])
    q.vq.halted = True
    assert q.vq.pop() is None and q.vq.pending() == 0
