"""Unicorn's answers to harness/cpu.py's scratch-CPU questions, kept on disk between runs (start-up of `run`).

`cpu.features(model)` reads a model's ID registers from a scratch Unicorn (~1.5 ms) and `cpu.probe_undefined`
runs instructions on a scratch CPU (~1 ms to make it, ~0.05-0.1 ms a probe). Both answers are a pure function of
the Unicorn build, the CPU model, the probe's arguments and the probe code, so they are kept in
`<cache dir>/probes/unicorn-<digest>.marshal` (harness/locations.py `cache_dir`: `$SMMU_HARNESS_CACHE`, a
checkout's `.guest-cache/`, else the user's cache directory). The key (`cache_key`) is the libunicorn the binding
loaded (its path, size and st_mtime_ns: not a hash of its 24 MB), `unicorn.__version__`, the binding module's
path, size and st_mtime_ns (these name the file: one per Unicorn build), a SHA-256 of the probe code's source and
what else its answers read (harness/cpu.py passes its own source and the PMU counter counts its reset state
writes; a file of other code is overwritten at the next new answer). Inside, `ids` maps a model to its ID
register values and `answers` maps (model, start EL, word, EL, permissive) to probe_undefined's answer.

The file is read once per process, and a new answer is written at once (a forked worker never runs atexit
handlers): merged with the file as it is then, written to a new temporary file in the same directory and renamed
over it (`os.replace`), so concurrent runs lose at most each other's newest answers, never the file. marshal,
not json or pickle: a run of hello imports neither (tests/harness/test_startup_imports.py). A file that is
unreadable, truncated, corrupt, of another key or holding a value of the wrong type, and a cache directory that
cannot be written, mean probing as without the cache: never an error, and never an answer that is not
Unicorn's (every value is type-checked where it is used).
"""
from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import Iterable

__all__ = ["FORMAT", "MAX_ANSWERS", "ProbeCache", "cache_key", "file_identity", "unicorn_identity"]

#: the file's first item; a new layout changes it (an old file is then another key's)
FORMAT = "smmu-harness unicorn probes 1"
#: answers kept at most: past it a write keeps only this process's (random-instruction guests probe new words)
MAX_ANSWERS = 8192
_U64 = 1 << 64


def file_identity(path: str) -> tuple[str, int, int]:
    """(path, size, st_mtime_ns) of a file (OSError if it is not there)."""
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def unicorn_identity() -> tuple | None:
    """The libunicorn the Python binding loaded and the binding itself, as `file_identity`s, with
    `unicorn.__version__`; None when the library cannot be named (a bare soname the dynamic loader resolved)."""
    import unicorn
    import unicorn.unicorn_py3.unicorn as binding
    from unicorn.unicorn_py3.unicorn import uclib

    name = uclib._name                             # public, the ctypes documentation says (CDLL._name)
    if not isinstance(name, str) or not os.path.isabs(name):
        return None
    try:
        return file_identity(name), str(unicorn.__version__), file_identity(binding.__file__)
    except (OSError, TypeError, ValueError):
        return None


def _sha256():
    """CPython's built-in `_sha256` (hashlib loads OpenSSL: 2 ms of start-up; harness/native does the same)."""
    try:
        from _sha256 import sha256
    except ImportError:                            # pragma: no cover - Python 3.12 names it _sha2
        from hashlib import sha256
    return sha256()


def cache_key(sources: Iterable[str], extra: tuple) -> tuple | None:
    """(FORMAT, `unicorn_identity()`, SHA-256 of the `sources` files, `extra`); None without a Unicorn
    identity or a readable source (no disk cache then)."""
    lib = unicorn_identity()
    if lib is None:
        return None
    h = _sha256()
    try:
        for s in sources:
            h.update(Path(s).read_bytes() + b"\0")
    except OSError:
        return None
    return FORMAT, lib, h.hexdigest(), extra


def _valid_ids(value: object, names: frozenset[str]) -> bool:
    return (type(value) is dict and value.keys() == names
            and all(type(v) is int and 0 <= v < _U64 for v in value.values()))


class ProbeCache:
    """The answers of one key in `directory` (module docstring); `directory` or `key` None: nothing kept."""

    def __init__(self, directory: Path | None, key: tuple | None, id_names: Iterable[str]):
        self.key = key
        self.id_names = frozenset(id_names)
        self.path = None if directory is None or key is None else directory / "probes" / _file_name(key)
        self.ids: dict[str, dict[str, int]] = {}
        self.answers: dict[tuple, bool] = {}
        self.learned: tuple[dict, dict] = ({}, {})     # this process's new (ids, answers)
        self.loaded = False
        self.writable = self.path is not None

    def model_ids(self, model: str) -> dict[str, int] | None:
        """The ID registers of `model` as stored (checked: every name of `id_names`, 64-bit values), else None."""
        self._load()
        ids = self.ids.get(model)
        return dict(ids) if _valid_ids(ids, self.id_names) else None

    def answer(self, key: tuple) -> bool | None:
        self._load()
        value = self.answers.get(key)
        return value if type(value) is bool else None

    def add_ids(self, model: str, ids: dict[str, int]) -> None:
        self._load()
        self.learned[0][model] = dict(ids)
        self._store()

    def add_answer(self, key: tuple, value: bool) -> None:
        self._load()
        self.learned[1][key] = bool(value)
        self._store()

    def _load(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.ids, self.answers = self._read()

    def _read(self) -> tuple[dict, dict]:
        """The file's (ids, answers); both empty when it is absent, unreadable or not this key's."""
        if self.path is None:
            return {}, {}
        try:
            data = marshal.loads(self.path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError, MemoryError):
            return {}, {}
        if type(data) is not tuple or len(data) != 3 or data[0] != self.key:
            return {}, {}
        ids, answers = data[1], data[2]
        if type(ids) is not dict or type(answers) is not dict:
            return {}, {}
        return ids, answers

    def _store(self) -> None:
        """Merge with the file as it is now and replace it atomically; a failure turns writing off."""
        ids, answers = self._read() if self.writable else (self.ids, self.answers)
        if len(answers) + len(self.learned[1]) > MAX_ANSWERS:
            answers = {}
        self.ids, self.answers = {**ids, **self.learned[0]}, {**answers, **self.learned[1]}
        if not self.writable:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                f.write(marshal.dumps((self.key, self.ids, self.answers)))
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            self.writable = False
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _file_name(key: tuple) -> str:
    """One file per Unicorn build (the key's Unicorn identity); the probe code's digest is checked inside."""
    h = _sha256()
    h.update(repr(key[1]).encode())
    return f"unicorn-{h.hexdigest()[:16]}.marshal"
