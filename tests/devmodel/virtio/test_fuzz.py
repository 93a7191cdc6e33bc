"""Property: whatever a driver does -- random register accesses of any size and offset, random descriptors
and ring indices, random bytes over the rings -- the transport and the console never raise, and stay
consistent: InterruptStatus holds only defined bits, the interrupt line follows it, DEVICE_NEEDS_RESET only
on the modern interface, in-flight counts within the queue size.

The default suite runs a bounded number of examples; `-m slow` runs a long campaign."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.virtio import Status
from devmodel.virtio.constants import INT_CONFIG, INT_VRING

from .conftest import ConsoleRig
from .driver import RAM_BASE

REGION = RAM_BASE + 0x10_0000          # where the driver helper allocates rings and buffers
REGION_SIZE = 0x4_0000
OFFSETS = [0x000, 0x004, 0x008, 0x010, 0x014, 0x020, 0x024, 0x028, 0x030, 0x034, 0x038, 0x03C, 0x040, 0x044,
           0x050, 0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4, 0x0AC, 0x0B0, 0x0C0, 0x0FC,
           0x100, 0x104, 0x108, 0x10A, 0x1FC, 0x003, 0x0F0]
U32 = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8, 15, 16, 0xF, 0xB, 128, 1024, 0xFFFF_FFFF]),
                st.integers(0, 2**32 - 1))
ADDR = st.one_of(st.integers(REGION, REGION + REGION_SIZE - 1), st.integers(0, 2**64 - 1),
                 st.just(2**64 - 8))

mmio_w = st.tuples(st.just("w"), st.sampled_from(OFFSETS), st.sampled_from([1, 2, 4, 8]), U32)
mmio_r = st.tuples(st.just("r"), st.sampled_from(OFFSETS), st.sampled_from([1, 2, 4, 8]))
desc = st.tuples(st.just("desc"), st.integers(0, 3), st.integers(0, 3), ADDR,
                 st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)), st.integers(0, 7),
                 st.one_of(st.integers(0, 3), st.integers(0, 20)))
# publish `head`, move the available index by 1..3 (mostly) or anywhere, and kick (mostly)
avail = st.tuples(st.just("avail"), st.integers(0, 3), st.one_of(st.integers(1, 3), st.integers(0, 2**16 - 1)),
                  st.one_of(st.integers(0, 3), st.integers(0, 20)), st.booleans())
noise = st.tuples(st.just("mem"), st.integers(0, REGION_SIZE - 64), st.binary(min_size=1, max_size=64))
kick = st.tuples(st.just("kick"), st.one_of(st.integers(0, 3), st.integers(0, 70)))
host = st.tuples(st.just("host"), st.binary(max_size=40))
reinit = st.just(("reinit",))
# ring operations weigh three times the register ones, so chains get far enough to meet every check
OPS = st.lists(st.one_of(mmio_w, mmio_r, desc, desc, desc, avail, avail, avail, noise, kick, host, reinit),
               max_size=50)


def bring_up(c: ConsoleRig, multiport: bool) -> list:
    """Reset and initialize like Linux; the driver queues (num 16) the ops then abuse."""
    c.drv.init(None if multiport else (2**64 - 1) & ~2)
    queues = [c.drv.setup_queue(i, 16) for i in ((0, 1, 2, 3) if multiport else (0, 1))]
    c.drv.driver_ok()
    return queues


def apply(c: ConsoleRig, queues, op) -> None:
    kind = op[0]
    if kind == "reinit":
        queues[:] = bring_up(c, len(queues) == 4)
    elif kind == "w":
        c.t.write(op[1], op[3], op[2])
    elif kind == "r":
        c.t.read(op[1], op[2])
    elif kind == "desc":
        q = queues[op[1] % len(queues)]
        q.put_desc(op[2] % q.num, *op[3:])
    elif kind == "avail":
        q = queues[op[1] % len(queues)]
        q.guest.w16(q.avail + 4 + 2 * (q.avail_idx % q.num), op[3])
        q.set_avail_idx(q.avail_idx + op[2] if op[2] <= 3 else op[2])
        if op[4]:
            c.t.write(0x050, q.index, 4)
    elif kind == "mem":
        c.rig.guest.bus.write_bytes(REGION + op[1], op[2])
    elif kind == "kick":
        c.t.write(0x050, op[1], 4)
    elif kind == "host":
        c.console.write_to_guest(op[1])


def check(c: ConsoleRig) -> None:
    dev = c.console
    assert dev.isr & ~(INT_VRING | INT_CONFIG) == 0
    assert c.t.irq_level == int(dev.isr != 0)
    assert not (c.t.legacy and dev.status & Status.DEVICE_NEEDS_RESET)
    for vq in dev.vqs:
        assert 0 <= vq.inflight <= max(vq.num, 0) or not vq.ready
        assert not vq.ready or (vq.num and not vq.num & (vq.num - 1))
    if dev.broken:
        assert all(vq.halted for vq in dev.vqs if vq.ready)


def run(legacy: bool, multiport: bool, ops) -> None:
    c = ConsoleRig(legacy=legacy)
    queues = bring_up(c, multiport)
    for op in ops:
        apply(c, queues, op)
        check(c)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legacy=st.booleans(), multiport=st.booleans(), ops=OPS)
def test_random_driver_behaviour_never_raises(legacy, multiport, ops):
    run(legacy, multiport, ops)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legacy=st.booleans(), multiport=st.booleans(), ops=OPS)
def test_random_driver_behaviour_never_raises_long(legacy, multiport, ops):
    run(legacy, multiport, ops)
