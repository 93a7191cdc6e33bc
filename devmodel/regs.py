"""Declarative MMIO register files: registers are data, side effects are named hooks.

A device declares a tuple of `Reg` (offset, size, reset, fields with access) and builds a `RegisterFile`;
MMIO dispatch (`read`/`write`) is generated from the table. Behaviour:

* 64-bit registers accept 64-bit accesses and 32-bit accesses to either half; 32-bit registers accept
  32-bit accesses. Any other size, a misaligned access, or an access to no register is RAZ/WI and is
  reported through `on_bad_access` (the SMMUv3 spec makes such accesses CONSTRAINED UNPREDICTABLE with
  RAZ/WI as a permitted outcome; we pick it and log it).
* Only bits of fields with a writable access (RW, WO) change on a write; RO fields keep their value, RES0
  bits read as zero. Fields marked `implemented=False` are stored but reported through `on_unimplemented`.
* After a write, the owner's hook `_on_<regname>_write(old, new)` runs if the owner defines it (e.g.
  `_on_cr0_write`). Before a read, `_on_<regname>_read(value) -> value` may compute the value.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Iterable

from .fields import Field
from .record import Frozen, assign

__all__ = ["Access", "RegField", "Reg", "RegisterFile"]


class Access(Enum):
    RO = "RO"      # read-only: writes ignored
    RW = "RW"
    WO = "WO"      # write-only: reads return 0
    RES0 = "RES0"  # reserved: RAZ/WI


_WRITABLE = (Access.RW, Access.WO)


def _masks(name: str, size: int, fields: tuple[RegField, ...], access: Access) -> tuple[int, int, int]:
    """(writable, readable, unimplemented) bits of a register of `size` bytes with `fields` (or `access`)."""
    full = (1 << (8 * size)) - 1
    if not fields:
        return (full if access in _WRITABLE else 0), (full if access in (Access.RW, Access.RO) else 0), 0
    w = r = u = 0
    for f in fields:
        if f.msb >= 8 * size:
            raise ValueError(f"{name}.{f.name} exceeds the register")
        if f.access in _WRITABLE:
            w |= f.mask
        if f.access in (Access.RW, Access.RO):
            r |= f.mask
        if not f.implemented:
            u |= f.mask
    return w, r, u


class RegField(Field):
    __slots__ = ("access", "implemented")
    access: Access
    implemented: bool

    def __init__(self, name: str, lsb: int, width: int, shift: int = 0, doc: str = "", access: Access = Access.RW,
                 implemented: bool = True) -> None:
        Field.__init__(self, name, lsb, width, shift, doc)
        assign(self, "access", access)
        assign(self, "implemented", implemented)


class Reg(Frozen, hidden=("by_field",)):
    """A register of a window; `wmask`, `rmask` and `unimpl_mask` (the writable, readable and unimplemented
    bits) and `by_field` (name -> field) are computed from `fields` (or `access`), never passed in."""
    __slots__ = ("name", "offset", "size", "reset", "fields", "access", "doc", "wmask", "rmask", "unimpl_mask",
                 "by_field")
    name: str
    offset: int
    size: int                       # 4 or 8 bytes
    reset: int
    fields: tuple[RegField, ...]
    access: Access                  # for bits not covered by `fields` when `fields` is empty
    doc: str
    wmask: int
    rmask: int
    unimpl_mask: int
    by_field: dict[str, RegField]   # not in the repr nor compared

    def __init__(self, name: str, offset: int, size: int = 4, reset: int = 0, fields: tuple[RegField, ...] = (),
                 access: Access = Access.RW, doc: str = "") -> None:
        if size not in (4, 8):
            raise ValueError(f"{name}: size {size} must be 4 or 8")
        if offset % size:
            raise ValueError(f"{name}: offset {offset:#x} not aligned to {size}")
        assign(self, "name", name)
        assign(self, "offset", offset)
        assign(self, "size", size)
        assign(self, "reset", reset)
        assign(self, "fields", fields)
        assign(self, "access", access)
        assign(self, "doc", doc)
        w, r, u = _masks(name, size, fields, access)
        assign(self, "wmask", w)
        assign(self, "rmask", r)
        assign(self, "unimpl_mask", u)
        assign(self, "by_field", {f.name: f for f in fields})

    def field(self, name: str) -> RegField:
        f = self.by_field.get(name)
        if f is None:
            raise KeyError(f"{self.name} has no field {name}")
        return f


class RegisterFile:
    """Register values plus generated MMIO dispatch for one device window."""

    def __init__(self, owner: Any, regs: Iterable[Reg],
                 on_bad_access: Callable[[str, int, int, int | None], None] | None = None,
                 on_unimplemented: Callable[[Reg, int], None] | None = None):
        self.owner = owner
        self.regs: dict[str, Reg] = {}
        self._by_word: dict[int, tuple[Reg, int]] = {}   # 4-byte aligned offset -> (reg, byte offset in reg)
        for r in regs:
            if r.name in self.regs:
                raise ValueError(f"register {r.name} declared twice")
            self.regs[r.name] = r
            for part in range(0, r.size, 4):
                if r.offset + part in self._by_word:
                    raise ValueError(f"{r.name} overlaps {self._by_word[r.offset + part][0].name}")
                self._by_word[r.offset + part] = (r, part)
        self.values: dict[str, int] = {}
        self._on_bad = on_bad_access
        self._on_unimpl = on_unimplemented
        self._wr_hooks = {n: getattr(owner, f"_on_{n.lower()}_write", None) for n in self.regs}
        self._rd_hooks = {n: getattr(owner, f"_on_{n.lower()}_read", None) for n in self.regs}
        self.reset()

    def reset(self) -> None:
        for r in self.regs.values():
            self.values[r.name] = r.reset

    # -- direct (model-internal) access: no masks, no hooks -----------------------------------------
    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __setitem__(self, name: str, value: int) -> None:
        self.values[name] = value & ((1 << (8 * self.regs[name].size)) - 1)

    def get_field(self, reg: str, fname: str) -> int:
        return self.regs[reg].field(fname).get(self.values[reg])

    def set_field(self, reg: str, fname: str, value: int) -> None:
        self.values[reg] = self.regs[reg].field(fname).put(self.values[reg], value)

    # -- MMIO --------------------------------------------------------------------------------------
    def lookup(self, offset: int, size: int) -> tuple[Reg, int] | None:
        """(register, byte offset inside it) for a legal access, else None."""
        hit = self._by_word.get(offset & ~3)
        if hit is None or offset & 3:
            return None
        reg, part = hit
        if size == reg.size and part == 0:
            return reg, 0
        if size == 4 and reg.size == 8:
            return reg, part
        return None

    def read(self, offset: int, size: int) -> int:
        hit = self.lookup(offset, size)
        if hit is None:
            if self._on_bad:
                self._on_bad("read", offset, size, None)
            return 0
        reg, part = hit
        value = self.values[reg.name]
        hook = self._rd_hooks[reg.name]
        if hook is not None:
            value = hook(value)
        value &= reg.rmask
        return (value >> (8 * part)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int) -> None:
        hit = self.lookup(offset, size)
        if hit is None:
            if self._on_bad:
                self._on_bad("write", offset, size, value)
            return
        reg, part = hit
        mask = (((1 << (8 * size)) - 1) << (8 * part)) & reg.wmask
        old = self.values[reg.name]
        new = (old & ~mask) | ((value << (8 * part)) & mask)
        if self._on_unimpl and (new ^ old) & reg.unimpl_mask:
            self._on_unimpl(reg, new)
        self.values[reg.name] = new
        hook = self._wr_hooks[reg.name]
        if hook is not None:
            hook(old, new)
