"""Immutable records without code generation: what `@dataclass(frozen=True)` gave, at a plain class's cost.

Why: a dataclass is compiled when its class is created (dataclasses `exec`s __init__, __repr__, __eq__, __hash__,
__setattr__ and __delattr__, and calls inspect.signature for a class without a docstring): ~340 us a frozen
class against ~6 us for a plain one. The 37 dataclasses `smmu-harness run hello.elf` created took ~13 ms of
class creation; without them (and without importing `dataclasses`) the run starts ~20 ms sooner (tools/bench.py
qemu "start-up"). So the records on the run path are `Frozen` subclasses (docs/DESIGN.md "Records");
dataclasses stay everywhere else.

A record lists its fields in `__slots__` (a tuple, in field order; the fields of a `Frozen` base come first,
as a dataclass subclass's do), keeps their annotations (type checkers, and tests/test_records.py checks both
lists agree) and writes its own `__init__`, assigning each field with `assign(self, name, value)` (object's
__setattr__: the frozen __setattr__ is bypassed, as dataclasses' own __init__ does). `Frozen` then gives:

* `_fields`: the field names in order (built once per class, in `__init_subclass__`) and `_asdict()`;
* `__repr__`: `QualName(a=1, b='x')`, as dataclasses prints it (field reprs, `...` for a recursive one);
* `__eq__`: True for the same class and equal fields, NotImplemented for any other class (so a subclass
  instance never equals a base instance); `__hash__`: the hash of the field tuple, as a frozen dataclass's;
* assignment and deletion raise `FrozenInstanceError`, an AttributeError with dataclasses' name and message;
* `_replace(**changes)`: a new record through `__init__` (what `dataclasses.replace` does, under the
  NamedTuple name); pickling and copying through `__getstate__`/`__setstate__`.

A field that dataclasses declared `field(repr=False, compare=False)` is named in the class keyword `hidden`
(`class Reg(Frozen, hidden=("by_field",))`): it is left out of the repr, the comparison and the hash.
tests/test_records.py holds every record to a `dataclasses.make_dataclass` oracle of the same fields.
"""
from __future__ import annotations

import reprlib
from operator import attrgetter
from typing import Any, Callable, ClassVar

__all__ = ["Frozen", "FrozenInstanceError", "assign"]

#: a field's assignment in a record's `__init__` (and `__setstate__`): past the frozen __setattr__
assign = object.__setattr__


class FrozenInstanceError(AttributeError):
    """Assignment to or deletion of a record's field (the name and messages of dataclasses' own)."""


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    """A function of a record giving the tuple of its `names` (attrgetter gives a bare value for one name)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda rec: (one(rec),)
    return lambda rec: ()


class Frozen:
    """Base of the immutable records (see the module docstring)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _hidden: ClassVar[tuple[str, ...]] = ()           # fields out of repr, eq and hash (the bases' included)
    _shown: ClassVar[tuple[str, ...]] = ()            # the others, in order
    _compared: ClassVar[Callable[[Any], tuple]] = staticmethod(_getter(()))   # their values

    def __init_subclass__(cls, hidden: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init_subclass__(**kw)
        names: list[str] = []
        for k in reversed(cls.__mro__):
            slots = k.__dict__.get("__slots__", ())
            names += [n for n in ((slots,) if isinstance(slots, str) else slots) if n not in names]
        if not set(hidden) <= set(names):
            raise TypeError(f"{cls.__qualname__}: hidden {sorted(set(hidden) - set(names))} are not fields")
        cls._fields = tuple(names)
        cls._hidden = cls._hidden + tuple(hidden)
        cls._shown = tuple(n for n in names if n not in cls._hidden)
        cls._compared = staticmethod(_getter(cls._shown))

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._shown)})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared(self) == self._compared(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._compared(self))

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, n) for n in self._fields)

    def __setstate__(self, state: tuple) -> None:
        for n, v in zip(self._fields, state):
            assign(self, n, v)

    def _asdict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._fields}

    def _replace(self, **changes: Any) -> Any:
        """A copy with `changes`, built by the class's `__init__` (its parameters are taken from the record)."""
        code = getattr(type(self).__init__, "__code__", None)         # None: object's (a record of no field)
        params = code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount] if code else ()
        return type(self)(**{n: getattr(self, n) for n in params if n not in changes}, **changes)
