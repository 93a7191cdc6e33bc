"""LPI tables in memory (IHI 0069 5.1): the LPI Configuration (property) table at GICR_PROPBASER and the LPI
Pending table at GICR_PENDBASER, as pure helpers over bytes and register values.

* Property table: one byte per LPI, INTID 8192 + n at PROPBASER.PA + n. Bits [7:2] priority (bits [1:0] of
  the priority read as 0), bit [1] RES1 (Linux writes it as LPI_PROP_GROUP1), bit [0] Enable.
* Pending table: one bit per INTID from 0 at PENDBASER.PA; the first 1 KiB (INTIDs 0-8191) is
  IMPLEMENTATION DEFINED and never read here.
* The number of INTID bits the tables cover is PROPBASER.IDbits + 1, capped at GICD_TYPER.IDbits + 1; fewer
  than 14 bits means no LPI is in range.
"""
from __future__ import annotations

from ..regs import Access, RegField

__all__ = ["LPI_BASE", "PROP_ENABLE", "PROPBASER_FIELDS", "PENDBASER_FIELDS", "prop_entry", "lpi_limit",
           "pending_in"]

LPI_BASE = 8192
PROP_ENABLE = 1

#: GICR_PROPBASER (IHI 0069 12.11.25) and GICR_PENDBASER (12.11.22) fields; the rest is RES0
PROPBASER_FIELDS = (RegField("IDbits", 0, 5), RegField("InnerCache", 7, 3), RegField("Shareability", 10, 2),
                    RegField("PA", 12, 40, shift=12), RegField("OuterCache", 56, 3))
PENDBASER_FIELDS = (RegField("InnerCache", 7, 3), RegField("Shareability", 10, 2),
                    RegField("PA", 16, 36, shift=16), RegField("OuterCache", 56, 3),
                    RegField("PTZ", 62, 1, access=Access.WO))


def prop_entry(byte: int) -> tuple[int, bool]:
    """(priority, enabled) of an LPI configuration byte."""
    return byte & 0xFC, bool(byte & PROP_ENABLE)


def lpi_limit(prop_idbits: int, gicd_idbits: int) -> int:
    """One past the largest LPI INTID the tables cover (LPI_BASE when none is)."""
    bits = min(prop_idbits, gicd_idbits) + 1
    return 1 << bits if bits >= 14 else LPI_BASE


def pending_in(table: bytes, first: int = LPI_BASE) -> list[int]:
    """INTIDs whose bit is set in `table`, the pending table's bytes from INTID `first` (a multiple of 8)."""
    found = []
    for i, byte in enumerate(table):
        while byte:
            low = byte & -byte
            found.append(first + 8 * i + low.bit_length() - 1)
            byte ^= low
    return found
