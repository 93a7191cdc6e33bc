"""`harness/` uses only public names of `devmodel` objects (STYLE: extend a device through the public hooks it
declares, never by overriding or calling another class's underscore members).

The checker walks the AST of every `harness/**/*.py` and reports, with file and line:
* `from devmodel... import _x` and `mod._x` / `Cls._x` on a devmodel module or class;
* in a harness class derived (directly or through harness classes) from a devmodel class: a method or class
  attribute that overrides an underscore member of the devmodel base, and `self._x` / `super()._x` for any
  `_x` the harness classes of its MRO do not define themselves;
* `obj._x` where `obj` is known to be a devmodel instance (assigned from a devmodel class call, or annotated
  with a devmodel class: locals, parameters, `self.attr`, class-level annotations);
* `obj._x` on an object of unknown type when `_x` is an underscore member of some devmodel class and no harness
  code defines a member of that name (names defined on both sides are only reported where the type is known);
* the same for `getattr/setattr/hasattr/delattr(obj, "_x")`.
Dunder names are public; so are the namedtuple API (`_replace`, `_asdict`, `_fields`, `_make`,
`_field_defaults`) and Enum's `_sunder_` names.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

import devmodel

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_UNDERSCORE = frozenset(("_replace", "_asdict", "_fields", "_make", "_field_defaults"))
ATTR_FUNCS = frozenset(("getattr", "setattr", "hasattr", "delattr"))


def is_private(name: str) -> bool:
    if not name.startswith("_") or name in PUBLIC_UNDERSCORE:
        return False
    if name.startswith("__") and name.endswith("__"):
        return False                                  # dunder
    return not (name.endswith("_") and not name.startswith("__") and len(name) > 2)   # Enum _sunder_


# -- the devmodel side ---------------------------------------------------------------------------------------------
def _self_stores(cls_node: ast.ClassDef) -> set[str]:
    """Names assigned as `self.<name>` in the class's methods, plus `__slots__` entries."""
    out: set[str] = set()
    for node in ast.walk(cls_node):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.value, ast.Name) and node.value.id == "self":
            out.add(node.attr)
    return out


class Devmodel:
    """Private member names of every devmodel class (own dict, instance attributes from the AST, devmodel
    bases included) and of every devmodel module."""

    def __init__(self) -> None:
        self.modules: dict[str, Any] = {"devmodel": devmodel}
        for info in pkgutil.walk_packages(devmodel.__path__, "devmodel."):
            self.modules[info.name] = importlib.import_module(info.name)
        inst: dict[tuple[str, str], set[str]] = {}
        for name, mod in self.modules.items():
            src = getattr(mod, "__file__", None)
            if src:
                for node in ast.parse(Path(src).read_text()).body:
                    if isinstance(node, ast.ClassDef):
                        inst[(name, node.name)] = _self_stores(node)
        self._inst = inst
        self._cache: dict[type, frozenset[str]] = {}
        self.all_private: set[str] = set()
        for mod in self.modules.values():
            for obj in vars(mod).values():
                if isinstance(obj, type) and obj.__module__.startswith("devmodel"):
                    self.all_private |= self.privates(obj)

    @staticmethod
    def is_devmodel_class(obj: Any) -> bool:
        return isinstance(obj, type) and any(k.__module__.split(".")[0] == "devmodel" for k in obj.__mro__)

    def privates(self, cls: type) -> frozenset[str]:
        hit = self._cache.get(cls)
        if hit is None:
            names: set[str] = set()
            for k in cls.__mro__:
                if k.__module__.split(".")[0] != "devmodel":
                    continue
                names |= {n for n in vars(k) if is_private(n)}
                names |= {n for n in self._inst.get((k.__module__, k.__name__), ()) if is_private(n)}
            hit = self._cache[cls] = frozenset(names)
        return hit


# -- the harness side ----------------------------------------------------------------------------------------------
@dataclass
class HClass:
    module: str
    node: ast.ClassDef
    bases: list[Any] = field(default_factory=list)       # devmodel class objects or harness "mod.Class" names
    own: set[str] = field(default_factory=set)           # underscore members the class itself defines
    attr_types: dict[str, Any] = field(default_factory=dict)   # self.<attr> -> devmodel class


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, modname: str, is_pkg: bool, dm: Devmodel) -> dict[str, Any]:
    """Local name -> devmodel module/object, or the string "harness.mod.Name" for harness objects."""
    names: dict[str, Any] = {}
    pkg = modname if is_pkg else modname.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.asname or a.name.split(".")[0]
                if a.name.split(".")[0] == "devmodel":
                    names[top] = dm.modules.get(a.name if a.asname else "devmodel")
                else:
                    names[top] = f"module:{a.name}"        # a module from outside devmodel (os, sys ...)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                local = a.asname or a.name
                if base.split(".")[0] == "devmodel":
                    sub = dm.modules.get(f"{base}.{a.name}")
                    names[local] = sub if sub is not None else getattr(dm.modules.get(base), a.name, None)
                else:
                    names[local] = f"{base}.{a.name}"
    return names


class Checker:
    def __init__(self, dm: Devmodel) -> None:
        self.dm = dm
        self.classes: dict[str, HClass] = {}
        self.harness_private: set[str] = set()
        self.files: list[tuple[str, str, ast.Module, dict[str, Any]]] = []

    def add(self, source: str, modname: str, path: str = "", is_pkg: bool = False) -> None:
        tree = ast.parse(source)
        names = _imports(tree, modname, is_pkg, self.dm)
        self.files.append((path or modname, modname, tree, names))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and is_private(node.name):
                self.harness_private.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and is_private(node.attr):
                self.harness_private.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and is_private(node.id):
                self.harness_private.add(node.id)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                hc = HClass(modname, node, [self._resolve(b, names) for b in node.bases])
                hc.own = {n for n in _self_stores(node) if is_private(n)}
                for item in node.body:
                    for n in _defined(item):
                        if is_private(n):
                            hc.own.add(n)
                hc.attr_types = self._attr_types(node, names)
                self.classes[f"{modname}.{node.name}"] = hc

    def _resolve(self, expr: ast.expr | None, names: dict[str, Any]) -> Any:
        if isinstance(expr, ast.Name):
            return names.get(expr.id, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self._resolve(expr.value, names)
            if base is not None and not isinstance(base, str):
                return getattr(base, expr.attr, None)
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            try:
                return self._resolve(ast.parse(expr.value, mode="eval").body, names)
            except SyntaxError:
                return None
        return None

    def _dm_type(self, expr: ast.expr | None, names: dict[str, Any]) -> type | None:
        """The devmodel class an annotation names, or that a call expression constructs."""
        if isinstance(expr, ast.Call):
            expr = expr.func
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):      # string annotation
            try:
                expr = ast.parse(expr.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(expr, ast.BinOp):              # `T | None`
            return self._dm_type(expr.left, names) or self._dm_type(expr.right, names)
        obj = self._resolve(expr, names)
        return obj if self.dm.is_devmodel_class(obj) else None

    def _attr_types(self, node: ast.ClassDef, names: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in ast.walk(node):
            if isinstance(n, ast.AnnAssign):
                t = self._dm_type(n.annotation, names) or self._dm_type(n.value, names)
                target = n.target
            elif isinstance(n, ast.Assign) and len(n.targets) == 1:
                t, target = self._dm_type(n.value, names), n.targets[0]
            else:
                continue
            if t is None:
                continue
            if isinstance(target, ast.Name) and n in node.body:
                out[target.id] = t
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and target.value.id == "self":
                out[target.attr] = t
        return out

    def mro(self, key: str, seen: frozenset[str] = frozenset()) -> tuple[list[HClass], list[type]]:
        """(harness classes, devmodel classes) of the MRO of harness class `key`."""
        hc = self.classes.get(key)
        if hc is None or key in seen:
            return [], []
        hs, ds = [hc], []
        for b in hc.bases:
            if isinstance(b, str):
                h2, d2 = self.mro(b if b in self.classes else f"{hc.module}.{b}", seen | {key})
                hs += h2
                ds += d2
            elif self.dm.is_devmodel_class(b):
                ds.append(b)
        return hs, ds

    def violations(self) -> list[str]:
        out: list[str] = []
        for path, modname, tree, names in self.files:
            out += [f"{path}:{line}: {msg}" for line, msg in _Visitor(self, modname, names).run(tree)]
        return out


def _defined(item: ast.stmt) -> list[str]:
    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [item.name]
    if isinstance(item, ast.Assign):
        return [t.id for t in item.targets if isinstance(t, ast.Name)]
    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
        return [item.target.id]
    return []


class _Visitor:
    def __init__(self, ck: Checker, modname: str, names: dict[str, Any]) -> None:
        self.ck, self.modname, self.names = ck, modname, names
        self.found: list[tuple[int, str]] = []

    def run(self, tree: ast.Module) -> list[tuple[int, str]]:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "devmodel":
                for a in node.names:
                    if is_private(a.name):
                        self.found.append((node.lineno, f"imports private {node.module}.{a.name}"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                self._class(node)
            else:
                self._scope(node, None, self._locals(node))
        return self.found

    def _class(self, node: ast.ClassDef) -> None:
        hs, ds = self.ck.mro(f"{self.modname}.{node.name}")
        dm_priv: frozenset[str] = frozenset().union(*(self.ck.dm.privates(d) for d in ds)) if ds else frozenset()
        own = set().union(*(h.own for h in hs)) - dm_priv
        ctx = (node.name, dm_priv, own, bool(ds), hs[0].attr_types if hs else {})
        for item in node.body:
            for n in _defined(item):
                if n in dm_priv:
                    self.found.append((item.lineno, f"{node.name}.{n} overrides a private member of "
                                                    f"{', '.join(d.__name__ for d in ds)}"))
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = item.args.posonlyargs + item.args.args
                self._scope(item, ctx, self._locals(item), args[0].arg if args else None)
            else:
                self._scope(item, ctx, {})

    def _locals(self, fn: ast.AST) -> dict[str, type]:
        out: dict[str, type] = {}
        args = getattr(fn, "args", None)
        if args is not None:
            for a in args.posonlyargs + args.args + args.kwonlyargs:
                t = self.ck._dm_type(a.annotation, self.names)
                if t is not None:
                    out[a.arg] = t
        for n in ast.walk(fn):
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                t = self.ck._dm_type(n.value, self.names)
                if t is not None:
                    out[n.targets[0].id] = t
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                t = self.ck._dm_type(n.annotation, self.names)
                if t is not None:
                    out[n.target.id] = t
        return out

    def _scope(self, root: ast.AST, ctx: Any, local_types: dict[str, type], self_name: str | None = None) -> None:
        for node in ast.walk(root):
            for obj, attr in _accesses(node):
                msg = self._judge(obj, attr, ctx, local_types, self_name)
                if msg:
                    self.found.append((node.lineno, msg))

    def _judge(self, obj: ast.expr, attr: str, ctx: Any, local_types: dict[str, type],
               self_name: str | None) -> str | None:
        if not is_private(attr):
            return None
        target = self.ck._resolve(obj, self.names) if isinstance(obj, (ast.Name, ast.Attribute)) else None
        if target is not None and not isinstance(target, str):       # a devmodel module or class
            return f"{ast.unparse(obj)}.{attr}: private member of devmodel {getattr(target, '__name__', target)}"
        if ctx is not None:
            cname, dm_priv, own, derived, attr_types = ctx
            is_self = isinstance(obj, ast.Name) and obj.id == self_name
            is_super = isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == "super"
            if derived and (is_self or is_super) and (attr in dm_priv or attr not in own):
                return f"{ast.unparse(obj)}.{attr}: private member of the devmodel base of {cname}"
            if is_self or is_super:
                return None
            if isinstance(obj, ast.Attribute) and isinstance(obj.value, ast.Name) and obj.value.id == self_name \
                    and obj.attr in attr_types:
                return f"{ast.unparse(obj)}.{attr}: private member of devmodel {attr_types[obj.attr].__name__}"
        if isinstance(obj, ast.Name) and obj.id in local_types:
            return f"{obj.id}.{attr}: private member of devmodel {local_types[obj.id].__name__}"
        if isinstance(obj, ast.Name) and _foreign(self.names.get(obj.id)):
            return None                                  # os._exit, sys._getframe, uclib._name: not devmodel's
        if attr in self.ck.dm.all_private and attr not in self.ck.harness_private:
            return f"{ast.unparse(obj)}.{attr}: private member of a devmodel class"
        return None


def _foreign(bound: Any) -> bool:
    """A name bound to a module from outside devmodel ("module:os"), or to an object imported from a package
    other than devmodel and harness ("unicorn.unicorn_py3.unicorn.uclib": a ctypes library, whose `_name` and
    `_handle` the ctypes documentation makes public): no devmodel object."""
    if not isinstance(bound, str):
        return False
    return bound.startswith("module:") or bound.split(".")[0] not in ("devmodel", "harness")


def _accesses(node: ast.AST) -> Iterator[tuple[ast.expr, str]]:
    if isinstance(node, ast.Attribute):
        yield node.value, node.attr
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTR_FUNCS \
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
            and isinstance(node.args[1].value, str):
        yield node.args[0], node.args[1].value


# -- the tests -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dm() -> Devmodel:
    return Devmodel()


def harness_checker(dm: Devmodel) -> Checker:
    ck = Checker(dm)
    for path in sorted((ROOT / "harness").rglob("*.py")):
        ck.add(path.read_text(), module_name(path), str(path.relative_to(ROOT)), path.name == "__init__.py")
    return ck


def test_harness_uses_only_public_devmodel_names(dm: Devmodel) -> None:
    assert harness_checker(dm).violations() == []


OLD_SHAPE = '''
from devmodel.smmuv3 import device
from devmodel.smmuv3.device import SMMUv3, _RWX
from devmodel.bus import Bus


class VSmmu(SMMUv3):
    def __init__(self, bus):
        self._pending = []
        super().__init__(bus)

    def _on_cr0_write(self, old, new):
        super()._on_cr0_write(old, new)
        if self._field("CR0ACK", "SMMUEN"):
            self._pending.clear()

    def _process_cmdq(self):
        outer = not self._cmdq_busy
        super()._process_cmdq()

    def _internal(self):
        self._cmdq_busy = False
        self._gerror("CMDQ_ERR")
        self._record(None)


class Deeper(VSmmu):
    def poke(self):
        self._alias(0)
        self._pending.append(1)


def use(bus):
    smmu = SMMUv3(bus)
    smmu._consume_cmdq()
    getattr(smmu, "_inv_config")
    device._RWX


class Holder:
    smmu: SMMUv3

    def go(self, s: "SMMUv3 | None"):
        self.smmu._fetch_pa(0, 8, "ste")
        s._decode_config(1, None)
        self.other._nested_fetcher
'''


def _report(dm: Devmodel, source: str, modname: str = "harness.snippet") -> list[str]:
    ck = Checker(dm)
    ck.add(textwrap.dedent(source), modname)
    return ck.violations()


def test_checker_reports_the_old_vsmmu_shape(dm: Devmodel) -> None:
    found = _report(dm, OLD_SHAPE)
    text = "\n".join(found)
    for expected in ("imports private devmodel.smmuv3.device._RWX",
                     "VSmmu._on_cr0_write overrides a private member of SMMUv3",
                     "VSmmu._process_cmdq overrides a private member of SMMUv3",
                     "super()._on_cr0_write", "self._field", "self._cmdq_busy", "self._gerror", "self._record",
                     "self._alias",                                    # through a harness subclass
                     "smmu._consume_cmdq: private member of devmodel SMMUv3", "smmu._inv_config",
                     "device._RWX", "self.smmu._fetch_pa", "s._decode_config",
                     "self.other._nested_fetcher: private member of a devmodel class"):
        assert expected in text, (expected, found)
    # the harness class's own private state is not reported
    assert not any("._pending" in f for f in found), found
    assert not any("self._internal" in f for f in found), found


def test_checker_accepts_public_use_and_own_privates(dm: Devmodel) -> None:
    assert _report(dm, '''
        from devmodel.smmuv3.device import SMMUv3
        from devmodel.smmuv3.config import TransResult


        class V(SMMUv3):
            def __init__(self, bus):
                super().__init__(bus, core=None)
                self._mine = 0
                self.hooks.smmuen.append(self._changed)

            def _changed(self, enabled):
                self._mine += self.field("CR0ACK", "SMMUEN")
                return self.__class__.__name__

        def f(r: TransResult):
            return r._replace(pa=0)
    ''') == []


def _old_vsmmu() -> str | None:
    """harness/vsmmu.py as it was before it moved to the public extension points (from git history)."""
    try:
        rev = subprocess.run(["git", "log", "-1", "--format=%H", "-S", "def _make_core", "--", "harness/vsmmu.py"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        if not rev:
            return None
        out = subprocess.run(["git", "show", f"{rev}^:harness/vsmmu.py"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 and "def _make_core" in out.stdout else None


def test_checker_fails_on_the_vsmmu_from_history(dm: Devmodel) -> None:
    old = _old_vsmmu()
    if old is None:
        pytest.skip("no git history with the old harness/vsmmu.py here")
    found = _report(dm, old, "harness.vsmmu")
    names = {f.split(": ", 1)[1].split(":")[0] for f in found}
    for expected in ("super()._on_cr0_write", "super()._process_cmdq", "self._field", "self._on",
                     "self._record", "self._evtq_write", "self._cmdq_error", "self._sync", "self._gerror",
                     "self._fetch_pa", "self._cmdq_busy", "self._alias"):
        assert expected in names, (expected, sorted(names))
    assert any("overrides a private member" in f and "_on_cr0_write" in f for f in found), found
