"""ITS tables in memory (IHI 0069 5.2): the Device and Collection tables that GITS_BASER<n> describe, and the
per-device Interrupt Translation Tables (ITTs) that MAPD points to.

Only the level-1 entry of a two-level table is architected (bit 63 Valid, the level-2 page address in
[51:12]); the entry formats are IMPLEMENTATION DEFINED. This model uses QEMU's (hw/intc/gicv3_internal.h):
* DTE, 8 bytes: Valid [0], Size [5:1] (EventID bits - 1), ITT_addr [49:6] (address >> 8);
* CTE, 8 bytes: Valid [0], RDbase [16:1] (the target processor number: GITS_TYPER.PTA=0);
* ITE, 12 bytes (GITS_TYPER.ITT_entry_size=11): Valid [0], IntType [1] (1 = physical), INTID [25:2],
  Doorbell [49:26], ICID [79:64], vPEID [95:80].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..fields import Field, Layout

__all__ = ["DTE", "CTE", "ITE", "DTE_SIZE", "CTE_SIZE", "ITE_SIZE", "BASER_TYPE_DEVICE", "BASER_TYPE_COLLECTION",
           "TableDesc"]

DTE = Layout("DTE", 64, (Field("Valid", 0, 1), Field("Size", 1, 5), Field("ITT_addr", 6, 44, shift=8)))
CTE = Layout("CTE", 64, (Field("Valid", 0, 1), Field("RDbase", 1, 16)))
ITE = Layout("ITE", 96, (Field("Valid", 0, 1), Field("IntType", 1, 1), Field("INTID", 2, 24),
                         Field("Doorbell", 26, 24), Field("ICID", 64, 16), Field("vPEID", 80, 16)))
DTE_SIZE, CTE_SIZE, ITE_SIZE = 8, 8, 12

BASER_TYPE_DEVICE, BASER_TYPE_COLLECTION = 1, 4
_PAGE_SIZES = (0x1000, 0x4000, 0x10000, 0x10000)     # Page_Size 0b11 (reserved) is treated as 64 KiB, as QEMU
_L1_VALID = 1 << 63
_L1_ADDR = ((1 << 52) - 1) & ~0xFFF


@dataclass(frozen=True)
class TableDesc:
    """A Device or Collection table as GITS_BASER<n> describes it (IHI 0069 12.19.3)."""
    valid: bool
    indirect: bool
    page_size: int
    entry_size: int
    base: int
    pages: int

    @classmethod
    def from_baser(cls, value: int) -> "TableDesc":
        page = _PAGE_SIZES[(value >> 8) & 3]
        if page == 0x10000:          # 64 KiB pages: PA[47:16] in [47:16], PA[51:48] in [15:12]
            base = (value & 0x0000_FFFF_FFFF_0000) | ((value >> 12) & 0xF) << 48
        else:
            base = value & 0x0000_FFFF_FFFF_F000 & ~(page - 1)
        return cls(bool(value >> 63), bool(value >> 62 & 1), page, ((value >> 48) & 0x1F) + 1, base,
                   (value & 0xFF) + 1)

    @property
    def entries(self) -> int:
        """How many IDs the table can hold."""
        if not self.valid:
            return 0
        if self.indirect:
            return self.pages * self.page_size // 8 * (self.page_size // self.entry_size)
        return self.pages * self.page_size // self.entry_size

    def entry_addr(self, index: int, read64: Callable[[int], int]) -> int | None:
        """Address of entry `index`, None when it is outside the table or its level-2 page is not valid.
        `read64` reads level-1 entries (it may raise BusError)."""
        if not 0 <= index < self.entries:
            return None
        if not self.indirect:
            return self.base + index * self.entry_size
        per_page = self.page_size // self.entry_size
        l1 = read64(self.base + (index // per_page) * 8)
        if not l1 & _L1_VALID:
            return None
        return (l1 & _L1_ADDR & ~(self.page_size - 1)) + (index % per_page) * self.entry_size
