"""A small virtio driver in Python, for the device-model tests (and the next device on the transport).

`Guest` is guest RAM on a `Bus` with a bump allocator. `MmioDriver` talks to a `VirtioMmio` through its
registers the way Linux's drivers/virtio/virtio_mmio.c and virtio.c do (probe, reset, ACKNOWLEDGE, DRIVER,
feature negotiation with FEATURES_OK, queue setup, DRIVER_OK, interrupt acknowledge), for both the Version 2
and the legacy Version 1 interface. `DriverQueue` is the driver half of a split virtqueue (Linux
virtio_ring.c reduced to what tests need): `add()` buffers, `kick()`, `used()` -- plus raw access to every
ring field so tests can build what a hostile driver would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from devmodel.bus import Bus
from devmodel.virtio.constants import F_VERSION_1, Status
from devmodel.virtio.mmio import CONFIG_OFFSET, MAGIC_VALUE, VirtioMmio
from devmodel.virtio.ring import (VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, RingAddrs,
                                  legacy_layout, ring_sizes)

RAM_BASE = 0x4000_0000
RAM_SIZE = 16 << 20
PAGE = 4096

# register offsets (spec 4.2.2 / 4.2.4)
MAGIC, VERSION, DEVICE_ID, VENDOR_ID = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL, DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x010, 0x014, 0x020, 0x024
GUEST_PAGE_SIZE, QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM = 0x028, 0x030, 0x034, 0x038
QUEUE_ALIGN, QUEUE_PFN, QUEUE_READY, QUEUE_NOTIFY = 0x03C, 0x040, 0x044, 0x050
INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x080, 0x084, 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
SHM_SEL, SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH = 0x0AC, 0x0B0, 0x0B4, 0x0B8, 0x0BC
QUEUE_RESET, CONFIG_GENERATION = 0x0C0, 0x0FC


class Guest:
    """Guest RAM at RAM_BASE on a fresh Bus, with a page-aligned bump allocator."""

    def __init__(self, size: int = RAM_SIZE):
        self.bus = Bus()
        self.bus.add_ram(RAM_BASE, size)
        self.next = RAM_BASE + 0x10_0000
        self.end = RAM_BASE + size

    def alloc(self, size: int, align: int = PAGE) -> int:
        addr = (self.next + align - 1) & ~(align - 1)
        self.next = addr + size
        assert self.next <= self.end, "guest RAM exhausted"
        self.bus.write_bytes(addr, bytes(size))
        return addr

    def buffer(self, data: bytes) -> int:
        addr = self.alloc(max(len(data), 1), 16)
        self.bus.write_bytes(addr, data)
        return addr

    def w16(self, addr: int, v: int) -> None:
        self.bus.write(addr, v & 0xFFFF, 2)

    def r16(self, addr: int) -> int:
        return self.bus.read(addr, 2)

    def r32(self, addr: int) -> int:
        return self.bus.read(addr, 4)


def pack_desc(addr: int, length: int, flags: int = 0, nxt: int = 0) -> bytes:
    return (addr.to_bytes(8, "little") + length.to_bytes(4, "little") + flags.to_bytes(2, "little")
            + nxt.to_bytes(2, "little"))


@dataclass
class Used:
    head: int
    len: int
    data: bytes = b""          # the first `len` bytes of the chain's device-writable buffers


@dataclass
class DriverQueue:
    """Driver half of a split virtqueue at `desc`/`avail`/`used` with `num` entries."""
    guest: Guest
    drv: "MmioDriver | None"
    index: int
    num: int
    desc: int
    avail: int
    used_ring: int
    avail_idx: int = 0
    last_used: int = 0
    free: list[int] = field(default_factory=list)
    inflight: dict[int, tuple[list[int], list[tuple[int, int]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = list(range(self.num))

    # -- raw ring access (hostile drivers build rings with these) -----------------------------------------
    def put_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0, table: int | None = None):
        base = self.desc if table is None else table
        self.guest.bus.write_bytes(base + 16 * i, pack_desc(addr, length, flags, nxt))

    def publish(self, head: int) -> None:
        """Put `head` in the next available slot and advance the available index."""
        self.guest.w16(self.avail + 4 + 2 * (self.avail_idx % self.num), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.guest.w16(self.avail + 2, self.avail_idx)

    def set_avail_idx(self, v: int) -> None:
        self.avail_idx = v & 0xFFFF
        self.guest.w16(self.avail + 2, self.avail_idx)

    def set_avail_flags(self, v: int) -> None:
        self.guest.w16(self.avail, v)

    def set_used_event(self, v: int) -> None:
        self.guest.w16(self.avail + 4 + 2 * self.num, v)

    def used_idx(self) -> int:
        return self.guest.r16(self.used_ring + 2)

    def used_flags(self) -> int:
        return self.guest.r16(self.used_ring)

    def avail_event(self) -> int:
        return self.guest.r16(self.used_ring + 4 + 8 * self.num)

    def used_elem(self, slot: int) -> tuple[int, int]:
        a = self.used_ring + 4 + 8 * (slot % self.num)
        return self.guest.r32(a), self.guest.r32(a + 4)

    # -- what a driver does --------------------------------------------------------------------------------
    def add(self, out: list[bytes] = (), in_sizes: list[int] = (), indirect: bool = False) -> int:
        """Expose a chain of device-readable `out` buffers then device-writable buffers of `in_sizes`;
        returns its head. With `indirect`, one descriptor points at an indirect table."""
        segs = [(self.guest.buffer(b), len(b), 0) for b in out]
        writable = [(self.guest.alloc(n, 16), n) for n in in_sizes]
        segs += [(a, n, VIRTQ_DESC_F_WRITE) for a, n in writable]
        assert segs, "a chain needs at least one buffer"
        if indirect:
            table = self.guest.alloc(16 * len(segs), 16)
            for i, (a, n, f) in enumerate(segs):
                last = i == len(segs) - 1
                self.put_desc(i, a, n, f | (0 if last else VIRTQ_DESC_F_NEXT), 0 if last else i + 1, table=table)
            used_descs = [self.free.pop(0)]
            self.put_desc(used_descs[0], table, 16 * len(segs), VIRTQ_DESC_F_INDIRECT)
        else:
            used_descs = [self.free.pop(0) for _ in segs]
            for k, ((a, n, f), d) in enumerate(zip(segs, used_descs)):
                last = k == len(segs) - 1
                self.put_desc(d, a, n, f | (0 if last else VIRTQ_DESC_F_NEXT), 0 if last else used_descs[k + 1])
        head = used_descs[0]
        self.inflight[head] = (used_descs, writable)
        self.publish(head)
        return head

    def kick(self) -> None:
        assert self.drv is not None
        self.drv.w(QUEUE_NOTIFY, self.index)

    def used(self) -> list[Used]:
        """Collect the used elements published since the last call, returning their descriptors."""
        out = []
        while self.last_used != self.used_idx():
            head, length = self.used_elem(self.last_used)
            self.last_used = (self.last_used + 1) & 0xFFFF
            descs, writable = self.inflight.pop(head, ([], []))
            self.free.extend(descs)
            data, need = bytearray(), length
            for a, n in writable:
                take = min(n, need)
                data += self.guest.bus.read_bytes(a, take) if take else b""
                need -= take
            out.append(Used(head, length, bytes(data)))
        return out


class MmioDriver:
    """Linux-style driver for one virtio-mmio transport."""

    def __init__(self, transport: VirtioMmio, guest: Guest):
        self.t = transport
        self.guest = guest
        self.queues: dict[int, DriverQueue] = {}

    def r(self, off: int, size: int = 4) -> int:
        return self.t.read(off, size)

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.t.write(off, value, size)

    @property
    def version(self) -> int:
        return self.r(VERSION)

    def probe(self) -> int:
        """vm_probe: magic, version 1 or 2, DeviceID (0: no device); returns the device ID."""
        assert self.r(MAGIC) == MAGIC_VALUE
        assert self.version in (1, 2)
        dev = self.r(DEVICE_ID)
        if dev and self.version == 1:
            self.w(GUEST_PAGE_SIZE, PAGE)
        return dev

    def device_features(self) -> int:
        self.w(DEVICE_FEATURES_SEL, 1)
        hi = self.r(DEVICE_FEATURES)
        self.w(DEVICE_FEATURES_SEL, 0)
        return hi << 32 | self.r(DEVICE_FEATURES)

    def write_features(self, features: int) -> None:
        if self.version == 1:
            self.w(DRIVER_FEATURES_SEL, 0)
            self.w(DRIVER_FEATURES, features & 0xFFFF_FFFF)
            return
        self.w(DRIVER_FEATURES_SEL, 1)
        self.w(DRIVER_FEATURES, features >> 32)
        self.w(DRIVER_FEATURES_SEL, 0)
        self.w(DRIVER_FEATURES, features & 0xFFFF_FFFF)

    def status(self) -> int:
        return self.r(STATUS)

    def add_status(self, bits: int) -> None:
        self.w(STATUS, self.status() | bits)

    def init(self, wanted: int | None = None) -> int:
        """Reset, ACKNOWLEDGE, DRIVER, negotiate (all offered features unless `wanted` narrows them) and
        FEATURES_OK on Version 2; returns the negotiated features (0 if the device refused them)."""
        assert self.probe()
        self.w(STATUS, 0)
        assert self.status() == 0
        self.add_status(Status.ACKNOWLEDGE)
        self.add_status(Status.DRIVER)
        features = self.device_features()
        if wanted is not None:
            features &= wanted
        if self.version == 2:
            features |= F_VERSION_1 if wanted is None else 0
        self.write_features(features)
        if self.version == 2:
            self.add_status(Status.FEATURES_OK)
            if not self.status() & Status.FEATURES_OK:
                return 0
        return features

    def setup_queue(self, index: int, num: int | None = None) -> DriverQueue:
        """vm_setup_vq: select, check unused, read QueueNumMax, allocate, program, enable."""
        self.w(QUEUE_SEL, index)
        assert not self.r(QUEUE_PFN if self.version == 1 else QUEUE_READY)
        num_max = self.r(QUEUE_NUM_MAX)
        assert num_max, f"queue {index} not available"
        num = num or min(num_max, 256)
        if self.version == 1:
            desc = self.guest.alloc(2 * PAGE + sum(ring_sizes(num)), PAGE)
            addrs = legacy_layout(desc, num, PAGE)
            self.w(QUEUE_NUM, num)
            self.w(QUEUE_ALIGN, PAGE)
            self.w(QUEUE_PFN, desc // PAGE)
        else:
            d, a, u = ring_sizes(num)
            desc, avail, used = self.guest.alloc(d, 16), self.guest.alloc(a, 2), self.guest.alloc(u, 4)
            self.w(QUEUE_NUM, num)
            self.program_rings(desc, avail, used)
            self.w(QUEUE_READY, 1)
            addrs = RingAddrs(desc, avail, used)
        q = DriverQueue(self.guest, self, index, num, addrs.desc, addrs.avail, addrs.used)
        self.queues[index] = q
        return q

    def program_rings(self, desc: int, avail: int, used: int) -> None:
        for lo, v in ((QUEUE_DESC_LOW, desc), (QUEUE_DRIVER_LOW, avail), (QUEUE_DEVICE_LOW, used)):
            self.w(lo, v & 0xFFFF_FFFF)
            self.w(lo + 4, v >> 32)

    def driver_ok(self) -> None:
        self.add_status(Status.DRIVER_OK)

    def ack(self) -> int:
        """vm_interrupt: read InterruptStatus and acknowledge it."""
        isr = self.r(INTERRUPT_STATUS)
        self.w(INTERRUPT_ACK, isr)
        return isr

    def config(self, offset: int, size: int) -> int:
        return self.r(CONFIG_OFFSET + offset, size)

    def set_config(self, offset: int, value: int, size: int) -> None:
        self.w(CONFIG_OFFSET + offset, value, size)


@dataclass
class Rig:
    """A device on a transport, a driver for it, and what the device reported: trace records, interrupt
    levels, guest-error log lines."""
    guest: Guest
    device: object
    transport: VirtioMmio
    driver: MmioDriver
    sink: object
    irqs: list[int]
    logs: list[tuple[str, str]]

    def events(self, *names: str):
        return self.sink.of(*names)


def make_rig(make_device, *, legacy: bool = False, guest: Guest | None = None) -> Rig:
    """`make_device(memory, tracer, log)` builds the device; every trace event is recorded."""
    from devmodel.trace import ListSink, Tracer
    guest = guest or Guest()
    sink = ListSink()
    tracer = Tracer(sinks=[sink])
    tracer.enable_all()
    irqs: list[int] = []
    logs: list[tuple[str, str]] = []
    device = make_device(guest.bus, tracer, lambda cat, msg: logs.append((cat, msg)))
    transport = VirtioMmio(device, legacy=legacy, irq=irqs.append, tracer=tracer,
                           log=lambda cat, msg: logs.append((cat, msg)))
    return Rig(guest, device, transport, MmioDriver(transport, guest), sink, irqs, logs)
