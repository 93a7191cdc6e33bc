"""The first `import unicorn` of a process, without the standard library modules its loader imports and drops.

Unicorn 2.1's binding finds its shared library at import (`unicorn_py3/unicorn.py`, `__load_uc_lib`) with
`importlib.resources.files('unicorn')` and `inspect.getfile(...)`, and keeps neither module. Importing them costs
a fresh interpreter 5-10 ms (`inspect` brings ast, dis and tokenize; `importlib.resources` brings tempfile,
shutil, zipfile and the compressors), a sixth of `smmu-harness run hello.elf`.

`install()` (called by `harness/__init__.py`) puts a one-shot finder on `sys.meta_path`. When `unicorn` is first
imported, its package runs with two small stand-ins in `sys.modules` in place of those two modules, which give
what the real functions give for these arguments: the package's directory and a function's source file. They
are removed as soon as the package has run, so a later `import inspect` gets the real module. The library found
is the same one (LIBUNICORN_PATH still comes first: the binding's search order is unchanged); a process that
already had either module loaded keeps it. If the package fails to import with a stand-in, it is imported again
the ordinary way, and that import's outcome is the answer.
"""
import sys

#: the modules the binding's loader imports only for a path, when the process has not loaded them yet
STOOD_IN = ("inspect", "importlib.resources")


def _stand_ins() -> dict:
    import types
    from pathlib import Path

    inspect = types.ModuleType("inspect", "smmu-harness stand-in while unicorn's package runs (harness/ucload.py)")
    inspect.getfile = lambda obj: obj.__code__.co_filename          # a function's file: what inspect gives
    resources = types.ModuleType("importlib.resources", inspect.__doc__)
    # a regular package's directory (importlib.resources.files of a package imported from the file system)
    resources.files = lambda anchor: Path(sys.modules[anchor].__file__).parent
    return {"inspect": inspect, "importlib.resources": resources}


class _Loader:
    """Runs the package with the stand-ins; the module keeps the real loader."""

    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.real
        stand_ins = {name: mod for name, mod in _stand_ins().items() if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            self.real.exec_module(module)
            return
        except Exception:                                            # noqa: BLE001 - imported again below
            for name in [n for n in sys.modules if n.startswith("unicorn.")]:
                del sys.modules[name]
        finally:
            for name, mod in stand_ins.items():
                if sys.modules.get(name) is mod:
                    del sys.modules[name]
        self.real.exec_module(module)                                # the ordinary import: its outcome stands


class _Finder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "unicorn" or path is not None:
            return None
        uninstall()
        spec = None
        for finder in sys.meta_path:                                 # the search the import would have made
            find = getattr(finder, "find_spec", None)
            if find is not None and (spec := find(fullname, None, target)) is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if "unicorn" not in sys.modules and _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def uninstall() -> None:
    if _Finder in sys.meta_path:
        sys.meta_path.remove(_Finder)
