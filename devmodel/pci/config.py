"""A PCI function's configuration space: the type 0 header with QEMU's write masks, and BAR decoding.

Register offsets and bits: PCI Local Bus Specification 3.0 section 6.1-6.2.5 (Linux
include/uapi/linux/pci_regs.h names). What is writable is what QEMU 7.2 makes writable for every function
(hw/pci/pci.c `pci_init_wmask`, `pci_init_w1cmask`, `pci_register_bar`), checked against its ECAM reads:

* COMMAND: I/O space, memory space, bus master, SERR# enable, INTx disable (0x0507); other bits read 0;
* STATUS: the error bits are RW1C (0xF900), nothing sets them here;
* Cache Line Size, Interrupt Line, and the device-specific bytes 0x40..0xFF: read/write;
* BARs: the address bits above the region's size are writable, the type bits are fixed: writing all-ones
  reads back the size mask with the type bits (PCI 3.0 6.2.5.1, "sizing"); unimplemented BARs read 0;
* everything else (IDs, class, header type, the expansion ROM BAR of a function without a ROM) read-only.

A conventional function's configuration space is 256 bytes; ECAM gives it 4 KiB, and offsets past 256 read
all-ones with writes ignored (QEMU `pci_host_config_read_common`, seen with QEMU 7.2's ECAM).

BAR decode (QEMU `pci_bar_address`, with `pci_allow_0_address` as virt sets it): an I/O BAR decodes when
COMMAND.IO is set, a memory BAR when COMMAND.MEMORY is; a region that wraps or, for an I/O or 32-bit
memory BAR, reaches 0xFFFF_FFFF does not decode.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bar", "ConfigSpace", "CONFIG_SIZE", "bar_mapping", "VENDOR_ID", "DEVICE_ID", "COMMAND", "STATUS",
           "REVISION_ID", "CLASS_REVISION", "HEADER_TYPE", "BAR0", "SUBSYSTEM_VENDOR_ID", "ROM_ADDRESS",
           "INTERRUPT_LINE", "INTERRUPT_PIN", "COMMAND_IO", "COMMAND_MEMORY", "COMMAND_MASTER", "COMMAND_SERR",
           "COMMAND_INTX_DISABLE", "COMMAND_WMASK", "STATUS_W1C", "BAR_IO", "BAR_MEM_64", "BAR_PREFETCH",
           "NUM_BARS", "REDHAT_VENDOR", "QEMU_SUBSYSTEM"]

CONFIG_SIZE = 256                 # conventional PCI (PCIe's extended space is 4 KiB)
VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION_ID, CLASS_REVISION = 0x08, 0x08          # revision, prog-if, subclass, class: one dword
CACHE_LINE_SIZE, HEADER_TYPE = 0x0C, 0x0E
BAR0, NUM_BARS = 0x10, 6
SUBSYSTEM_VENDOR_ID, ROM_ADDRESS = 0x2C, 0x30
INTERRUPT_LINE, INTERRUPT_PIN = 0x3C, 0x3D
HEADER_END = 0x40                                 # PCI_CONFIG_HEADER_SIZE: device-specific bytes follow

COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER = 0x0001, 0x0002, 0x0004
COMMAND_SERR, COMMAND_INTX_DISABLE = 0x0100, 0x0400
COMMAND_WMASK = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_SERR | COMMAND_INTX_DISABLE
# PARITY | SIG_TARGET_ABORT | REC_TARGET_ABORT | REC_MASTER_ABORT | SIG_SYSTEM_ERROR | DETECTED_PARITY
STATUS_W1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000
BAR_IO, BAR_MEM_64, BAR_PREFETCH = 0x1, 0x4, 0x8  # PCI 3.0 6.2.5.1 BAR type bits

REDHAT_VENDOR = 0x1B36                            # QEMU include/hw/pci/pci.h PCI_VENDOR_ID_REDHAT
QEMU_SUBSYSTEM = (0x1AF4, 0x1100)                 # what QEMU puts in every function's subsystem IDs
_MASK32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class Bar:
    """One base address register: `index` 0..5, `size` a power of two, I/O or memory (`is64`: a 64-bit
    memory BAR that uses index + 1 for its upper half)."""
    index: int
    size: int
    io: bool = False
    is64: bool = False
    prefetch: bool = False

    @property
    def flags(self) -> int:
        if self.io:
            return BAR_IO
        return (BAR_MEM_64 if self.is64 else 0) | (BAR_PREFETCH if self.prefetch else 0)

    @property
    def offset(self) -> int:
        return BAR0 + 4 * self.index


def bar_mapping(bar: Bar, value: int, command: int) -> int | None:
    """The bus address `bar` decodes given its register `value` (64-bit for a 64-bit BAR) and COMMAND, or
    None when it does not decode (the module docstring's rules)."""
    if not command & (COMMAND_IO if bar.io else COMMAND_MEMORY):
        return None
    base = value & ~(bar.size - 1) & ((1 << 64) - 1)
    last = base + bar.size - 1
    if last >= (1 << 64) - 1 or (not bar.is64 and last >= _MASK32):      # QEMU: PCI_BAR_UNMAPPED is ~0
        return None
    return base


class ConfigSpace:
    """A type 0 configuration space (see the module docstring). `read`/`write` take an offset into the
    function's 4 KiB ECAM page and a size of 1, 2 or 4; an access that is not naturally aligned is split
    into bytes (ECAM callers hand aligned pieces)."""

    def __init__(self, vendor: int, device: int, class_code: int, *, revision: int = 0,
                 subsystem: tuple[int, int] = QEMU_SUBSYSTEM, interrupt_pin: int = 0):
        self.data = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)
        self.w1cmask = bytearray(CONFIG_SIZE)
        self.bars: dict[int, Bar] = {}
        self._put(VENDOR_ID, vendor, 2)
        self._put(DEVICE_ID, device, 2)
        self._put(CLASS_REVISION, (class_code << 8) | revision, 4)
        self._put(SUBSYSTEM_VENDOR_ID, subsystem[0] | subsystem[1] << 16, 4)
        self.data[INTERRUPT_PIN] = interrupt_pin
        self._put(COMMAND, COMMAND_WMASK, 2, self.wmask)
        self._put(STATUS, STATUS_W1C, 2, self.w1cmask)
        self.wmask[CACHE_LINE_SIZE] = self.wmask[INTERRUPT_LINE] = 0xFF
        self.wmask[HEADER_END:] = b"\xff" * (CONFIG_SIZE - HEADER_END)

    def _put(self, off: int, value: int, size: int, where: bytearray | None = None) -> None:
        (self.data if where is None else where)[off:off + size] = value.to_bytes(size, "little")

    def _get(self, off: int, size: int) -> int:
        return int.from_bytes(self.data[off:off + size], "little")

    def add_bar(self, bar: Bar) -> None:
        """Implement `bar`: its type bits in the register, its address bits writable."""
        width = 8 if bar.is64 else 4
        taken = {i for b in self.bars.values() for i in range(b.index, b.index + (2 if b.is64 else 1))}
        if not 0 <= bar.index <= NUM_BARS - width // 4 or bar.size & (bar.size - 1) or bar.size < 4 \
                or taken & set(range(bar.index, bar.index + width // 4)):
            raise ValueError(f"BAR{bar.index}: size {bar.size:#x} does not fit")
        self._put(bar.offset, bar.flags, width)
        self._put(bar.offset, ~(bar.size - 1) & ((1 << 8 * width) - 1), width, self.wmask)
        self.bars[bar.index] = bar

    @property
    def command(self) -> int:
        return self._get(COMMAND, 2)

    def bar_address(self, index: int) -> int | None:
        """The bus address BAR `index` decodes now, None if it does not (or is not implemented)."""
        bar = self.bars.get(index)
        if bar is None:
            return None
        return bar_mapping(bar, self._get(bar.offset, 8 if bar.is64 else 4), self.command)

    def read(self, off: int, size: int) -> int:
        if off % size:
            return sum(self.read(off + i, 1) << 8 * i for i in range(size))
        if off + size > CONFIG_SIZE:
            return (1 << 8 * size) - 1
        return self._get(off, size)

    def write(self, off: int, value: int, size: int) -> None:
        for i in range(size):
            o = off + i
            if o >= CONFIG_SIZE:
                return
            b = (value >> 8 * i) & 0xFF
            self.data[o] = (self.data[o] & ~self.wmask[o] | b & self.wmask[o]) & ~(b & self.w1cmask[o]) & 0xFF
