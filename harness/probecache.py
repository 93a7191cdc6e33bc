"""Unicorn's answers to harness/cpu.py's scratch-CPU questions, kept on disk between runs (start-up of `run`).

`cpu.features(model)` reads a model's ID registers from a scratch Unicorn and `cpu.probe_undefined` runs
instructions on another (~1 ms to make one, mostly `uc_init`; ~0.05-0.1 ms a probe). Both answers are a pure
function of the Unicorn build, the CPU model, the probe's arguments and the probe code, so they are kept in
`<cache dir>/probes/unicorn-<digest>.marshal` (harness/locations.py `cache_dir`: `$SMMU_HARNESS_CACHE`, a checkout's
`.guest-cache/`, else the user's cache directory). The key (`cache_key`) is the libunicorn the binding loaded (its
path, size and st_mtime_ns: not a hash of its 24 MB), `unicorn.__version__`, the binding module's path, size and
st_mtime_ns (these name the file: one per Unicorn build), a SHA-256 of the probe code's source and what else its
answers read (harness/cpu.py passes its own source and the PMU counter counts its reset state writes; a file of
other code is overwritten at the next new answer). Inside, `ids` maps a model to its ID register values and
`buckets` maps (model, start EL, permissive) to probe_undefined's answers there, packed as sorted native uint64s
`word << 3 | EL << 1 | undefined` (`pack`): a lookup bisects a memoryview of them, so reading a file of thousands
of answers (random-instruction guests probe many words) costs no decoding.

The file is read once per process. A process's new answers are written when their count reaches 1, 2, 4, 8, ... (a
forked worker, which runs no atexit handler, keeps at least half of them) and the rest at exit: merged with the
file as it is then, written to a new temporary file in the same directory and renamed over it (`os.replace`), so
concurrent runs lose at most each other's newest answers, never the file; past MAX_ANSWERS the file's older answers
are dropped. marshal, not json or pickle: a run of hello imports neither (tests/harness/test_startup_imports.py). A
file that is unreadable, truncated, corrupt, of another key or holding a value of the wrong type, and a cache
directory that cannot be written, mean probing as without the cache: never an error, and never an answer for
another question (every value is type-checked where it is used, a packed answer must carry the word and EL asked).
"""
from __future__ import annotations

import marshal
import os
import struct
import sys
from bisect import bisect_left
from pathlib import Path
from typing import Iterable

__all__ = ["FORMAT", "MAX_ANSWERS", "ProbeCache", "cache_key", "file_identity", "pack", "unicorn_identity"]

#: the key's first item; a new layout changes it (an old file is then another key's)
FORMAT = "smmu-harness unicorn probes 2"
#: answers kept at most: past it a write keeps only this process's (random-instruction guests probe new words)
MAX_ANSWERS = 16384
_U64, _U32 = 1 << 64, 1 << 32


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
    """(FORMAT, byte order of the packed answers, `unicorn_identity()`, SHA-256 of the `sources` files,
    `extra`); None without a Unicorn identity or a readable source (no disk cache then)."""
    lib = unicorn_identity()
    if lib is None:
        return None
    h = _sha256()
    try:
        for s in sources:
            h.update(Path(s).read_bytes() + b"\0")
    except OSError:
        return None
    return FORMAT, sys.byteorder, lib, h.hexdigest(), extra


def _valid_ids(value: object, names: frozenset[str]) -> bool:
    return (type(value) is dict and value.keys() == names
            and all(type(v) is int and 0 <= v < _U64 for v in value.values()))


def pack(answers: dict[tuple[int, int], bool]) -> bytes:
    """{(word, EL): undefined} as the file keeps it: sorted native uint64s `word << 3 | EL << 1 | undefined`."""
    return struct.pack(f"{len(answers)}Q", *sorted(w << 3 | el << 1 | bool(u) for (w, el), u in answers.items()))


def _unpack(blob: object) -> dict[tuple[int, int], bool]:
    packed = _entries(blob)
    return {} if packed is None else {(e >> 3, (e >> 1) & 3): bool(e & 1) for e in packed.tolist()}


def _packable(word: object, el: object) -> bool:
    return type(word) is int and type(el) is int and 0 <= word < _U32 and 0 <= el < 4


def _entries(blob: object) -> memoryview | None:
    """The packed answers of a bucket, None if `blob` is not a whole number of uint64s."""
    if type(blob) is not bytes or len(blob) % 8:
        return None
    return memoryview(blob).cast("Q")


class ProbeCache:
    """The answers of one key in `directory` (module docstring); `directory` or `key` None: nothing kept."""

    def __init__(self, directory: Path | None, key: tuple | None, id_names: Iterable[str]):
        self.key = key
        self.id_names = frozenset(id_names)
        self.path = None if directory is None or key is None else directory / "probes" / _file_name(key)
        self.ids: dict = {}                            # model -> ID registers, as read (checked when used)
        self.buckets: dict = {}                        # (model, start EL, permissive) -> packed answers, as read
        self.views: dict[tuple, memoryview | None] = {}
        self.learned: tuple[dict, dict] = ({}, {})     # this process's (ids, {bucket: {(word, EL): undefined}})
        self.count = self.saved = 0                    # answers and ID sets learned; how many at the last write
        self.loaded = self.at_exit = False
        self.writable = self.path is not None

    def model_ids(self, model: str) -> dict[str, int] | None:
        """The ID registers of `model` as stored (checked: every name of `id_names`, 64-bit values), else None."""
        self._load()
        ids = self.learned[0].get(model) or self.ids.get(model)
        return dict(ids) if _valid_ids(ids, self.id_names) else None

    def answer(self, key: tuple) -> bool | None:
        """The stored answer to (model, start EL, word, EL, permissive), None if there is none."""
        bucket, word, el = (key[0], key[1], key[4]), key[2], key[3]
        if not _packable(word, el):
            return None
        self._load()
        mine = self.learned[1].get(bucket)
        if mine and (word, el) in mine:
            return mine[word, el]
        view = self._view(bucket)
        if view is None:
            return None
        target = word << 3 | el << 1
        i = bisect_left(view, target)
        return bool(view[i] & 1) if i < len(view) and view[i] >> 1 == target >> 1 else None

    def _view(self, bucket: tuple) -> memoryview | None:
        if bucket not in self.views:
            self.views[bucket] = _entries(self.buckets.get(bucket))
        return self.views[bucket]

    def add_ids(self, model: str, ids: dict[str, int]) -> None:
        self._load()
        self.learned[0][model] = dict(ids)
        self._learned_one()

    def add_answer(self, key: tuple, value: bool) -> None:
        """Keep an answer (module docstring: written at the 1st, 2nd, 4th, ... new one, the rest at exit)."""
        word, el = key[2], key[3]
        if not _packable(word, el):
            return
        self._load()
        self.learned[1].setdefault((key[0], key[1], key[4]), {})[word, el] = bool(value)
        self._learned_one()

    def _learned_one(self) -> None:
        self.count += 1
        if self.count >= 2 * self.saved:
            self.flush()
        elif not self.at_exit:
            import atexit
            atexit.register(self.flush)
            self.at_exit = True

    def flush(self) -> None:
        """Write what this process learned that the file may not have (nothing if it wrote it already)."""
        if self.count > self.saved:
            self.saved = self.count
            self._store()

    def _load(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.ids, self.buckets = self._read()

    def _read(self) -> tuple[dict, dict]:
        """The file's (ids, buckets); both empty when it is absent, unreadable or not this key's."""
        if self.path is None:
            return {}, {}
        try:
            data = marshal.loads(self.path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError, MemoryError):
            return {}, {}
        if type(data) is not tuple or len(data) != 3 or data[0] != self.key:
            return {}, {}
        ids, buckets = data[1], data[2]
        if type(ids) is not dict or type(buckets) is not dict:
            return {}, {}
        return ids, buckets

    def _merged(self) -> tuple[dict, dict]:
        """The file's ids and buckets as they are now with this process's added (the older dropped past
        MAX_ANSWERS)."""
        ids, buckets = self._read()
        learned = self.learned[1]
        if sum(len(b) // 8 for b in buckets.values() if type(b) is bytes) + sum(map(len, learned.values())) \
                > MAX_ANSWERS:
            buckets = {}
        ids = {m: v for m, v in ids.items() if _valid_ids(v, self.id_names)}
        ids.update(self.learned[0])
        buckets = {b: v for b, v in buckets.items() if _entries(v) is not None}
        for bucket, mine in learned.items():
            buckets[bucket] = pack({**_unpack(buckets.get(bucket)), **mine})
        return ids, buckets

    def _store(self) -> None:
        """Merge with the file as it is now and replace it atomically; a failure turns writing off."""
        if not self.writable:
            return
        self.ids, self.buckets = self._merged()
        self.views = {}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                f.write(marshal.dumps((self.key, self.ids, self.buckets)))
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
    h.update(repr(key[2]).encode())
    return f"unicorn-{h.hexdigest()[:16]}.marshal"
