"""ELF loading (harness/elfload.py): good images, symbolizer, and one clear ElfLoadError per kind of bad file."""
import struct

import pytest

from guestbin import guest_elf
from harness.elfload import ElfLoadError, Symbolizer, load_elf


def test_loads_segments_entry_and_symbols():
    im = load_elf(guest_elf("hello"))
    assert im.entry == 0x4008_0000 == im.symbol("_start")
    assert any(s.executable for s in im.segments)
    assert all(s.memsz >= len(s.data) for s in im.segments)
    main = im.symbol("main")
    assert im.symbolizer(main) == "main" and im.symbolizer(main + 8) == "main+0x8"


def test_symbolizer_bounds():
    sym = Symbolizer([(0x1000, 0x10, "f"), (0x2000, 0, "label")])
    assert sym(0xFFF) == "??" and sym(0x1004) == "f+0x4" and sym(0x1010) == "??"
    assert sym(0x2345) == "label+0x345"


def _patched(tmp_path, src, name, patch):
    data = bytearray(src.read_bytes())
    patch(data)
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("name,patch,message", [
    ("big.elf", lambda d: d.__setitem__(5, 2), "big-endian"),
    ("elf32.elf", lambda d: d.__setitem__(4, 1), "32-bit"),
    ("x86.elf", lambda d: d.__setitem__(slice(18, 20), struct.pack("<H", 62)), "x86-64 ELF, not AArch64"),
    ("rel.elf", lambda d: d.__setitem__(slice(16, 18), struct.pack("<H", 1)), "relocatable"),
    ("cut.elf", lambda d: d.__delitem__(slice(0x400, None)), "truncated"),
    ("hdr.elf", lambda d: d.__delitem__(slice(40, None)), "truncated ELF header"),
    ("noelf.elf", lambda d: d.__setitem__(slice(0, 4), b"MZ\0\0"), "not an ELF"),
])
def test_bad_files(tmp_path, name, patch, message):
    bad = _patched(tmp_path, guest_elf("hello"), name, patch)
    with pytest.raises(ElfLoadError, match=message) as e:
        load_elf(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ElfLoadError, match="no such file"):
        load_elf(tmp_path / "nope.elf")
    with pytest.raises(ElfLoadError, match="directory"):
        load_elf(tmp_path)


def test_garbage_program_headers_do_not_escape_as_other_errors(tmp_path):
    def wreck(d):
        phoff = struct.unpack_from("<Q", d, 32)[0]
        d[phoff:phoff + 56 * 2] = b"\xff" * 112
    bad = _patched(tmp_path, guest_elf("hello"), "ph.elf", wreck)
    with pytest.raises(ElfLoadError):
        load_elf(bad)
