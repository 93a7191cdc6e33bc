"""The bus's 64-bit read (the table walkers' `read`): its RAM short path agrees with the general path, and
everything else (devices, unmapped addresses, a read crossing a region's end) behaves as `read(addr, 8)`."""
from __future__ import annotations

import pytest

from devmodel.bus import Bus, BusError

RAM = 0x4000_0000


class _Dev:
    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return 0x1122_3344_5566_7788

    def write(self, offset: int, value: int, size: int) -> None:
        raise AssertionError("not written here")


def test_read64_ram_devices_and_errors() -> None:
    bus = Bus()
    ram = bus.add_ram(RAM, 0x2000)
    dev = _Dev()
    bus.add_device(0x900_0000, 0x1000, dev)
    ram.buf[0x10:0x18] = (0x0123_4567_89AB_CDEF).to_bytes(8, "little")
    ram.buf[0x1FF8:0x2000] = b"\xff" * 8
    assert bus.read64(RAM + 0x10) == bus.read(RAM + 0x10, 8) == 0x0123_4567_89AB_CDEF
    assert bus.read64(RAM + 0x1FF8) == (1 << 64) - 1                 # the last 8 bytes of the region
    assert bus.read64(0x900_0008) == 0x1122_3344_5566_7788 and dev.reads == [(8, 8)]
    for bad in (RAM + 0x1FFC, RAM + 0x2000, RAM - 8, 0, 1 << 64):
        with pytest.raises(BusError):
            bus.read64(bad)


def test_remove_takes_a_region_off_the_map() -> None:
    bus = Bus()
    dev = _Dev()
    bus.add_device(0x800_0000, 0x1000, dev, "gicd")
    bus.add_device(0x801_0000, 0x2000, dev, "gicc")
    assert bus.remove(0x801_0000).name == "gicc"
    assert [r.name for r in bus.regions] == ["gicd"] and bus.find(0x801_0000) is None
    with pytest.raises(KeyError):
        bus.remove(0x801_0000)
    with pytest.raises(KeyError):
        bus.remove(0x800_0004)                      # not the start of a region
    bus.add_device(0x801_0000, 0x1_0000, dev, "gicc64k")    # the space is free again
    bus.freeze()
    with pytest.raises(RuntimeError):
        bus.remove(0x800_0000)
