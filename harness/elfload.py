"""Guest ELF loading: PT_LOAD segments, entry point, a symbolizer (pc -> `func+off`) and the
data objects (`ElfImage.object_ipa(name)`: where a global variable is loaded, e.g. the exception opt-in).

`load_elf(path)` validates the file before anything is loaded and raises `ElfLoadError` (one line, naming the
file and what is wrong) for: missing/unreadable files, non-ELF data, 32-bit, big-endian or non-AArch64 ELFs,
truncated headers or segments, and images without loadable segments. Low-level parser errors are converted in
one place (`_guard`). Whether the segments fit in a VM's RAM is checked by `VM.load`.

Segments are placed at their physical address (`p_paddr`), like QEMU's `-kernel` ELF loader; the entry point
is translated from a segment's virtual to its physical address when the two differ.

The reader is a small ELF64 parser over `struct` (the System V gABI layouts of the file header, program
headers, section headers and Elf64_Sym), not pyelftools: importing pyelftools costs a start-up of the same order
as a whole short run. pyelftools stays the oracle: tests parse every guest image with both and compare.

Not handled: relocation of ET_DYN images (they are loaded at their link addresses), compressed sections.
"""
from __future__ import annotations

import bisect
import os
import struct
from contextlib import contextmanager
from typing import Iterator

from devmodel.record import Frozen, assign

from .userfile import user_file

__all__ = ["ElfLoadError", "Segment", "ElfImage", "Symbolizer", "load_elf", "EM_AARCH64"]

EM_AARCH64 = 183
_MACHINES = {3: "x86 (i386)", 62: "x86-64", 40: "32-bit Arm", 243: "RISC-V", 8: "MIPS", 20: "PowerPC",
             21: "PowerPC64", 22: "s390"}
PF_X = 1
PT_LOAD, SHT_SYMTAB = 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
SHN_UNDEF, SHN_ABS, SHN_XINDEX = 0, 0xFFF1, 0xFFFF
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")      # Elf64_Ehdr
_PHDR = struct.Struct("<IIQQQQQQ")              # Elf64_Phdr
_SHDR = struct.Struct("<IIQQQQIIQQ")            # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")                 # Elf64_Sym


class ElfLoadError(Exception):
    """The file cannot be run: the message is one line for the user."""


class Segment(Frozen):
    __slots__ = ("vaddr", "paddr", "data", "memsz", "flags")
    vaddr: int
    paddr: int
    data: bytes           # p_filesz bytes from the file
    memsz: int            # data is followed by memsz - len(data) zero bytes
    flags: int

    def __init__(self, vaddr: int, paddr: int, data: bytes, memsz: int, flags: int) -> None:
        assign(self, "vaddr", vaddr)
        assign(self, "paddr", paddr)
        assign(self, "data", data)
        assign(self, "memsz", memsz)
        assign(self, "flags", flags)

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)


class Symbolizer:
    """Maps addresses to `symbol+0xoff` using the function and label symbols of an image."""

    def __init__(self, symbols: list[tuple[int, int, str]] = ()):
        # (address, size, name) sorted by address; size 0 for assembly labels
        self._syms = sorted(symbols)
        self._addrs = [s[0] for s in self._syms]

    @property
    def symbols(self) -> list[tuple[int, int, str]]:
        """(address, size, name) of every symbol, by address."""
        return list(self._syms)

    def __len__(self) -> int:
        return len(self._syms)

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        base, size, name = self._syms[i]
        if size and addr >= base + size:       # a sized symbol covers [base, base+size) only
            return None
        return name, addr - base

    def __call__(self, addr: int) -> str:
        hit = self.lookup(addr)
        if hit is None:
            return "??"
        name, off = hit
        return f"{name}+{off:#x}" if off else name

    def address_of(self, name: str) -> int:
        for a, _, n in self._syms:
            if n == name:
                return a
        raise KeyError(f"no symbol {name!r}")


class ElfImage:
    path: str
    entry: int                          # physical (load) address of the entry point
    segments: list[Segment]
    symbolizer: Symbolizer
    objects: dict[str, tuple[int, int]]  # data symbols: name -> (vaddr, size)
    #: absolute symbols (SHN_ABS), e.g. the link script's `GUEST_NR_CPUS = 256;`: name -> value
    constants: dict[str, int]

    def __init__(self, path: str, entry: int, segments: list[Segment], symbolizer: Symbolizer | None = None,
                 objects: dict[str, tuple[int, int]] | None = None, constants: dict[str, int] | None = None) -> None:
        self.path, self.entry, self.segments = path, entry, segments
        self.symbolizer = Symbolizer() if symbolizer is None else symbolizer
        self.objects = {} if objects is None else objects
        self.constants = {} if constants is None else constants

    def symbol(self, name: str) -> int:
        return self.symbolizer.address_of(name)

    def object_ipa(self, name: str) -> int | None:
        """Load (physical) address of the data object `name` (STT_OBJECT), None when the image has none."""
        hit = self.objects.get(name)
        if hit is None:
            return None
        va = hit[0]
        for s in self.segments:
            if s.vaddr <= va < s.vaddr + s.memsz:
                return va - s.vaddr + s.paddr
        return va


@contextmanager
def _guard(path: str) -> Iterator[None]:
    """The one place that turns parser-level failures (offsets and sizes outside the file) into ElfLoadError."""
    try:
        yield
    except ElfLoadError:
        raise
    except (struct.error, ValueError, IndexError, KeyError, OverflowError) as e:
        raise ElfLoadError(f"{path}: malformed or truncated ELF ({type(e).__name__}: {e})") from None


def _table(data: bytes, what: str, off: int, num: int, entsize: int, layout: struct.Struct) -> list[tuple]:
    """`num` entries of `layout` every `entsize` bytes from `off`, all inside `data`."""
    if num and entsize < layout.size:
        raise ValueError(f"{what} entries of {entsize} bytes (at least {layout.size})")
    if off + num * entsize > len(data):
        raise ValueError(f"{what} table [{off:#x}, {off + num * entsize:#x}) is past the end of the file")
    return [layout.unpack_from(data, off + i * entsize) for i in range(num)]


def _cstr(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    if off >= len(data) or end < 0:
        raise ValueError(f"string at {off:#x} is outside its table")
    return data[off:end].decode("utf-8", "replace")


def _sections(data: bytes, shoff: int, shnum: int, shentsize: int, shstrndx: int) -> dict[str, tuple]:
    """Section headers by name (the first of a name wins); gABI extended numbering for e_shnum/e_shstrndx."""
    if not shoff:
        return {}
    if shnum == 0 or shstrndx == SHN_XINDEX:
        first = _table(data, "section header", shoff, 1, shentsize, _SHDR)[0]
        shnum = shnum or first[5]
        shstrndx = first[6] if shstrndx == SHN_XINDEX else shstrndx
    shdrs = _table(data, "section header", shoff, shnum, shentsize, _SHDR)
    if not shdrs:
        return {}
    strtab = shdrs[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    out: dict[str, tuple] = {}
    for sh in shdrs:
        out.setdefault(_cstr(names, sh[0]), sh)
    return out


def _symbols(data: bytes, sections: dict[str, tuple], shdr_at) -> list[tuple[str, int, int, int, int]]:
    """(name, type, st_shndx, value, size) of every .symtab entry, names from its linked string table."""
    tab = sections.get(".symtab")
    if tab is None or tab[1] != SHT_SYMTAB:
        return []
    strtab = shdr_at(tab[6])
    strings = data[strtab[4]:strtab[4] + strtab[5]]
    entsize = tab[9] or _SYM.size
    out = []
    for st_name, st_info, _other, shndx, value, size in _table(data, "symbol", tab[4], tab[5] // entsize,
                                                                entsize, _SYM):
        out.append((_cstr(strings, st_name) if st_name else "", st_info & 0xF, shndx, value, size))
    return out


def _check_ident(path: str, head: bytes) -> None:
    if len(head) < 4 or head[:4] != b"\x7fELF":
        raise ElfLoadError(f"{path}: not an ELF file (starts with {head[:4]!r})")
    if len(head) < 64:
        raise ElfLoadError(f"{path}: truncated ELF header ({len(head)} bytes)")
    ei_class, ei_data = head[4], head[5]
    if ei_class == 1:
        raise ElfLoadError(f"{path}: 32-bit ELF (ELFCLASS32); an AArch64 (ELFCLASS64) image is required")
    if ei_class != 2:
        raise ElfLoadError(f"{path}: bad ELF class {ei_class}")
    if ei_data == 2:
        raise ElfLoadError(f"{path}: big-endian ELF (ELFDATA2MSB); only little-endian AArch64 is supported")
    if ei_data != 1:
        raise ElfLoadError(f"{path}: bad ELF data encoding {ei_data}")
    machine = int.from_bytes(head[18:20], "little")
    if machine != EM_AARCH64:
        what = _MACHINES.get(machine, f"e_machine {machine}")
        raise ElfLoadError(f"{path}: {what} ELF, not AArch64 (EM_AARCH64 = {EM_AARCH64})")
    e_type = int.from_bytes(head[16:18], "little")
    if e_type not in (2, 3):
        kind = {1: "a relocatable object (ET_REL): link it first", 4: "a core file"}.get(e_type, f"type {e_type}")
        raise ElfLoadError(f"{path}: ELF is {kind}, not an executable")


def load_elf(path: str | os.PathLike) -> ElfImage:
    """Parse and validate an AArch64 executable. Raises ElfLoadError with a one-line message."""
    spath = str(path)
    with user_file(path, ElfLoadError) as f:
        data = f.read()
    _check_ident(spath, data[:64])
    with _guard(spath):
        (_ident, _type, _machine, _version, entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize,
         shnum, shstrndx) = _EHDR.unpack_from(data, 0)
        segments = _segments(spath, data, _table(data, "program header", phoff, phnum, phentsize, _PHDR))
        for s in segments:
            if s.vaddr <= entry < s.vaddr + s.memsz:
                entry = entry - s.vaddr + s.paddr
                break
        else:
            raise ElfLoadError(f"{spath}: entry point {entry:#x} is not inside any loadable segment")
        sections = _sections(data, shoff, shnum, shentsize, shstrndx)

        def shdr_at(i: int) -> tuple:
            return _table(data, "section header", shoff + i * shentsize, 1, shentsize, _SHDR)[0]
        image = ElfImage(spath, entry, segments)
        _classify(image, _symbols(data, sections, shdr_at))
    return image


def _segments(spath: str, data: bytes, phdrs: list[tuple]) -> list[Segment]:
    segments: list[Segment] = []
    for i, (p_type, flags, off, vaddr, paddr, filesz, memsz, _align) in enumerate(phdrs):
        if p_type != PT_LOAD or memsz == 0:
            continue
        if filesz > memsz:
            raise ElfLoadError(f"{spath}: segment {i}: p_filesz {filesz:#x} > p_memsz {memsz:#x}")
        if off + filesz > len(data):
            raise ElfLoadError(f"{spath}: truncated: segment {i} needs file bytes "
                               f"[{off:#x}, {off + filesz:#x}) but the file has {len(data):#x}")
        segments.append(Segment(vaddr, paddr, data[off:off + filesz], memsz, flags))
    if not segments:
        raise ElfLoadError(f"{spath}: no loadable (PT_LOAD) segments")
    return segments


def _classify(image: ElfImage, symbols: list[tuple[str, int, int, int, int]]) -> None:
    """Data objects, absolute constants and code symbols (for the symbolizer) of the image."""
    syms: list[tuple[int, int, str]] = []
    for name, kind, shndx, value, size in symbols:
        if kind == STT_OBJECT and name and shndx not in (SHN_UNDEF, SHN_ABS):
            image.objects.setdefault(name, (value, size))
            continue
        if name and kind == STT_NOTYPE and shndx == SHN_ABS:
            image.constants.setdefault(name, value)
            continue
        if not name or name.startswith("$") or kind not in (STT_FUNC, STT_NOTYPE):
            continue
        if shndx in (SHN_UNDEF, SHN_ABS):
            continue
        if name.startswith((".L", "__")) and kind == STT_NOTYPE:
            continue
        syms.append((value, size, name))
    image.symbolizer = Symbolizer(syms)
