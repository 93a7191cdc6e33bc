"""Bit-field layouts as data: the one mechanism behind STE, CD, commands, events, descriptors and registers.

A `Layout` is a named list of `Field`s over a record of `nbits` bits (little-endian words: bit 64 is bit 0 of
the second 64-bit word, as the SMMUv3 spec numbers STE/CD/command bits). Layouts reject overlapping and
out-of-range fields when they are built, so a typo in a bit position fails at import, not in a test.

Structures are frozen dataclasses whose attribute names are the lower-case field names; `decode_as` and
`encode_from` convert between them and raw bytes, so the model, the host driver and the tests share one
definition.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, TypeVar

__all__ = ["Field", "Layout", "decode_as", "encode_from", "bits", "sext"]

T = TypeVar("T")


def bits(value: int, hi: int, lo: int) -> int:
    """value[hi:lo] (inclusive), like the spec's notation."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def sext(value: int, width: int) -> int:
    """Sign-extend a `width`-bit value to a Python int."""
    sign = 1 << (width - 1)
    value &= (1 << width) - 1
    return (value ^ sign) - sign


@dataclass(frozen=True)
class Field:
    """`name` covers bits [lsb + width - 1 : lsb] of the record. `shift` re-positions the value on
    decode: a field holding address bits [51:6] is declared with shift=6 and decodes to a byte address."""

    name: str
    lsb: int
    width: int
    shift: int = 0
    doc: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    def get(self, raw: int) -> int:
        return ((raw >> self.lsb) & ((1 << self.width) - 1)) << self.shift

    def put(self, raw: int, value: int) -> int:
        v = value >> self.shift
        if value < 0 or v >= 1 << self.width or (v << self.shift) != value:
            raise ValueError(f"{self.name}: value {value:#x} does not fit {self.width} bits"
                             + (f" << {self.shift}" if self.shift else ""))
        return (raw & ~self.mask) | (v << self.lsb)


class Layout:
    """An ordered set of non-overlapping fields in an `nbits`-bit record."""

    def __init__(self, name: str, nbits: int, fields: Iterable[Field]):
        self.name = name
        self.nbits = nbits
        self.fields: tuple[Field, ...] = tuple(fields)
        self.by_name: dict[str, Field] = {}
        used = 0
        for f in self.fields:
            if f.width <= 0 or f.lsb < 0 or f.msb >= nbits:
                raise ValueError(f"{name}.{f.name}: bits [{f.msb}:{f.lsb}] outside a {nbits}-bit record")
            if used & f.mask:
                clash = [g.name for g in self.fields if g is not f and g.mask & f.mask]
                raise ValueError(f"{name}.{f.name}: bits [{f.msb}:{f.lsb}] overlap {clash}")
            key = f.name.lower()
            if key in self.by_name:
                raise ValueError(f"{name}: field {f.name} declared twice")
            used |= f.mask
            self.by_name[key] = f
        self.defined_mask = used

    @property
    def nbytes(self) -> int:
        return self.nbits // 8

    def unpack(self, raw: int) -> dict[str, int]:
        return {k: f.get(raw) for k, f in self.by_name.items()}

    def pack(self, values: dict[str, int] | None = None, **kw: int) -> int:
        raw = 0
        for k, v in {**(values or {}), **kw}.items():
            f = self.by_name.get(k.lower())
            if f is None:
                raise KeyError(f"{self.name} has no field {k!r}")
            raw = f.put(raw, int(v))
        return raw

    def get(self, raw: int, name: str) -> int:
        return self.by_name[name.lower()].get(raw)

    def from_bytes(self, data: bytes) -> int:
        if len(data) != self.nbytes:
            raise ValueError(f"{self.name}: need {self.nbytes} bytes, got {len(data)}")
        return int.from_bytes(data, "little")

    def to_bytes(self, raw: int) -> bytes:
        return raw.to_bytes(self.nbytes, "little")

    def undefined_bits(self, raw: int) -> int:
        """Bits set outside every declared field (RES0 checks)."""
        return raw & ~self.defined_mask & ((1 << self.nbits) - 1)


def decode_as(cls: type[T], layout: Layout, data: bytes | int, **extra: Any) -> T:
    """Decode raw bytes (or an int) into the frozen dataclass `cls` (attributes = lower-case field names)."""
    raw = layout.from_bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in layout.unpack(raw).items() if k in names}
    if "raw" in names:
        values["raw"] = raw
    values.update(extra)
    return cls(**values)


def encode_from(obj: Any, layout: Layout) -> bytes:
    """Encode a dataclass instance back into bytes (fields missing from the dataclass stay 0)."""
    values = {k: getattr(obj, k) for k in layout.by_name if hasattr(obj, k)}
    return layout.to_bytes(layout.pack(values))
