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


# ---- pyelftools as the oracle of the struct reader -----------------------------------------------------------
def _pyelftools_view(path):
    """What load_elf extracts, read with pyelftools (segments, entry, symbols, objects, constants)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        segs = [(ph["p_vaddr"], ph["p_paddr"], ph["p_filesz"], ph["p_memsz"], ph["p_flags"])
                for ph in elf.iter_segments() if ph["p_type"] == "PT_LOAD" and ph["p_memsz"]]
        syms, objects, constants = [], {}, {}
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            name, kind, shndx = sym.name, sym["st_info"]["type"], sym["st_shndx"]
            if kind == "STT_OBJECT" and name and shndx not in ("SHN_UNDEF", "SHN_ABS"):
                objects.setdefault(name, (sym["st_value"], sym["st_size"]))
            elif name and kind == "STT_NOTYPE" and shndx == "SHN_ABS":
                constants.setdefault(name, sym["st_value"])
            elif (name and not name.startswith("$") and kind in ("STT_FUNC", "STT_NOTYPE")
                  and shndx not in ("SHN_UNDEF", "SHN_ABS")
                  and not (name.startswith((".L", "__")) and kind == "STT_NOTYPE")):
                syms.append((sym["st_value"], sym["st_size"], name))
        return segs, elf.header["e_entry"], sorted(syms), objects, constants


@pytest.mark.parametrize("name", ["hello", "smp", "semihosting", "sh_el0", "tlbi_el1_forms", "exc_entry"])
def test_struct_reader_agrees_with_pyelftools(name):
    path = guest_elf(name)
    segs, entry, syms, objects, constants = _pyelftools_view(path)
    im = load_elf(path)
    assert [(s.vaddr, s.paddr, len(s.data), s.memsz, s.flags) for s in im.segments] == segs
    assert im.entry == entry            # these images are linked with VA == PA
    assert sorted(im.symbolizer.symbols) == syms and len(syms) > 5
    assert im.objects == objects and im.constants == constants


@pytest.mark.parametrize("seed", range(40))
def test_corrupted_headers_give_one_line_errors(tmp_path, seed):
    """Random bytes over the file, program and section header tables: an image or ElfLoadError, nothing else."""
    import random
    rnd = random.Random(seed)
    data = bytearray(guest_elf("hello").read_bytes())
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    for _ in range(rnd.randint(1, 8)):
        at = rnd.choice([rnd.randrange(16, 64), phoff + rnd.randrange(56 * 2), shoff + rnd.randrange(64 * 4),
                         rnd.randrange(len(data))])
        data[at] = rnd.randrange(256)
    p = tmp_path / "bad.elf"
    p.write_bytes(bytes(data))
    try:
        load_elf(p)
    except ElfLoadError as e:
        assert "\n" not in str(e)
