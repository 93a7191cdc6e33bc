"""Bit-field layouts as data: the one mechanism behind STE, CD, commands, events, descriptors and registers.

A `Layout` is a named list of `Field`s over a record of `nbits` bits (little-endian words: bit 64 is bit 0 of
the second 64-bit word, as the SMMUv3 spec numbers STE/CD/command bits). Layouts reject overlapping and
out-of-range fields when they are built, so a typo in a bit position fails at import, not in a test.

Records are declared once, by their layout: `record_type(name, layout)` builds a frozen slots dataclass with
one `int` attribute per field (the lower-case field name; a Python keyword gets a trailing underscore, so
CLASS is `class_`) and `raw`, the record's bits. Properties and methods are added by subclassing the
generated class (with `__slots__ = ()`). `raw` is never passed in: a constructed record (or one from
`dataclasses.replace`) computes it from its fields; `record_decoder(cls, layout)` builds records from raw
bits (RES0/undefined bits included in `raw`, so validation can see them). Encoding a record is then
`raw & layout.defined_mask`: no second pack.
"""
from __future__ import annotations

import keyword
from typing import Any, Callable, Iterable, Sequence

from .record import Frozen, assign

__all__ = ["Field", "Layout", "bits", "sext", "record_type", "record_decoder", "record_codec", "attr_name"]


def bits(value: int, hi: int, lo: int) -> int:
    """value[hi:lo] (inclusive), like the spec's notation."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def sext(value: int, width: int) -> int:
    """Sign-extend a `width`-bit value to a Python int."""
    sign = 1 << (width - 1)
    value &= (1 << width) - 1
    return (value ^ sign) - sign


def attr_name(field_name: str) -> str:
    """The Python attribute of a field: lower case, a keyword gets a trailing underscore (CLASS -> class_)."""
    a = field_name.lower()
    return a + "_" if keyword.iskeyword(a) else a


class Field(Frozen):
    """`name` covers bits [lsb + width - 1 : lsb] of the record. `shift` re-positions the value on
    decode: a field holding address bits [51:6] is declared with shift=6 and decodes to a byte address."""

    __slots__ = ("name", "lsb", "width", "shift", "doc")
    name: str
    lsb: int
    width: int
    shift: int
    doc: str

    def __init__(self, name: str, lsb: int, width: int, shift: int = 0, doc: str = "") -> None:
        assign(self, "name", name)
        assign(self, "lsb", lsb)
        assign(self, "width", width)
        assign(self, "shift", shift)
        assign(self, "doc", doc)

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def attr(self) -> str:
        return attr_name(self.name)

    def get(self, raw: int) -> int:
        return ((raw >> self.lsb) & ((1 << self.width) - 1)) << self.shift

    def put(self, raw: int, value: int) -> int:
        v = value >> self.shift
        if value < 0 or v >= 1 << self.width or (v << self.shift) != value:
            raise ValueError(f"{self.name}: value {value:#x} does not fit {self.width} bits"
                             + (f" << {self.shift}" if self.shift else ""))
        return (raw & ~self.mask) | (v << self.lsb)


class Layout:
    """An ordered set of non-overlapping fields in an `nbits`-bit record. `by_name` is keyed by the lower-case
    field name, `by_attr` by the record attribute (they differ only for keywords: "class" / "class_")."""

    def __init__(self, name: str, nbits: int, fields: Iterable[Field]):
        self.name = name
        self.nbits = nbits
        self.fields: tuple[Field, ...] = tuple(fields)
        self.by_name: dict[str, Field] = {}
        self.by_attr: dict[str, Field] = {}
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
            self.by_attr[f.attr] = f
        self.defined_mask = used
        # (attr, lsb, value mask, shift) per field: what the fast pack/unpack loops use
        self.specs: tuple[tuple[str, int, int, int], ...] = tuple(
            (f.attr, f.lsb, (1 << f.width) - 1, f.shift) for f in self.fields)

    @property
    def nbytes(self) -> int:
        return self.nbits // 8

    def _field(self, key: str) -> Field:
        f = self.by_name.get(key.lower()) or self.by_attr.get(key)
        if f is None:
            raise KeyError(f"{self.name} has no field {key!r}")
        return f

    def unpack(self, raw: int) -> dict[str, int]:
        """Field values keyed by lower-case field name."""
        return {k: f.get(raw) for k, f in self.by_name.items()}

    def pack(self, values: dict[str, int] | None = None, **kw: int) -> int:
        """Encode fields given by name or attribute; values that do not fit raise ValueError."""
        raw = 0
        for k, v in {**(values or {}), **kw}.items():
            raw = self._field(k).put(raw, int(v))
        return raw

    def pack_record(self, rec: Any) -> int:
        """Encode the attributes of a record object (one per field of this layout; missing ones are 0).
        Values that do not fit raise ValueError, like `pack`."""
        raw = 0
        for attr, lsb, m, sh in self.specs:
            value = getattr(rec, attr, 0)
            if value == 0:                    # most fields of a record are 0 (None is not: it raises below)
                continue
            v = value >> sh
            if v & ~m or value < 0 or (sh and v << sh != value):
                raise ValueError(f"{self.name}.{attr}: value {value:#x} does not fit {m.bit_length()} bits"
                                 + (f" << {sh}" if sh else ""))
            raw |= v << lsb
        return raw

    def get(self, raw: int, name: str) -> int:
        return self._field(name).get(raw)

    def from_bytes(self, data: bytes) -> int:
        if len(data) != self.nbytes:
            raise ValueError(f"{self.name}: need {self.nbytes} bytes, got {len(data)}")
        return int.from_bytes(data, "little")

    def to_bytes(self, raw: int) -> bytes:
        return raw.to_bytes(self.nbytes, "little")

    def as_int(self, data: bytes | bytearray | memoryview | int) -> int:
        """Raw bits of a record given as bytes (exactly `nbytes`) or as an int."""
        return self.from_bytes(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data

    def undefined_bits(self, raw: int) -> int:
        """Bits set outside every declared field (RES0 checks)."""
        return raw & ~self.defined_mask & ((1 << self.nbits) - 1)


def record_type(name: str, layouts: Layout | Sequence[Layout], *, leading: Sequence[tuple[str, type]] = (),
                encoder: Callable[[Any], int] | None = None, module: str | None = None) -> type:
    """A frozen slots dataclass for records of `layouts`: the `leading` fields first (required), then one
    `int` attribute (default 0) per field of the layouts, in declaration order (the union when several
    layouts share a record type, like the commands), then `raw` (not an __init__ argument).

    `raw` is computed at construction by `encoder(record)` (default: the single layout's `pack_record`); the
    decoder from `record_decoder` sets it to the bits it decoded instead."""
    import dataclasses                  # the SMMU's records, not on `run`'s path (devmodel/record.py says why)
    layouts = (layouts,) if isinstance(layouts, Layout) else tuple(layouts)
    if encoder is None:
        if len(layouts) != 1:
            raise ValueError(f"{name}: a record over several layouts needs an encoder")
        encoder = layouts[0].pack_record
    lead = {n for n, _t in leading}
    attrs: dict[str, None] = {}
    for lay in layouts:
        for f in lay.fields:
            if f.attr not in lead:
                attrs.setdefault(f.attr, None)
    spec: list[Any] = list(leading)
    spec += [(a, int, dataclasses.field(default=0)) for a in attrs]
    spec.append(("raw", int, dataclasses.field(init=False, default=0)))
    enc = encoder
    setattr_ = object.__setattr__

    def __post_init__(self: Any) -> None:
        setattr_(self, "raw", enc(self))

    names = ", ".join(f.name for lay in layouts for f in lay.fields)
    cls = dataclasses.make_dataclass(name, spec, namespace={"__post_init__": __post_init__}, frozen=True,
                                     slots=True)
    if module is not None:
        cls.__module__ = module
    cls.__doc__ = f"{name} record generated from layout(s) {', '.join(lay.name for lay in layouts)}: {names}."
    return cls


def record_decoder(cls: type, layout: Layout, **fixed: Any) -> Callable[[int], Any]:
    """`decode(raw) -> cls` instance whose attributes are `layout`'s fields of `raw` (attributes of `cls`
    that the layout lacks are 0, `fixed` ones take the given values) and whose `raw` is `raw` itself."""
    import dataclasses
    names = [f.name for f in dataclasses.fields(cls)]
    have = set(layout.by_attr)
    specs = tuple(s for s in layout.specs if s[0] in names and s[0] not in fixed)
    rest = tuple((n, fixed.get(n, 0)) for n in names if n != "raw" and (n not in have or n in fixed))
    new = object.__new__
    setattr_ = object.__setattr__

    def decode(raw: int) -> Any:
        obj = new(cls)
        for attr, lsb, m, sh in specs:
            setattr_(obj, attr, ((raw >> lsb) & m) << sh)
        for attr, value in rest:
            setattr_(obj, attr, value)
        setattr_(obj, "raw", raw)
        return obj
    return decode


def record_codec(cls: type, layout: Layout) -> tuple[Callable[[Any], Any], Callable[[Any], bytes]]:
    """`(decode, encode)` for records of one layout: `decode(bytes | int) -> cls` (bytes must be exactly the
    record's size) and `encode(record) -> bytes` (the record's bits, undefined bits cleared)."""
    dec = record_decoder(cls, layout)
    mask, n = layout.defined_mask, layout.nbytes
    as_int = layout.as_int

    def decode(data: Any) -> Any:
        return dec(as_int(data))

    def encode(rec: Any) -> bytes:
        return (rec.raw & mask).to_bytes(n, "little")
    return decode, encode
