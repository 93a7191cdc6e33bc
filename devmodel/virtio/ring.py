"""Split virtqueues (virtio v1.2 section 2.7), device side: one implementation for every virtio device.

A `Virtqueue` reads the driver's descriptor table and available ring and writes the used ring in guest memory
through a `DmaMemory` (`read_bytes` / `write_bytes` on the addresses the driver wrote, raising
`devmodel.bus.BusError` where the device cannot reach them). A `Bus` is one; an IOMMU-translating adapter
in front of a `Bus` is another, so the same queue works behind a virtio-iommu or an SMMU.

Device models use `pop() -> Chain | None` (the next descriptor chain: its device-readable bytes, read at pop
time, and the device-writable segments), `push(chain, written)` (bytes scattered into the writable part, or
a byte count the device wrote itself) and, after a batch, `should_notify()` (used buffer notification
suppression, 2.7.7). `set_notification()` suppresses available buffer notifications (2.7.10).

Hostile drivers: everything the driver controls is checked before it is used -- queue size and part
alignment (2.7, table "Virtqueue Part Alignment"), ring reachability at enable time (like QEMU's
"Cannot map desc/avail/used"), available index jumps, heads and `next` out of range, chain loops, chains
longer than 2^32 bytes (2.7.5.2), device-writable before device-readable (2.7.4.2), INDIRECT without the
feature, nested or with NEXT, tables whose length is not a multiple of 16 (2.7.5.3.1), descriptors past
2^64 or out of memory. Each is a `RingFault`: the queue reports it through `on_error(queue, fault)` (the
device enters its error state, spec 2.1.2) and pops nothing more. The names and the choice of "device
error" rather than "skip the chain" follow QEMU's hw/virtio/virtio.c (`virtio_error` in
`virtqueue_split_pop`). Beyond the spec, a device limit (2.7.4.1 allows "a reasonable limit"): at most
`MAX_CHAIN_SEGMENTS` buffers per chain (QEMU's VIRTQUEUE_MAX_SIZE iovec limit) and `max_readable` bytes
read per chain; a longer but well-formed chain is returned unprocessed with used length 0 (`virtqueue_drop`).

Endianness: little-endian, as the spec requires for VERSION_1 and as legacy (guest-native) is on AArch64
little-endian guests. Not modelled: packed virtqueues (VIRTIO_F_RING_PACKED), VIRTIO_F_IN_ORDER,
VIRTIO_F_NOTIFICATION_DATA, big-endian legacy guests, memory barriers (the model is synchronous).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol

from ..bus import BusError
from ..fields import Field, Layout, record_decoder, record_type
from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .constants import F_EVENT_IDX, F_INDIRECT_DESC, F_NOTIFY_ON_EMPTY, VIRTQUEUE_MAX_SIZE

__all__ = ["DmaMemory", "Chain", "Virtqueue", "RingFault", "RingAddrs", "Desc", "DESC_LAYOUT",
           "USED_ELEM_LAYOUT", "VIRTQ_DESC_F_NEXT", "VIRTQ_DESC_F_WRITE", "VIRTQ_DESC_F_INDIRECT",
           "VIRTQ_AVAIL_F_NO_INTERRUPT", "VIRTQ_USED_F_NO_NOTIFY", "MAX_CHAIN_SEGMENTS", "ring_sizes",
           "legacy_layout", "check_layout", "need_event"]

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

# struct virtq_desc and struct virtq_used_elem (spec 2.7.5, 2.7.8), little-endian
DESC_LAYOUT = Layout("virtq_desc", 128, (Field("ADDR", 0, 64), Field("LEN", 64, 32), Field("FLAGS", 96, 16),
                                          Field("NEXT", 112, 16)))
USED_ELEM_LAYOUT = Layout("virtq_used_elem", 64, (Field("ID", 0, 32), Field("LEN", 32, 32)))
DESC_SIZE = DESC_LAYOUT.nbytes

MAX_CHAIN_SEGMENTS = 1024            # QEMU hw/virtio/virtio.c VIRTQUEUE_MAX_SIZE (iovec entries per element)
DEFAULT_MAX_READABLE = 1 << 20
_U64_END = 1 << 64


class DmaMemory(Protocol):
    """What a virtqueue reads and writes guest memory through (a `Bus`, or an IOMMU in front of one)."""

    def read_bytes(self, addr: int, size: int) -> bytes: ...

    def write_bytes(self, addr: int, data: bytes) -> None: ...


class RingFault(str, Enum):
    """Driver errors a split virtqueue detects (value: the reason counted and traced)."""
    QUEUE_SIZE = "queue size not a power of 2 in 1..QueueNumMax"
    MISALIGNED = "ring part misaligned (desc 16, avail 2, used 4)"
    RING_UNREACHABLE = "ring outside guest memory"
    AVAIL_JUMP = "available index moved by more than the queue size"
    SIZE_EXCEEDED = "more chains in flight than the queue size"
    HEAD_RANGE = "available ring head >= queue size"
    NEXT_RANGE = "descriptor next >= table size"
    LOOP = "descriptor chain loops"
    TOO_MANY = "chain has more than MAX_CHAIN_SEGMENTS buffers"
    TOO_LONG = "chain longer than 2^32 bytes"
    ORDER = "device-readable buffer after a device-writable one"
    INDIRECT_FEATURE = "INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC"
    INDIRECT_NESTED = "INDIRECT descriptor inside an indirect table"
    INDIRECT_NEXT = "INDIRECT descriptor with NEXT"
    INDIRECT_SIZE = "indirect table length 0 or not a multiple of 16"
    ADDR_RANGE = "buffer extends past 2^64"
    DESC_UNREACHABLE = "descriptor table outside guest memory"
    BUFFER_UNREACHABLE = "buffer outside guest memory"


class _Fault(Exception):
    """Internal: carries a RingFault out of the chain walk; never leaves this module."""

    def __init__(self, fault: RingFault):
        super().__init__(fault.value)
        self.fault = fault


#: one descriptor table entry (addr, len, flags, next), generated from DESC_LAYOUT
Desc = record_type("Desc", DESC_LAYOUT, module=__name__)
_decode_desc = record_decoder(Desc, DESC_LAYOUT)


@dataclass(frozen=True)
class RingAddrs:
    desc: int
    avail: int
    used: int


@dataclass(frozen=True)
class Chain:
    """One descriptor chain as the device sees it. `readable` is the device-readable data (read at pop);
    `writable` the device-writable segments (address, length) the device may fill, `capacity` bytes."""
    head: int
    readable: bytes
    writable: tuple[tuple[int, int], ...]
    readable_segments: tuple[tuple[int, int], ...]
    indirect: bool
    epoch: int

    @property
    def capacity(self) -> int:
        return sum(n for _, n in self.writable)


# -- pure ring geometry and suppression arithmetic -------------------------------------------------------
def ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, available ring and used ring (spec 2.7, with the event fields)."""
    return DESC_SIZE * num, 6 + 2 * num, 6 + 8 * num


def legacy_layout(base: int, num: int, align: int) -> RingAddrs:
    """Legacy contiguous layout (spec 2.7.2): descriptors, available ring, used ring at the next `align`."""
    avail = base + DESC_SIZE * num
    used = (avail + 6 + 2 * num + align - 1) & ~(align - 1)
    return RingAddrs(base, avail, used)


def check_layout(num: int, num_max: int, addrs: RingAddrs) -> RingFault | None:
    """Queue size (a power of 2, at most QueueNumMax and 32768) and part alignment (spec 2.7)."""
    if not 0 < num <= min(num_max, VIRTQUEUE_MAX_SIZE) or num & (num - 1):
        return RingFault.QUEUE_SIZE
    if addrs.desc % 16 or addrs.avail % 2 or addrs.used % 4:
        return RingFault.MISALIGNED
    sizes = ring_sizes(num)
    if any(a + n > _U64_END for a, n in zip((addrs.desc, addrs.avail, addrs.used), sizes)):
        return RingFault.RING_UNREACHABLE
    return None


def need_event(event: int, new: int, old: int) -> bool:
    """vring_need_event (spec 2.7.7 / Linux include/uapi/linux/virtio_ring.h): has the used index passed
    `event` in the step from `old` to `new` (16-bit, wrapping)?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


# -- the queue -------------------------------------------------------------------------------------------
OnError = Callable[["Virtqueue", RingFault], None]


class Virtqueue:
    """One split virtqueue of a device. The transport configures it (`enable`, `reset`); the device pops,
    pushes and decides notifications. `halted` is set by the device when it enters its error state."""

    def __init__(self, index: int, memory: DmaMemory, num_max: int, *, on_error: OnError,
                 tracer: Tracer = NULL_TRACER, dev: str = "virtio", max_readable: int = DEFAULT_MAX_READABLE):
        if not 0 < num_max <= VIRTQUEUE_MAX_SIZE:
            raise ValueError(f"queue {index}: num_max {num_max} outside 1..{VIRTQUEUE_MAX_SIZE}")
        self.index = index
        self.memory = memory
        self.num_max = num_max
        self.on_error = on_error
        self.tracer = tracer
        self.dev = dev
        self.max_readable = max_readable
        self.features = 0
        self.stats: Counter[str] = Counter()
        self.epoch = 0
        self.reset()

    def reset(self) -> None:
        """Back to the state after device reset: not ready, no rings, indices 0 (spec 2.6.1.1.1)."""
        self.ready = False
        self.halted = False
        self.num = 0
        self.addrs = RingAddrs(0, 0, 0)
        self.last_avail_idx = 0
        self.used_idx = 0
        self.inflight = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.notification = True
        self.epoch += 1

    def enable(self, num: int, addrs: RingAddrs) -> RingFault | None:
        """Start using rings of `num` entries at `addrs`; a fault (the queue stays disabled) or None."""
        fault = check_layout(num, self.num_max, addrs) or self._probe(num, addrs)
        if fault is not None:
            return fault
        self.reset()
        self.num, self.addrs, self.ready = num, addrs, True
        return None

    def _probe(self, num: int, addrs: RingAddrs) -> RingFault | None:
        try:
            for a, n in zip((addrs.desc, addrs.avail, addrs.used), ring_sizes(num)):
                self.memory.read_bytes(a, n)
        except BusError:
            return RingFault.RING_UNREACHABLE
        return None

    # -- guest memory helpers ----------------------------------------------------------------------------
    def _r16(self, addr: int, fault: RingFault = RingFault.RING_UNREACHABLE) -> int:
        try:
            return int.from_bytes(self.memory.read_bytes(addr, 2), "little")
        except BusError:
            raise _Fault(fault) from None

    def _w(self, addr: int, value: int, size: int) -> None:
        try:
            self.memory.write_bytes(addr, value.to_bytes(size, "little"))
        except BusError:
            raise _Fault(RingFault.RING_UNREACHABLE) from None

    def _desc(self, table: int, i: int) -> Desc:
        try:
            raw = self.memory.read_bytes(table + DESC_SIZE * i, DESC_SIZE)
        except BusError:
            raise _Fault(RingFault.DESC_UNREACHABLE) from None
        return _decode_desc(int.from_bytes(raw, "little"))

    def _fail(self, fault: RingFault) -> None:
        self.stats["errors"] += 1
        self.on_error(self, fault)

    # -- device API ---------------------------------------------------------------------------------------
    def avail_idx(self) -> int | None:
        """The driver's available index, or None (queue not ready, or the ring is unreachable: a fault)."""
        if not self.ready or self.halted:
            return None
        try:
            return self._r16(self.addrs.avail + 2)
        except _Fault as f:
            self._fail(f.fault)
            return None

    def pending(self) -> int:
        """Chains the driver made available that the device has not popped (0 on error)."""
        idx = self.avail_idx()
        return 0 if idx is None else (idx - self.last_avail_idx) & 0xFFFF

    def pop(self) -> Chain | None:
        """The next available chain, or None (empty, not ready, halted, or a fault was just reported)."""
        while self.ready and not self.halted:
            try:
                head = self._next_head()
                if head is None:
                    return None
                readable, writable, indirect = self._walk(head)
                chain = self._collect(head, readable, writable, indirect)
            except _Fault as f:
                self._fail(f.fault)
                return None
            if chain is not None:
                return chain
        return None

    def _next_head(self) -> int | None:
        avail = self.addrs.avail
        pending = (self._r16(avail + 2) - self.last_avail_idx) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.num:
            raise _Fault(RingFault.AVAIL_JUMP)
        if self.inflight >= self.num:
            raise _Fault(RingFault.SIZE_EXCEEDED)
        head = self._r16(avail + 4 + 2 * (self.last_avail_idx & (self.num - 1)))
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        if head >= self.num:
            raise _Fault(RingFault.HEAD_RANGE)
        if self.features & F_EVENT_IDX and self.notification:
            self._w(self.addrs.used + 4 + 8 * self.num, self.last_avail_idx, 2)     # avail_event
        return head

    def _walk(self, head: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], bool]:
        """Follow a chain from `head` (and at most one indirect table) to its buffers, checking every rule."""
        table, limit, i, visited, indirect = self.addrs.desc, self.num, head, 0, False
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        total = 0
        while True:
            d = self._desc(table, i)
            visited += 1
            if visited > limit:
                raise _Fault(RingFault.LOOP)
            if d.flags & VIRTQ_DESC_F_INDIRECT:
                self._check_indirect(d, indirect)
                table, limit, i, visited, indirect = d.addr, d.len // DESC_SIZE, 0, 0, True
                continue
            if len(readable) + len(writable) >= MAX_CHAIN_SEGMENTS:
                raise _Fault(RingFault.TOO_MANY)
            if d.addr + d.len > _U64_END:
                raise _Fault(RingFault.ADDR_RANGE)
            total += d.len
            if total > 1 << 32:
                raise _Fault(RingFault.TOO_LONG)
            if d.flags & VIRTQ_DESC_F_WRITE:
                writable.append((d.addr, d.len))
            elif writable:
                raise _Fault(RingFault.ORDER)
            else:
                readable.append((d.addr, d.len))
            if not d.flags & VIRTQ_DESC_F_NEXT:
                return readable, writable, indirect
            i = d.next
            if i >= limit:
                raise _Fault(RingFault.NEXT_RANGE)

    def _check_indirect(self, d: Desc, inside: bool) -> None:
        if inside:
            raise _Fault(RingFault.INDIRECT_NESTED)
        if not self.features & F_INDIRECT_DESC:
            raise _Fault(RingFault.INDIRECT_FEATURE)
        if d.flags & VIRTQ_DESC_F_NEXT:
            raise _Fault(RingFault.INDIRECT_NEXT)
        if d.len == 0 or d.len % DESC_SIZE:
            raise _Fault(RingFault.INDIRECT_SIZE)
        if d.addr + d.len > _U64_END:
            raise _Fault(RingFault.ADDR_RANGE)

    def _collect(self, head: int, readable: list[tuple[int, int]], writable: list[tuple[int, int]],
                 indirect: bool) -> Chain | None:
        """Read the device-readable bytes and account the chain as in flight (None: dropped as too big)."""
        self.inflight += 1
        nbytes = sum(n for _, n in readable)
        if nbytes > self.max_readable:
            chain = Chain(head, b"", tuple(writable), tuple(readable), indirect, self.epoch)
            self.stats["dropped"] += 1
            if "virtqueue_drop" in self.tracer.enabled:
                self.tracer.emit("virtqueue_drop", dev=self.dev, queue=self.index, head=head,
                                 reason=f"{nbytes} readable bytes > max_readable {self.max_readable}")
            self.push(chain, 0)
            return None
        data = bytearray()
        try:
            for a, n in readable:
                if n:
                    data += self.memory.read_bytes(a, n)
        except BusError:
            raise _Fault(RingFault.BUFFER_UNREACHABLE) from None
        self.stats["popped"] += 1
        if "virtqueue_pop" in self.tracer.enabled:
            self.tracer.emit("virtqueue_pop", dev=self.dev, queue=self.index, head=head, out_num=len(readable),
                             in_num=len(writable), readable=nbytes, writable=sum(n for _, n in writable))
        return Chain(head, bytes(data), tuple(writable), tuple(readable), indirect, self.epoch)

    def push(self, chain: Chain, written: bytes | bytearray | memoryview | int = 0) -> bool:
        """Return `chain` to the driver: scatter `written` bytes into its device-writable part (or, given an
        int, report that many bytes the device already wrote) and publish the used element. False when
        nothing was published: the queue was reset since the pop, the device is halted, or memory faulted."""
        if chain.epoch != self.epoch or not self.ready or self.halted:
            self.stats["stale_push"] += 1
            return False
        n = written if isinstance(written, int) else len(written)
        if not 0 <= n <= chain.capacity:
            raise ValueError(f"queue {self.index}: {n} bytes written into a chain with {chain.capacity} "
                             "device-writable bytes")
        try:
            if not isinstance(written, int):
                self._scatter(chain, bytes(written))
            slot = self.addrs.used + 4 + 8 * (self.used_idx & (self.num - 1))
            self._w(slot, USED_ELEM_LAYOUT.pack(id=chain.head, len=n), 8)
            self.used_idx = (self.used_idx + 1) & 0xFFFF
            self._w(self.addrs.used + 2, self.used_idx, 2)
        except _Fault as f:
            self._fail(f.fault)
            return False
        self.inflight -= 1
        self.stats["pushed"] += 1
        if "virtqueue_fill" in self.tracer.enabled:
            self.tracer.emit("virtqueue_fill", dev=self.dev, queue=self.index, head=chain.head, len=n,
                             idx=self.used_idx)
        return True

    def _scatter(self, chain: Chain, data: bytes) -> None:
        off = 0
        try:
            for a, n in chain.writable:
                if off >= len(data):
                    break
                piece = data[off:off + n]
                self.memory.write_bytes(a, piece)
                off += len(piece)
        except BusError:
            raise _Fault(RingFault.BUFFER_UNREACHABLE) from None

    def should_notify(self) -> bool:
        """After pushes: must the device send a used buffer notification? (spec 2.7.7; VIRTIO_F_NOTIFY_ON_EMPTY
        per 6.3; the EVENT_IDX bookkeeping is QEMU's `virtio_split_should_notify`)."""
        if not self.ready or self.halted:
            return False
        try:
            avail = self.addrs.avail
            if (self.features & F_NOTIFY_ON_EMPTY and self.inflight == 0
                    and self._r16(avail + 2) == self.last_avail_idx):
                return True
            if not self.features & F_EVENT_IDX:
                return not self._r16(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT
            valid, old = self.signalled_used_valid, self.signalled_used
            self.signalled_used_valid, self.signalled_used = True, self.used_idx
            return not valid or need_event(self._r16(avail + 4 + 2 * self.num), self.used_idx, old)
        except _Fault as f:
            self._fail(f.fault)
            return False

    def set_notification(self, enable: bool) -> None:
        """Ask the driver for (or to stop sending) available buffer notifications (spec 2.7.10)."""
        self.notification = enable
        if not self.ready or self.halted:
            return
        used = self.addrs.used
        try:
            if self.features & F_EVENT_IDX:
                if enable:
                    self._w(used + 4 + 8 * self.num, self._r16(self.addrs.avail + 2), 2)
                return
            flags = self._r16(used)
            flags = flags & ~VIRTQ_USED_F_NO_NOTIFY if enable else flags | VIRTQ_USED_F_NO_NOTIFY
            self._w(used, flags, 2)
        except _Fault as f:
            self._fail(f.fault)

    def describe(self) -> dict[str, int | bool]:
        """Queue state as plain values (for traces, reports and tests)."""
        return {"index": self.index, "ready": self.ready, "num": self.num, "desc": self.addrs.desc,
                "avail": self.addrs.avail, "used": self.addrs.used, "last_avail_idx": self.last_avail_idx,
                "used_idx": self.used_idx, "inflight": self.inflight, "halted": self.halted}

