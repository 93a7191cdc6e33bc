"""The records that were dataclasses (devmodel/record.py) behave as those dataclasses did.

The oracle of each record is `dataclasses.make_dataclass` with the fields, defaults and frozen flag the class
was declared with (written out here, not read from the new class): the constructor's signature, the repr, ==
and hash (equal and unequal pairs, a different class), the error of an assignment or deletion, `_replace`
against `dataclasses.replace`, pickling and copying, for a few instances of each. The mutable ones (Fdt, Pmu,
_Counter, ElfImage) keep the dataclass's constructor: signature, stored values, fresh default containers."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from enum import Enum
from typing import Any, NamedTuple

import pytest

from devmodel import record
from devmodel.bus import Ram, Region
from devmodel.fdt import Fdt, Node
from devmodel.fields import Field
from devmodel.gic.regmap import IrqArray
from devmodel.pmu import PMUV3, PMUV3P5, Pmu, PmuConfig, PmuContext, _Counter
from devmodel.psci import CpuOff, CpuOn, PsciResult, Standby, SystemOff, SystemReset
from devmodel.regs import Access, Reg, RegField
from devmodel.tlbi import TlbiDef
from devmodel.tlbi_types import DecodeContext, Security, TlbiOp
from devmodel.trace import EventDef
from harness.cpu import CpuFeatures
from harness.debug import DebugEvent
from harness.devicetree import CPU_COMPATIBLE, SMMU_SPI, VIRT_MEM, VIRT_SMMU, BoardSpec, DmaDeviceSpec, SmmuSpec
from harness.elfload import ElfImage, Segment, Symbolizer
from harness.exceptions import Taken, TakenInterrupt, Vector, _EntryRegs
from harness.exits import Kind, Outcome
from harness.image import BootPlan, LinuxImageHeader, LoadSegment
from harness.trap import Barrier
from harness.vmem import TranslationRegs, Walk

NO = dataclasses.MISSING


class Rec(NamedTuple):
    """A record as its dataclass declared it: `fields` "a b c" in order, `defaults` by name, `base` the Rec of
    a dataclass base, `computed` init=False fields (name -> default; repr and compared), `hidden` init=False
    fields with repr=False, compare=False (name -> default factory)."""
    cls: type
    fields: str
    defaults: dict[str, Any] = {}
    base: "Rec | None" = None
    computed: dict[str, Any] = {}
    hidden: dict[str, Any] = {}
    samples: tuple[tuple, ...] = ()              # constructor arguments (default: made up from a value pool)
    vary: dict[str, Any] = {}                    # a different valid value per field, or a function of the
    #                                              field's value giving one (default: a new tuple)


FIELD = Rec(Field, "name lsb width shift doc", {"shift": 0, "doc": ""})
RECORDS = [
    Rec(Region, "base size name target"),
    FIELD,
    Rec(IrqArray, "name offset bits attr write count base byte_ok",
        {"write": "store", "count": 1024, "base": 0, "byte_ok": False}),
    Rec(PmuConfig, "version implementer idcode counters",
        {"version": PMUV3P5, "implementer": 0x41, "idcode": 0x01, "counters": 6}),
    Rec(PmuContext, "el has_el2 mdcr_el2", {"el": 1, "has_el2": False, "mdcr_el2": 0}),
    Rec(CpuOn, "target entry context_id"),
    Rec(CpuOff, "cpu"),
    Rec(SystemOff, ""),
    Rec(SystemReset, ""),
    Rec(Standby, "cpu"),
    Rec(PsciResult, "ret action name", {"action": None, "name": ""}),
    Rec(RegField, "access implemented", {"access": Access.RW, "implemented": True}, base=FIELD),
    Rec(Reg, "name offset size reset fields access doc",
        {"size": 4, "reset": 0, "fields": (), "access": Access.RW, "doc": ""},
        computed={"wmask": 0, "rmask": 0, "unimpl_mask": 0}, hidden={"by_field": dict},
        samples=(("CR0", 0x20), ("IDR", 0x8, 8, 5, (RegField("A", 0, 1), RegField("B", 4, 4, 0, "",
                                                                               Access.RO, False)), Access.RO, "d")),
        vary={"name": "X", "offset": 0x40, "size": lambda size: 12 - size, "reset": 1, "fields": (RegField("C", 1, 1),),
              "access": Access.WO, "doc": "e"}),
    Rec(TlbiDef, "name op1 crn crm op2 operand share family scope stage leaf nxs", {"nxs": False}),
    Rec(TlbiOp, "name op1 crn crm op2 xt shareability broadcast regime security stage scope vmid asid addr size "
        "leaf ttl tg scale num nxs ipa_ns", {"tg": None, "scale": None, "num": None, "nxs": False, "ipa_ns": None}),
    Rec(DecodeContext, "el vmid security hcr_fb e2h tge",
        {"el": 1, "vmid": 0, "security": Security.NS, "hcr_fb": True, "e2h": False, "tge": False}),
    Rec(EventDef, "name fields doc", {"doc": ""}),
    Rec(CpuFeatures, "model ids sve pauth pan uao bti ssbs mte dit brps wrps tlb xs"),
    Rec(DebugEvent, "kind pc addr size write", {"addr": None, "size": 0, "write": False}),
    Rec(SmmuSpec, "base spi msi_devid", {"base": VIRT_SMMU[0], "spi": SMMU_SPI, "msi_devid": None}),
    Rec(DmaDeviceSpec, "base size iommu sid", {"base": 0x0910_0000, "size": 0x1000, "iommu": "smmu", "sid": 0}),
    Rec(BoardSpec, "ram cpus mpidrs cpu_compatible start_el gic_version its gic_virt smmu dma_devices "
        "virtio_iommu bootargs initrd pcie",
        {"ram": ((VIRT_MEM, 128 << 20),), "cpus": 1, "mpidrs": None, "cpu_compatible": CPU_COMPATIBLE["max"],
         "start_el": 1, "gic_version": 2, "its": True, "gic_virt": None, "smmu": None, "dma_devices": (),
         "virtio_iommu": None, "bootargs": "", "initrd": None, "pcie": True}),
    Rec(Segment, "vaddr paddr data memsz flags"),
    Rec(_EntryRegs, "esr elr far vbar sp spsr"),
    Rec(Taken, "ec iss target elr pc far what detail il",
        {"far": None, "what": "exception", "detail": "", "il": True}),
    Rec(TakenInterrupt, "kind intid target elr esr"),
    Rec(Outcome, "kind message status vcpu pc esr far",
        {"status": 0, "vcpu": None, "pc": None, "esr": None, "far": None}),
    Rec(LoadSegment, "addr data memsz executable name"),
    Rec(LinuxImageHeader, "text_offset image_size flags"),
    Rec(BootPlan, "path kind segments entry kernel_entry regs dtb_addr elf header notes initrd",
        {"elf": None, "header": None, "notes": (), "initrd": None}),
    Rec(Barrier, "addr text domain full"),
    Rec(TranslationRegs, "el sctlr tcr ttbr0 ttbr1 mmfr0 mmfr1 mmfr2",
        {"ttbr1": 0, "mmfr0": 5, "mmfr1": 0, "mmfr2": 0}),
    Rec(Walk, "ok ipa level fault kind perm_priv perm_user desc",
        {"ipa": None, "level": 0, "fault": "", "kind": None, "perm_priv": 7, "perm_user": 7, "desc": None}),
]
#: field values the made-up samples cycle through (hashable, with distinct reprs)
POOL = (3, "x", None, (1, "a"), b"\x01\x02", True, 0x4000_0000, Access.RO, -1, "y 'z'", (), Kind.EXIT,
        CpuOn(1, 2, 3), LoadSegment(0, b"", 0, False, "n"))


def _names(rec: Rec) -> list[str]:
    return rec.fields.split()


def _all_names(rec: Rec) -> list[str]:
    return (_all_names(rec.base) if rec.base else []) + _names(rec) + list(rec.computed) + list(rec.hidden)


def _init_names(rec: Rec) -> list[str]:
    return (_init_names(rec.base) if rec.base else []) + _names(rec)


_ORACLES: dict[type, type] = {}


def oracle(rec: Rec) -> type:
    """The dataclass `rec` describes (the same qualname, so that reprs compare)."""
    hit = _ORACLES.get(rec.cls)
    if hit is not None:
        return hit
    spec: list[Any] = [(n, Any, dataclasses.field(default=rec.defaults.get(n, NO))) for n in _names(rec)]
    spec += [(n, Any, dataclasses.field(init=False, default=d)) for n, d in rec.computed.items()]
    spec += [(n, Any, dataclasses.field(init=False, default_factory=f, repr=False, compare=False))
             for n, f in rec.hidden.items()]
    ns: dict[str, Any] = {}
    if rec.computed or rec.hidden:                # what the class computes: the values of a twin of the record
        def __post_init__(self: Any) -> None:
            twin = rec.cls(**{n: getattr(self, n) for n in _init_names(rec)})
            for n in (*rec.computed, *rec.hidden):
                object.__setattr__(self, n, getattr(twin, n))
        ns["__post_init__"] = __post_init__
    bases = (oracle(rec.base),) if rec.base else ()
    cls = dataclasses.make_dataclass(rec.cls.__qualname__, spec, bases=bases, frozen=True, namespace=ns)
    _ORACLES[rec.cls] = cls
    return cls


def samples(rec: Rec) -> list[tuple]:
    """Constructor arguments: the required ones, then all of them (positional)."""
    if rec.samples:
        return list(rec.samples)
    names = _init_names(rec)
    all_defaults = {**(rec.base.defaults if rec.base else {}), **rec.defaults}
    required = [n for n in names if n not in all_defaults]
    return [tuple(POOL[i % len(POOL)] for i in range(len(required))),
            tuple(POOL[(i + 5) % len(POOL)] for i in range(len(names)))]


def _other(rec: Rec, name: str, value: Any) -> Any:
    """A valid value of field `name` that differs from `value`."""
    v = rec.vary.get(name, ("other", name))
    return v(value) if callable(v) else v


def _both(rec: Rec, args: tuple) -> tuple[Any, Any]:
    return rec.cls(*args), oracle(rec)(*args)


def _ids(recs: list[Rec]) -> list[str]:
    return [r.cls.__qualname__ for r in recs]


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_fields_and_constructor_signature_are_the_dataclass_ones(rec):
    new, old = rec.cls, oracle(rec)
    assert not dataclasses.is_dataclass(new) and issubclass(new, record.Frozen)
    assert new._fields == tuple(f.name for f in dataclasses.fields(old)) == tuple(_all_names(rec))
    annotated = [n for k in reversed(new.__mro__) for n in vars(k).get("__annotations__", {})
                 if not n.startswith("_")]
    assert annotated == list(new._fields), "the annotations list the fields in __slots__ order"
    sig = [(p.name, p.kind, p.default) for p in inspect.signature(new).parameters.values()]
    assert sig == [(p.name, p.kind, p.default) for p in inspect.signature(old).parameters.values()]
    assert not hasattr(new(*samples(rec)[0]), "__dict__"), "a record has __slots__ only"


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_repr_eq_and_hash_are_the_dataclass_ones(rec):
    made = [_both(rec, args) for args in samples(rec)]
    for a, oa in made:
        b, ob = _both(rec, tuple(getattr(oa, n) for n in _init_names(rec)))
        assert repr(a) == repr(oa) and str(a) == str(oa)
        assert (a == b) is (oa == ob) is True and (a != b) is (oa != ob) is False
        assert hash(a) == hash(oa) == hash(b)
        assert a.__eq__(oa) is NotImplemented and oa.__eq__(a) is NotImplemented and a != oa
        assert a.__eq__(object()) is NotImplemented and a != (*a._asdict().values(),)
        for i, n in enumerate(_init_names(rec)):          # each field on its own decides ==
            args = [getattr(oa, m) for m in _init_names(rec)]
            args[i] = _other(rec, n, args[i])
            c, oc = _both(rec, tuple(args))
            assert (a == c) is (oa == oc) is False and (a != c) is (oa != oc) is True, n
            assert repr(c) == repr(oc)
    if len(made) > 1 and _init_names(rec):
        assert (made[0][0] == made[1][0]) is (made[0][1] == made[1][1])


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_assignment_and_deletion_raise_as_the_dataclass_did(rec):
    a, oa = _both(rec, samples(rec)[-1])
    for name in (*_all_names(rec), "not_a_field"):
        for act in (lambda o: setattr(o, name, 1), lambda o: delattr(o, name)):
            with pytest.raises(AttributeError) as new_err:
                act(a)
            with pytest.raises(AttributeError) as old_err:
                act(oa)
            assert type(new_err.value).__name__ == type(old_err.value).__name__ == "FrozenInstanceError"
            assert str(new_err.value) == str(old_err.value)
    assert repr(a) == repr(oa)


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_replace_pickle_and_copy(rec):
    for args in samples(rec):
        a, oa = _both(rec, args)
        for got in (pickle.loads(pickle.dumps(a)), copy.copy(a), copy.deepcopy(a), a._replace()):
            assert type(got) is rec.cls and got == a and repr(got) == repr(a)
        assert a._asdict() == {n: getattr(oa, n) for n in _all_names(rec)}
        for n in _init_names(rec)[:3]:
            v = _other(rec, n, getattr(a, n))
            assert repr(a._replace(**{n: v})) == repr(dataclasses.replace(oa, **{n: v}))


def test_the_error_is_an_attribute_error_named_as_dataclasses_names_it():
    assert issubclass(record.FrozenInstanceError, AttributeError)
    assert record.FrozenInstanceError.__name__ == dataclasses.FrozenInstanceError.__name__


def test_hidden_fields_must_be_fields_and_a_subclass_lists_its_bases_fields_first():
    with pytest.raises(TypeError, match="not fields"):
        class Bad(record.Frozen, hidden=("nope",)):
            __slots__ = ("a",)
    assert RegField._fields == Field._fields + ("access", "implemented")
    f, rf = Field("A", 0, 1), RegField("A", 0, 1)
    of, orf = oracle(FIELD)("A", 0, 1), oracle(RECORDS[_ids(RECORDS).index("RegField")])("A", 0, 1)
    assert f.__eq__(rf) is rf.__eq__(f) is of.__eq__(orf) is orf.__eq__(of) is NotImplemented   # not the same class
    assert f != rf and of != orf
    assert Reg._shown == Reg._fields[:-1] and "by_field" not in repr(Reg("R", 0))


def test_a_recursive_repr_says_dots_as_dataclasses():
    loop: list[Any] = []
    e = EventDef("ev", loop)                                          # type: ignore[arg-type]
    loop.append(e)
    old = oracle(RECORDS[_ids(RECORDS).index("EventDef")])("ev", None)
    object.__setattr__(old, "fields", [old])
    assert repr(e) == repr(old) == "EventDef(name='ev', fields=[...], doc='')"


# -- the mutable ones: plain classes with the dataclass's constructor -----------------------------------------
class Mut(NamedTuple):
    cls: type
    fields: str
    defaults: dict[str, Any]
    factories: dict[str, Any]                   # name -> the dataclass's default_factory


MUTABLE = [
    Mut(Fdt, "root reserved boot_cpuid_phys", {"boot_cpuid_phys": 0}, {"root": Node, "reserved": list}),
    Mut(_Counter, "value typer", {"value": 0, "typer": 0}, {}),
    Mut(Pmu, "config pmcr cnten ovs inten selr ccntr ccfiltr ctx cycles counters",
        {n: 0 for n in "pmcr cnten ovs inten selr ccntr ccfiltr cycles".split()},
        {"config": PmuConfig, "ctx": PmuContext, "counters": list}),
    Mut(ElfImage, "path entry segments symbolizer objects constants", {},
        {"symbolizer": Symbolizer, "objects": dict, "constants": dict}),
]


def _comparable(v: Any) -> Any:
    if isinstance(v, Node):
        return ("Node", v.name, dict(v.props), len(v.children))
    if isinstance(v, Symbolizer):
        return ("Symbolizer", tuple(v.symbols))
    if isinstance(v, list):
        return [_comparable(x) for x in v]
    if isinstance(v, _Counter):
        return ("Counter", v.value, v.typer)
    return v


def mutable_oracle(mut: Mut) -> type:
    spec = [(n, Any, dataclasses.field(default=mut.defaults[n]) if n in mut.defaults else
             dataclasses.field(default_factory=mut.factories[n]) if n in mut.factories else dataclasses.field())
            for n in mut.fields.split()]
    ns = {}
    if mut.cls is Pmu:                                   # Pmu's __post_init__: config.counters counters
        ns["__post_init__"] = lambda self: setattr(self, "counters", [_Counter() for _ in range(self.config.counters)])
    return dataclasses.make_dataclass(mut.cls.__qualname__, spec, namespace=ns)


@pytest.mark.parametrize("mut", MUTABLE, ids=[m.cls.__qualname__ for m in MUTABLE])
def test_mutable_records_keep_the_dataclass_constructor(mut):
    names, old = mut.fields.split(), mutable_oracle(mut)
    params = list(inspect.signature(mut.cls).parameters.values())
    old_params = list(inspect.signature(old).parameters.values())
    assert [(p.name, p.kind) for p in params] == [(p.name, p.kind) for p in old_params]
    for p, q in zip(params, old_params):                 # a default_factory is now None, made per instance
        assert p.default == (None if p.name in mut.factories else q.default), p.name
    required = [n for n in names if n not in mut.defaults and n not in mut.factories]
    args = [f"v{i}" for i in range(len(required))]
    a, b, oa = mut.cls(*args), mut.cls(*args), old(*args)
    for n in names:
        assert _comparable(getattr(a, n)) == _comparable(getattr(oa, n)), n
        if n in mut.factories:
            assert getattr(a, n) is not getattr(b, n), f"{n}: a fresh default per instance"
    setattr(a, names[-1], "changed")                      # mutable
    assert getattr(a, names[-1]) == "changed"


def test_pmu_counters_follow_the_config_as_its_post_init_did():
    p = Pmu(PmuConfig(PMUV3, 0x41, 0x03, 3), counters=[_Counter(9)])
    assert [(c.value, c.typer) for c in p.counters] == [(0, 0)] * 3 and p.ctx == PmuContext()
    assert Pmu(pmcr=1).pmcr == 1 and len(Pmu().counters) == 6


def test_mutable_records_keep_what_is_passed():
    root, reserved, segs = Node(""), [(1, 2)], [Segment(0, 0, b"", 0, 5)]
    t = Fdt(root, reserved, 3)
    assert t.root is root and t.reserved is reserved and t.boot_cpuid_phys == 3
    sym = Symbolizer([(0x10, 4, "f")])
    img = ElfImage("p", 1, segs, sym, {"o": (1, 2)}, {"N": 4})
    assert (img.path, img.entry, img.segments, img.symbolizer, img.objects, img.constants) == (
        "p", 1, segs, sym, {"o": (1, 2)}, {"N": 4})
    assert isinstance(Vector.IRQ, Enum) and TakenInterrupt(Vector.IRQ, 27, 1, 0, 0).what == \
        "IRQ (INTID 27) with no handler"
    assert Region(0, 0x1000, "ram", Ram(0x1000)).is_ram
