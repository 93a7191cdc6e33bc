"""Host physical address space: RAM buffers and MMIO devices behind one range map.

The `Bus` is the only memory abstraction of the project. Devices DMA through it, the SMMU walks tables
through it, the harness maps the same RAM buffers into Unicorn (zero copy) and routes Unicorn's MMIO
callbacks to the devices registered here.

Accesses that hit no region raise `BusError` (a typed value the SMMU turns into an external abort, e.g.
F_WALK_EABT); they never corrupt state.

Not modelled: memory attributes, cacheability, endianness other than little-endian.
"""
from __future__ import annotations

import bisect
import mmap
import struct
from typing import Protocol, runtime_checkable

from .record import Frozen, assign

__all__ = ["Bus", "BusError", "MmioDevice", "Ram", "Region"]

_bisect_right = bisect.bisect_right
_unpack_u64 = struct.Struct("<Q").unpack_from


class BusError(Exception):
    """An access hit no region, or crossed a region's end. Carries the address and size."""

    def __init__(self, addr: int, size: int, why: str = "unmapped"):
        super().__init__(f"bus error: {why} access at {addr:#x} size {size}")
        self.addr = addr
        self.size = size
        self.why = why


@runtime_checkable
class MmioDevice(Protocol):
    """What a device exposes on the bus: register reads and writes at an offset in its window."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, value: int, size: int) -> None: ...


class Ram:
    """A RAM buffer. `buf` is a writable, zero-filled buffer (slices, the buffer protocol) that the harness maps
    into Unicorn with `mem_map_ptr`: a private anonymous mapping, so its pages cost nothing until touched (a
    bytearray is zeroed in full at once: 80 ms for 128 MiB) and a forked process gets a copy, not a share."""

    __slots__ = ("buf", "size", "mv")

    def __init__(self, size: int):
        self.size = size
        try:
            self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (AttributeError, OSError, ValueError):     # no anonymous mappings here: a plain buffer
            self.buf = bytearray(size)
        self.mv = memoryview(self.buf)


class Region(Frozen):
    __slots__ = ("base", "size", "name", "target")
    base: int
    size: int
    name: str
    target: Ram | MmioDevice

    def __init__(self, base: int, size: int, name: str, target: Ram | MmioDevice) -> None:
        assign(self, "base", base)
        assign(self, "size", size)
        assign(self, "name", name)
        assign(self, "target", target)

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def is_ram(self) -> bool:
        return isinstance(self.target, Ram)


class Bus:
    """A sorted, non-overlapping map of regions; little-endian integer and byte accessors."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._regions: list[Region] = []
        self._frozen = False

    # -- map management -------------------------------------------------------------------------
    def add_ram(self, base: int, size: int, name: str = "ram", ram: Ram | None = None) -> Ram:
        ram = ram if ram is not None else Ram(size)
        if ram.size != size:
            raise ValueError(f"{name}: Ram buffer is {ram.size:#x} bytes, region is {size:#x}")
        self._add(Region(base, size, name, ram))
        return ram

    def add_device(self, base: int, size: int, device: MmioDevice, name: str | None = None) -> None:
        self._add(Region(base, size, name or type(device).__name__, device))

    def _add(self, region: Region) -> None:
        if self._frozen:
            raise RuntimeError(f"bus is frozen; cannot add {region.name}")
        if region.size <= 0:
            raise ValueError(f"{region.name}: size {region.size:#x} must be positive")
        if region.base < 0 or region.end > 1 << 64:
            raise ValueError(f"{region.name}: [{region.base:#x}, {region.end:#x}) is outside 64-bit space")
        i = bisect.bisect_right(self._bases, region.base)
        if i > 0 and self._regions[i - 1].end > region.base:
            other = self._regions[i - 1]
            raise ValueError(f"{region.name} at {region.base:#x} overlaps {other.name} "
                             f"[{other.base:#x}, {other.end:#x})")
        if i < len(self._regions) and region.end > self._regions[i].base:
            other = self._regions[i]
            raise ValueError(f"{region.name} [{region.base:#x}, {region.end:#x}) overlaps {other.name} "
                             f"at {other.base:#x}")
        self._bases.insert(i, region.base)
        self._regions.insert(i, region)

    def remove(self, base: int) -> Region:
        """Take the region that starts at `base` off the map (a board change); KeyError if there is none."""
        if self._frozen:
            raise RuntimeError(f"bus is frozen; cannot remove the region at {base:#x}")
        i = bisect.bisect_left(self._bases, base)
        if i == len(self._bases) or self._bases[i] != base:
            raise KeyError(f"no region starts at {base:#x}")
        del self._bases[i]
        return self._regions.pop(i)

    def freeze(self) -> None:
        self._frozen = True

    @property
    def regions(self) -> tuple[Region, ...]:
        return tuple(self._regions)

    def find(self, addr: int) -> Region | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._regions[i]
            if addr < r.end:
                return r
        return None

    def _region(self, addr: int, size: int) -> Region:
        r = self.find(addr)
        if r is None:
            raise BusError(addr, size)
        if addr + size > r.end:
            raise BusError(addr, size, f"crosses end of {r.name}")
        return r

    # -- byte access (RAM only; DMA of MMIO as bytes is not supported) ------------------------------
    def read_bytes(self, addr: int, size: int) -> bytes:
        r = self._region(addr, size)
        if not r.is_ram:
            if size in (1, 2, 4, 8):
                return r.target.read(addr - r.base, size).to_bytes(size, "little")
            raise BusError(addr, size, f"byte access to device {r.name}")
        off = addr - r.base
        return bytes(r.target.buf[off:off + size])

    def write_bytes(self, addr: int, data: bytes) -> None:
        size = len(data)
        r = self._region(addr, size)
        if not r.is_ram:
            if size in (1, 2, 4, 8):
                r.target.write(addr - r.base, int.from_bytes(data, "little"), size)
                return
            raise BusError(addr, size, f"byte access to device {r.name}")
        off = addr - r.base
        r.target.buf[off:off + size] = data

    # -- integer access (hot path for table walks) ----------------------------------------------------
    def read(self, addr: int, size: int = 8) -> int:
        r = self._region(addr, size)
        if r.is_ram:
            off = addr - r.base
            return int.from_bytes(r.target.buf[off:off + size], "little")
        return r.target.read(addr - r.base, size)

    def write(self, addr: int, value: int, size: int = 8) -> None:
        r = self._region(addr, size)
        if r.is_ram:
            off = addr - r.base
            r.target.buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            return
        r.target.write(addr - r.base, value, size)

    def write_from(self, requester: int | None, addr: int, value: int, size: int = 4) -> None:
        """A bus master's write that carries its requester ID (the PCIe Requester ID / StreamID a device's
        transactions are tagged with; QEMU `MemTxAttrs.requester_id`). A device with `write_from(offset,
        value, size, requester)` receives the ID: an ITS translation frame takes it as the MSI's DeviceID
        (IHI 0069 chapter 5). RAM and other devices see a plain `write`; `requester=None` is a plain write."""
        r = self._region(addr, size)
        if requester is not None and not r.is_ram:
            take = getattr(r.target, "write_from", None)
            if take is not None:
                take(addr - r.base, value, size, requester)
                return
        self.write(addr, value, size)

    def read64(self, addr: int) -> int:
        """`read(addr, 8)`; RAM reads (every table walk step) take a short path, anything else the general one."""
        i = _bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._regions[i]
            t = r.target
            off = addr - r.base
            if off <= r.size - 8 and isinstance(t, Ram):
                return _unpack_u64(t.buf, off)[0]
        return self.read(addr, 8)

    def write64(self, addr: int, value: int) -> None:
        self.write(addr, value, 8)

    def cas64(self, addr: int, expected: int, new: int) -> int:
        """Compare-and-swap of the 64-bit little-endian word at `addr` (RAM only): store `new` iff the word
        equals `expected`; return the word found (the swap happened iff it equals `expected`). The model is
        synchronous, so read-compare-write is atomic against every other agent (a vCPU runs between calls,
        never inside one): this is what hardware updates of translation table descriptors (HTTU) use, so a
        CPU's own change of the descriptor between the SMMU's walk and its update is never overwritten.
        MMIO or unmapped addresses raise `BusError` (an external abort on the update)."""
        r = self._region(addr, 8)
        if not r.is_ram:
            raise BusError(addr, 8, f"atomic update of device {r.name}")
        buf, off = r.target.buf, addr - r.base
        cur = _unpack_u64(buf, off)[0]
        if cur == expected:
            buf[off:off + 8] = (new & ((1 << 64) - 1)).to_bytes(8, "little")
        return cur

    def read32(self, addr: int) -> int:
        return self.read(addr, 4)

    def write32(self, addr: int, value: int) -> None:
        self.write(addr, value, 4)
