"""pci-testdev: QEMU's PCI test device (hw/misc/pci-testdev.c), which kvm-unit-tests' lib/pci-testdev.c
drives.

Identity: 1b36:0005 (PCI_DEVICE_ID_REDHAT_TEST), class 00 ff 00 (PCI_CLASS_OTHERS), revision 0, no
interrupt pin. BAR0: 4 KiB of 32-bit memory ("mmio" tests); BAR1: 256 bytes of I/O ("portio" tests).

Each BAR holds three tests (`no-eventfd`, `wildcard-eventfd`, `datamatch-eventfd`); the selected test's
header reads at the start of the BAR (little-endian, byte-wise: QEMU's access size is 1, wider accesses are
split into bytes):

    0x00 test (u8)  0x01 width (u8, 1)  0x04 offset (u32)  0x08 data (u8)  0x0c count (u32)  0x10 name (NUL)

Writing the test number to byte 0 selects it and zeroes its count (a number >= 3 deselects: every read is
then 0). A 1-byte write at `offset` counts, unless the test matches data and the byte is not `data`
(0xFA; the wildcard test's data is 0xCE). offsets: 2048 + i (memory tests i = 0..2), 128 + i (I/O tests
i = 3..5); names "mmio-no-eventfd", ..., "portio-datamatch-eventfd". Reads at or past the header's last
byte read 0.

The eventfd tests register an ioeventfd on their offset (1 byte, on the data for datamatch). Under TCG,
QEMU's memory core (memory_region_dispatch_write) signals a matching ioeventfd instead of calling the
device, so those writes do not count: `signalled[t]` counts them here. kvm-unit-tests accepts a count of
0 or 16 after its 16 writes; QEMU 7.2 TCG gives 16, 0, 0 per BAR, and so does this model
(tests/harness/test_pci_board.py compares every access pci-test makes to the device with QEMU's trace).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import REDHAT_VENDOR, Bar, ConfigSpace
from .function import PciFunction

__all__ = ["PciTestdev", "TESTDEV_DEVICE", "TEST_NAMES", "MEM_BAR_SIZE", "IO_BAR_SIZE", "DATAMATCH", "NOMATCH"]

TESTDEV_DEVICE = 0x0005
CLASS_OTHERS = 0x00FF00
MEM_BAR_SIZE, IO_BAR_SIZE = 2 * 2048, 2 * 128      # IOTEST_MEMSIZE * 2, IOTEST_IOSIZE * 2
DATAMATCH, NOMATCH = 0xFA, 0xCE
_KINDS = ("no-eventfd", "wildcard-eventfd", "datamatch-eventfd")
TEST_NAMES = tuple(f"{t}-{k}" for t in ("mmio", "portio") for k in _KINDS)
_HDR_COUNT, _HDR_NAME = 0x0C, 0x10


@dataclass
class _Test:
    number: int
    offset: int
    data: int
    match_data: bool
    eventfd: bool
    name: bytes
    count: int = 0

    def header(self) -> bytes:
        return (bytes((self.number, 1, 0, 0)) + self.offset.to_bytes(4, "little") + bytes((self.data, 0, 0, 0))
                + (self.count & 0xFFFF_FFFF).to_bytes(4, "little") + self.name + b"\0")


def _tests() -> list[_Test]:
    out = []
    for i, name in enumerate(TEST_NAMES):
        kind = _KINDS[i % 3]
        match = kind != "wildcard-eventfd"
        out.append(_Test(i, (2048 if i < 3 else 128) + i, DATAMATCH if match else NOMATCH, match,
                         kind != "no-eventfd", name.encode()))
    return out


class PciTestdev(PciFunction):
    """QEMU's pci-testdev (see the module docstring)."""

    def __init__(self, name: str = "pci-testdev"):
        cfg = ConfigSpace(REDHAT_VENDOR, TESTDEV_DEVICE, CLASS_OTHERS)
        cfg.add_bar(Bar(0, MEM_BAR_SIZE))
        cfg.add_bar(Bar(1, IO_BAR_SIZE, io=True))
        super().__init__(cfg, name)
        self.tests = _tests()
        self.current: int | None = None
        self.signalled = [0] * len(self.tests)

    def bar_read(self, index: int, offset: int, size: int) -> int:
        if index not in (0, 1):
            return super().bar_read(index, offset, size)
        return sum(self._read_byte(offset + i) << 8 * i for i in range(size))

    def _read_byte(self, addr: int) -> int:
        if self.current is None:
            return 0
        hdr = self.tests[self.current].header()
        return hdr[addr] if addr + 1 < len(hdr) else 0

    def bar_write(self, index: int, offset: int, value: int, size: int) -> None:
        if index not in (0, 1):
            return
        if self._eventfd(index, offset, value, size):
            return
        for i in range(size):                        # QEMU's access size 1: byte by byte
            self._write_byte(index, offset + i, (value >> 8 * i) & 0xFF)

    def _eventfd(self, kind: int, addr: int, value: int, size: int) -> bool:
        """A write the selected test's ioeventfd takes (1 byte at its offset, its data if it matches data)."""
        if self.current is None or self.current // 3 != kind:
            return False
        t = self.tests[self.current]
        if not t.eventfd or addr != t.offset or size != 1 or (t.match_data and value != t.data):
            return False
        self.signalled[self.current] += 1
        return True

    def _write_byte(self, kind: int, addr: int, value: int) -> None:
        if addr == 0:
            self.current = kind * 3 + value if value < 3 else None
            if self.current is not None:
                self.tests[self.current].count = 0
            return
        if self.current is None:
            return
        t = self.tests[self.current]
        if addr == t.offset and not (t.match_data and value != t.data):
            t.count += 1
