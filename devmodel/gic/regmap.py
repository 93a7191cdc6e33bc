"""Per-interrupt register arrays as data (GICD_ISENABLER<n>, GICD_IPRIORITYR<n>, GICR_ICFGR<n>, ...).

The GIC register maps are mostly arrays that hold one field per INTID: 1 bit (IGROUPR, IS/ICENABLER,
IS/ICPENDR, IS/ICACTIVER, IGRPMODR), 2 bits (ICFGR), 8 bits (IPRIORITYR, ITARGETSR) or 64 bits (IROUTER). An
`IrqArray` declares one: where it starts, how wide a field is, which interrupt attribute it shows and what a
write does ("set" writes 1s to set, "clear" writes 1s to clear, "store" stores the field). `IrqArrays.find`
maps an access to (array, first INTID, number of INTIDs); the device then reads or writes the fields through
its own `field_get(cpu, intid, attr)` / `field_set(cpu, intid, attr, value)` so banking, reserved INTIDs and
side effects stay in the device. Scalar registers (CTLR, TYPER, ID registers) use `devmodel.regs`.

Access sizes (IHI 0069 12.1.3, IHI 0048B 4.1.4): word accesses everywhere; byte accesses to the 8-bit arrays
(`byte_ok`); 64-bit or 32-bit accesses to IROUTER. Anything else returns None from `find` and the device treats
it as RAZ/WI and counts it.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..record import Frozen, assign

__all__ = ["IrqArray", "IrqArrays", "array_read", "array_write", "common_arrays"]


class IrqArray(Frozen):
    __slots__ = ("name", "offset", "bits", "attr", "write", "count", "base", "byte_ok")
    name: str             # e.g. "GICD_ISENABLER"
    offset: int           # offset of the field of INTID `base`
    bits: int             # field width per INTID: 1, 2, 8 or 64
    attr: str             # which attribute the field shows (the device's vocabulary)
    write: str            # "store", "set" (write 1 to set), "clear" (write 1 to clear), "ro"
    count: int            # INTIDs covered by the array's address block
    base: int             # INTID of the first field
    byte_ok: bool

    def __init__(self, name: str, offset: int, bits: int, attr: str, write: str = "store", count: int = 1024,
                 base: int = 0, byte_ok: bool = False) -> None:
        assign(self, "name", name)
        assign(self, "offset", offset)
        assign(self, "bits", bits)
        assign(self, "attr", attr)
        assign(self, "write", write)
        assign(self, "count", count)
        assign(self, "base", base)
        assign(self, "byte_ok", byte_ok)

    @property
    def size(self) -> int:
        return self.count * self.bits // 8


def common_arrays(prefix: str, count: int = 1024) -> tuple[IrqArray, ...]:
    """The arrays GICv2 and GICv3 distributors and the GICv3 SGI_base frame share, at the same offsets
    (IHI 0048B table 4-1, IHI 0069 tables 12-25 and 12-30): IGROUPR, IS/ICENABLER, IS/ICPENDR, IS/ICACTIVER,
    IPRIORITYR (byte accessible), ICFGR."""
    return (
        IrqArray(f"{prefix}IGROUPR", 0x080, 1, "group", count=count),
        IrqArray(f"{prefix}ISENABLER", 0x100, 1, "enabled", "set", count=count),
        IrqArray(f"{prefix}ICENABLER", 0x180, 1, "enabled", "clear", count=count),
        IrqArray(f"{prefix}ISPENDR", 0x200, 1, "pending", "set", count=count),
        IrqArray(f"{prefix}ICPENDR", 0x280, 1, "pending", "clear", count=count),
        IrqArray(f"{prefix}ISACTIVER", 0x300, 1, "active", "set", count=count),
        IrqArray(f"{prefix}ICACTIVER", 0x380, 1, "active", "clear", count=count),
        IrqArray(f"{prefix}IPRIORITYR", 0x400, 8, "prio", count=count, byte_ok=True),
        IrqArray(f"{prefix}ICFGR", 0xC00, 2, "cfg", count=count),
    )


class IrqArrays:
    """Offset -> array lookup for a set of non-overlapping arrays, and MMIO dispatch through it.

    `read`/`write` return None/False when the offset is not in an array (the caller then tries its scalar
    registers); fields of INTIDs at or above `limit` are RAZ/WI and reported through `bad(kind)`."""

    def __init__(self, arrays: Iterable[IrqArray]):
        self.arrays = tuple(sorted(arrays, key=lambda a: a.offset))
        for a, b in zip(self.arrays, self.arrays[1:]):
            if a.offset + a.size > b.offset:
                raise ValueError(f"{a.name} overlaps {b.name}")
        self.by_name = {a.name: a for a in self.arrays}

    def find(self, offset: int, size: int) -> tuple[IrqArray, int, int] | None:
        """(array, first INTID, number of INTIDs) for a legal access, None for anything else."""
        for a in self.arrays:
            if a.offset <= offset < a.offset + a.size:
                rel = offset - a.offset
                if a.bits == 64:
                    if size == 8 and not rel & 7 or size == 4 and not rel & 3:
                        return a, a.base + rel // 8, 1
                    return None
                if size == 4 and not rel & 3 or size == 1 and a.byte_ok:
                    return a, a.base + rel * 8 // a.bits, size * 8 // a.bits
                return None
        return None

    def read(self, offset: int, size: int, get: "Getter", limit: int, bad: Callable[[str], None]) -> int | None:
        hit = self.find(offset, size)
        if hit is None:
            return None
        a, first, n = hit
        if first >= limit:
            bad("read")
            return 0
        return array_read(a, offset, size, first, n, get)

    def write(self, offset: int, value: int, size: int, get: "Getter", set_: "Setter", limit: int,
              bad: Callable[[str], None]) -> bool:
        hit = self.find(offset, size)
        if hit is None:
            return False
        a, first, n = hit
        if first >= limit:
            bad("write")
        else:
            array_write(a, offset, value, size, first, n, get, set_)
        return True


Getter = Callable[[int, str], int]
Setter = Callable[[int, str, int], None]


def array_read(a: IrqArray, offset: int, size: int, first: int, n: int, get: Getter) -> int:
    """Compose the register value from the fields of INTIDs first..first+n-1 (`get(intid, attr)`)."""
    if a.bits == 64:
        value = get(first, a.attr)
        return value >> 32 if offset & 4 and size == 4 else value & ((1 << (8 * size)) - 1)
    value = 0
    for i in range(n):
        value |= get(first + i, a.attr) << (i * a.bits)
    return value


def array_write(a: IrqArray, offset: int, value: int, size: int, first: int, n: int, get: Getter,
                set_: Setter) -> None:
    """Apply a write to the fields of INTIDs first..first+n-1 according to the array's write semantics."""
    if a.write == "ro":
        return
    if a.bits == 64:
        if size == 4:
            old = get(first, a.attr)
            value = (old & 0xFFFF_FFFF) | (value << 32) if offset & 4 else (old & ~0xFFFF_FFFF) | value
        set_(first, a.attr, value & ((1 << 64) - 1))
        return
    mask = (1 << a.bits) - 1
    for i in range(n):
        field = (value >> (i * a.bits)) & mask
        if a.write == "store":
            set_(first + i, a.attr, field)
        elif field:                       # set / clear: only the 1 bits act
            set_(first + i, a.attr, 1 if a.write == "set" else 0)
