"""harness/probecache.py: the scratch-CPU answers (`features`' ID registers, `probe_undefined`) kept on disk.

A warm run of hello makes no Unicorn besides its vCPU's; a cold one (empty cache directory) computes the same
answers; a corrupt, truncated, foreign or wrong-typed file and a cache directory that cannot be written fall back
to probing with the same answers; the key follows the library's stat, the probe code and its other inputs."""
from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cpu, probecache
from harness.cpu import ID_REGS, features, fresh_probe, probe_undefined, read_ids
from harness.locations import cache_dir
from harness.probecache import ProbeCache, cache_key
from harness.sysregs import mrs_word, msr_word

from guestbin import ROOT, guest_elf

# Words whose answers differ between ELs, start ELs and permissive (see tests/harness/test_cpu.py)
HCR_EL2, CNTPCT_EL0, CTR_EL0, ZCR_EL1 = (3, 4, 1, 1, 0), (3, 3, 14, 0, 1), (3, 3, 0, 0, 1), (3, 0, 1, 2, 0)
WORDS = [mrs_word(HCR_EL2), msr_word(HCR_EL2), mrs_word(CNTPCT_EL0), mrs_word(CTR_EL0), mrs_word(ZCR_EL1),
         0xD503207F, 0xD50B7420, mrs_word((3, 6, 1, 1, 0))]                       # WFI, DC ZVA, MRS SCR_EL3
CASES = [(start_el, w, el, permissive) for start_el in (1, 2) for w in WORDS for el in (0, 1, 2)
         for permissive in (False, True)]

_RUN = """
import contextlib, io, json, sys
import unicorn
made = []
init = unicorn.Uc.__init__
def spy(self, *a, **kw):
    made.append(1)
    init(self, *a, **kw)
unicorn.Uc.__init__ = spy
from harness.cli import main
from harness.cpu import features, probe_undefined
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["run", sys.argv[1]])
at_run_end = len(made)
cases = json.loads(sys.argv[2])
answers = [probe_undefined("max", s, w, el, p) for s, w, el, p in cases]
print(json.dumps({"code": code, "ucs_in_run": at_run_end, "ucs": len(made), "ids": dict(features("max").ids),
                  "answers": answers}))
"""


def _run_hello(cache: Path) -> dict:
    env = dict(os.environ, SMMU_HARNESS_CACHE=str(cache))
    p = subprocess.run([sys.executable, "-c", _RUN, str(guest_elf("hello")), json.dumps(CASES)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def cold_cache(tmp_path) -> Path:
    """An empty cache directory that shares the checkout's native helpers (no C compile in the test)."""
    native = cache_dir() / "native"
    native.mkdir(parents=True, exist_ok=True)
    (tmp_path / "native").symlink_to(native, target_is_directory=True)
    return tmp_path


def test_a_warm_run_makes_no_scratch_unicorn_and_answers_as_a_cold_one(cold_cache):
    cold = _run_hello(cold_cache)
    assert cold["code"] == 0 and cold["ucs_in_run"] >= 3       # the vCPU's, features', the timer probes' scratch
    assert len(list((cold_cache / "probes").glob("unicorn-*.marshal"))) == 1
    warm = _run_hello(cold_cache)
    assert warm["code"] == 0 and warm["ucs_in_run"] == 1 and warm["ucs"] == 1        # only the vCPU's
    assert warm["ids"] == cold["ids"] == read_ids("max")
    assert warm["answers"] == cold["answers"] == [fresh_probe("max", s, w, el, p) for s, w, el, p in CASES]
    assert True in warm["answers"] and False in warm["answers"]


def _key() -> tuple:
    key = cache_key((cpu.__file__,), (("max", 6),))
    assert key is not None
    return key


def test_answers_and_ids_survive_in_the_file(tmp_path):
    a = ProbeCache(tmp_path, _key(), ID_REGS)
    assert a.answer(("max", 1, 1, 1, False)) is None and a.model_ids("max") is None
    a.add_answer(("max", 1, 1, 1, False), True)
    a.add_ids("max", read_ids("max"))
    b = ProbeCache(tmp_path, _key(), ID_REGS)
    assert b.answer(("max", 1, 1, 1, False)) is True and b.model_ids("max") == read_ids("max")
    assert ProbeCache(tmp_path, _key()[:-1] + ((("max", 7),),), ID_REGS).answer(("max", 1, 1, 1, False)) is None
    assert [p.name for p in (tmp_path / "probes").iterdir()] == [a.path.name]        # no temporary file left


def test_two_processes_writing_keep_each_others_answers(tmp_path):
    a, b = ProbeCache(tmp_path, _key(), ID_REGS), ProbeCache(tmp_path, _key(), ID_REGS)
    a.answer(("max", 1, 1, 1, False)), b.answer(("max", 1, 1, 1, False))              # both read the empty file
    a.add_answer(("max", 1, 1, 1, False), True)
    b.add_answer(("max", 1, 2, 1, False), False)
    c = ProbeCache(tmp_path, _key(), ID_REGS)
    assert c.answer(("max", 1, 1, 1, False)) is True and c.answer(("max", 1, 2, 1, False)) is False


def test_the_file_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(probecache, "MAX_ANSWERS", 4)
    for i in range(10):
        ProbeCache(tmp_path, _key(), ID_REGS).add_answer(("max", 1, i, 1, False), True)
    c = ProbeCache(tmp_path, _key(), ID_REGS)
    assert c.answer(("max", 1, 9, 1, False)) is True
    assert sum(len(b) for b in marshal.loads(c.path.read_bytes())[2].values()) <= 4 * 8


def test_new_answers_are_written_at_the_first_second_fourth_and_at_flush(tmp_path):
    """A process writes after 1, 2, 4, 8, ... new answers (a forked worker keeps at least half of them without
    an exit handler) and the rest when flushed (at exit)."""
    a = ProbeCache(tmp_path, _key(), ID_REGS)
    stored = []
    for i in range(6):
        a.add_answer(("max", 1, i, 0, False), i % 2 == 0)
        seen = ProbeCache(tmp_path, _key(), ID_REGS)
        stored.append(sum(seen.answer(("max", 1, j, 0, False)) is not None for j in range(6)))
    assert stored == [1, 2, 2, 4, 4, 4]
    a.flush()
    b = ProbeCache(tmp_path, _key(), ID_REGS)
    assert [b.answer(("max", 1, j, 0, False)) for j in range(6)] == [True, False] * 3
    assert b.answer(("max", 1, 0, 1, False)) is None and b.answer(("max", 2, 0, 0, False)) is None
    assert b.answer(("max", 1, 0, 0, True)) is None and b.answer(("a72", 1, 0, 0, False)) is None


def test_the_packed_answers_round_trip():
    answers = {(0xD53E1100, 2): True, (0xD53E1100, 1): False, (0, 0): True, (0xFFFF_FFFF, 3): False}
    blob = probecache.pack(answers)
    assert len(blob) == 8 * len(answers) and probecache._unpack(blob) == answers


HCR_AT_1 = {(mrs_word(HCR_EL2), 1): True}                   # MRS HCR_EL2 at EL1 of a vCPU started at EL1


def _good(key: tuple) -> tuple:
    return key, {"max": read_ids("max")}, {("max", 1, False): probecache.pack(HCR_AT_1)}


def _bad_files(key: tuple) -> dict[str, bytes]:
    ids = read_ids("max")
    good = marshal.dumps(_good(key))
    bucket = ("max", 1, False)
    others = probecache.pack({(mrs_word(HCR_EL2) + 1, 2): True, (mrs_word(HCR_EL2), 3): True})
    return {"garbage": b"\x00not marshal\xff" * 3, "truncated": good[:len(good) // 2], "empty": b"",
            "not a tuple": marshal.dumps([key, {}, {}]),
            "other key": marshal.dumps((key[:-1] + ((),), *_good(key)[1:])),
            "answers not packed": marshal.dumps((key, {}, {bucket: probecache.pack(HCR_AT_1)[:-1]})),
            "answers not bytes": marshal.dumps((key, {}, {bucket: [True]})),
            "answers of other words": marshal.dumps((key, {}, {bucket: others})),
            "buckets not a dict": marshal.dumps((key, {}, [bucket])),
            "ids of a string": marshal.dumps((key, {"max": {**ids, "pfr0": "0"}}, {})),
            "ids missing one": marshal.dumps((key, {"max": {k: v for k, v in ids.items() if k != "midr"}}, {})),
            "ids too wide": marshal.dumps((key, {"max": {**ids, "pfr0": 1 << 64}}, {})),
            "ids not a dict": marshal.dumps((key, {"max": tuple(ids.items())}, {}))}


def _use_cache(monkeypatch, disk: ProbeCache) -> None:
    """cpu.features / probe_undefined on `disk`, with the in-process caches emptied (again by `clear_after`)."""
    features.cache_clear()
    probe_undefined.cache_clear()
    monkeypatch.setattr(cpu, "probe_cache", lambda: disk)


@pytest.fixture
def clear_after():
    yield
    features.cache_clear()
    probe_undefined.cache_clear()


BAD = ["garbage", "truncated", "empty", "not a tuple", "other key", "answers not packed", "answers not bytes",
       "answers of other words", "buckets not a dict", "ids of a string", "ids missing one", "ids too wide",
       "ids not a dict"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_falls_back_to_probing(tmp_path, monkeypatch, clear_after, case):
    key = _key()
    disk = ProbeCache(tmp_path, key, ID_REGS)
    disk.path.parent.mkdir(parents=True)
    bad = _bad_files(key)
    assert list(bad) == BAD
    disk.path.write_bytes(bad[case])
    _use_cache(monkeypatch, disk)
    word = mrs_word(HCR_EL2)
    assert features("max") == cpu.decode_features("max", read_ids("max"))
    assert probe_undefined("max", 1, word, 1) is fresh_probe("max", 1, word, 1) is True
    assert probe_undefined("max", 1, word, 2) is fresh_probe("max", 1, word, 2) is False
    disk.flush()
    again = ProbeCache(tmp_path, key, ID_REGS)                            # rewritten whole by the fallback
    assert again.model_ids("max") == read_ids("max") and again.answer(("max", 1, word, 2, False)) is False


def test_the_good_file_is_used(tmp_path, monkeypatch, clear_after):
    """The control of the bad files: the same file, well formed, answers without probing (even a wrong answer
    planted in it: the cache is trusted as the native libraries beside it are)."""
    key = _key()
    disk = ProbeCache(tmp_path, key, ID_REGS)
    disk.path.parent.mkdir(parents=True)
    planted = {**read_ids("max"), "midr": 0x1234}
    wrong = probecache.pack({(mrs_word(HCR_EL2), 2): True})
    disk.path.write_bytes(marshal.dumps((key, {"max": planted}, {("max", 1, False): wrong})))
    _use_cache(monkeypatch, disk)
    assert features("max").id("midr") == 0x1234 and probe_undefined("max", 1, mrs_word(HCR_EL2), 2) is True


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "under a file":
        (tmp_path / "file").write_bytes(b"")
        return tmp_path / "file" / "cache"
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    tmp_path.chmod(0o555)
    return tmp_path


@pytest.mark.parametrize("how", ["under a file", "read-only"])
def test_an_unwritable_cache_directory_falls_back_to_probing(tmp_path, monkeypatch, clear_after, how):
    directory = _unwritable(tmp_path, how)
    try:
        disk = ProbeCache(directory, _key(), ID_REGS)
        _use_cache(monkeypatch, disk)
        words = [(mrs_word(HCR_EL2), 1), (mrs_word(HCR_EL2), 2), (mrs_word(CTR_EL0), 0)]
        assert [probe_undefined("max", 1, w, el) for w, el in words] == [fresh_probe("max", 1, w, el)
                                                                        for w, el in words]
        assert features("max").ids == tuple(sorted(read_ids("max").items()))
        assert disk.writable is False and not disk.path.exists()
    finally:
        tmp_path.chmod(0o755)


def test_unknown_models_still_fail_with_a_file_that_names_them(tmp_path, monkeypatch, clear_after):
    key = _key()
    disk = ProbeCache(tmp_path, key, ID_REGS)
    disk.path.parent.mkdir(parents=True)
    answers = {("zz", 1, False): probecache.pack({(1, 1): True})}
    disk.path.write_bytes(marshal.dumps((key, {"zz": read_ids("max")}, answers)))
    _use_cache(monkeypatch, disk)
    with pytest.raises(ValueError, match="unknown CPU model"):
        features("zz")
    with pytest.raises(ValueError, match="unknown CPU model"):
        probe_undefined("zz", 1, 1, 1)


def test_the_key_follows_the_librarys_stat_the_code_and_the_other_inputs(tmp_path, monkeypatch):
    src = tmp_path / "probe.py"
    src.write_text("one")
    base = cache_key((str(src),), ())
    assert base is not None and base == cache_key((str(src),), ())
    lib = base[2][0][0]
    real = probecache.file_identity

    def touched(path):
        p, size, mtime = real(path)
        return (p, size, mtime + 1) if path == lib else (p, size, mtime)
    monkeypatch.setattr(probecache, "file_identity", touched)
    moved = cache_key((str(src),), ())
    assert moved != base and probecache._file_name(moved) != probecache._file_name(base)
    monkeypatch.setattr(probecache, "file_identity", real)
    src.write_text("two")
    assert cache_key((str(src),), ()) not in (base, moved)
    assert cache_key((str(src),), (("max", 7),)) != cache_key((str(src),), (("max", 6),))
    assert cache_key((str(tmp_path / "missing.py"),), ()) is None


def test_no_disk_cache_when_the_library_has_no_path(monkeypatch, tmp_path):
    from unicorn.unicorn_py3.unicorn import uclib
    monkeypatch.setattr(uclib, "_name", "libunicorn.so.2")                 # found by the dynamic loader
    assert probecache.unicorn_identity() is None and cache_key((cpu.__file__,), ()) is None
    disk = ProbeCache(tmp_path, None, ID_REGS)
    disk.add_answer(("max", 1, 1, 1, False), True)
    assert disk.path is None and list(tmp_path.iterdir()) == []


def test_words_that_cannot_be_packed_are_neither_kept_nor_looked_up(tmp_path):
    disk = ProbeCache(tmp_path, _key(), ID_REGS)
    for word, el in ((1 << 32, 1), (-1, 1), (1, 4), (1.0, 1), (True, 1)):
        disk.add_answer(("max", 1, word, el, False), True)
        assert disk.answer(("max", 1, word, el, False)) is None
    assert disk.count == 0 and not (tmp_path / "probes").exists()


_WRITER = """
import sys
from pathlib import Path
from harness import cpu
from harness.probecache import ProbeCache, cache_key
base = int(sys.argv[2])
disk = ProbeCache(Path(sys.argv[1]), cache_key((cpu.__file__,), (("max", 6),)), cpu.ID_REGS)
for i in range(150):
    disk.add_answer(("max", 1, base + i, 0, False), i % 3 == 0)
    disk.flush()                                   # a write each time: as many races as possible
    assert disk.answer(("max", 1, base + i, 0, False)) is (i % 3 == 0) and disk.writable
"""


def test_concurrent_writers_never_leave_a_bad_file(tmp_path):
    """Two processes adding answers to one file at once (the suites' 2 workers): every write replaces the file
    whole, so it always loads; the last writer's answers are all there (the other's newest may be lost, never
    the file); no temporary file is left."""
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(base)], cwd=ROOT)
             for base in (0, 1000)]
    reads = []
    while any(p.poll() is None for p in procs):
        f = next((tmp_path / "probes").glob("*.marshal"), None)
        if f is not None:
            data = marshal.loads(f.read_bytes())
            reads.append(data[0] == _key() and type(data[2][("max", 1, False)]) is bytes)
    assert [p.wait() for p in procs] == [0, 0] and reads and all(reads)
    final = ProbeCache(tmp_path, _key(), ID_REGS)
    have = [[final.answer(("max", 1, base + i, 0, False)) for i in range(150)] for base in (0, 1000)]
    assert [i % 3 == 0 for i in range(150)] in have
    assert [p.name for p in (tmp_path / "probes").iterdir()] == [final.path.name]
