"""Boot images as QEMU 7.2's `-kernel` loads them on `-M virt`: a placement plan, pure over files and bytes.

`plan_boot(path, ram_base=, ram_size=, dtb=)` returns a `BootPlan`: the blobs to copy into RAM (`segments`),
where vCPU 0 starts (`entry`), where the kernel proper starts (`kernel_entry`), the registers it finds there
(`regs`: x0..x3), the device tree address (`dtb_addr`) and, for ELF files, the `ElfImage` (symbols). The rules
are QEMU's (hw/arm/boot.c `arm_setup_direct_kernel_boot`, `load_aarch64_image`, `arm_load_dtb`;
include/hw/elf_ops.h `load_elf`), checked against qemu-system-aarch64 7.2 by tests/harness/test_image.py:

* **ELF** (anything starting with the ELF magic; parsed by harness/elfload.py): PT_LOAD segments at their
  physical addresses, never relocated (QEMU applies no AArch64 relocations, so an ET_DYN/PIE image is loaded
  at its link address exactly like ET_EXEC); a segment whose zero-fill would overlap another segment is
  loaded with its file size only. vCPU 0 starts at the entry point with x0..x3 = 0: QEMU passes nothing in
  registers to an ELF. The device tree goes to the bottom of RAM when the image starts above it and the
  tree fits below the image (QEMU's 1 MiB tree does not fit below an image at RAM + 0x80000: then there is
  none); an image that starts at or below the RAM base gets none here (QEMU writes it into flash at 0).
* **Raw images** (`.bin`, kvm-unit-tests `.flat`) at RAM base + 0x80000; an **arm64 Linux `Image`** ("ARM\\x64"
  at offset 56, Linux Documentation/arch/arm64/booting.rst) at RAM base + text_offset when image_size is
  non-zero (+ 2 MiB when text_offset < 4 KiB, the room of QEMU's boot stub); gzip-compressed images are
  inflated first (at most 256 MiB, else loaded as they are, as QEMU does). QEMU writes a 40-byte boot stub at
  the RAM base (`ldr x0, dtb; mov x1..x3, xzr; ldr x4, entry; br x4`) where vCPU 0 starts; the device tree
  goes where QEMU puts the initrd, 2 MiB aligned: ALIGN_UP(max(RAM base + min(RAM size / 2, 128 MiB), image
  end), 2 MiB), so it always lies above the image (kvm-unit-tests' lib/arm/setup.c relies on that). An
  `initrd` (QEMU's -initrd; kvm-unit-tests' arm/run passes its environment that way) goes at that page-aligned
  start, the tree after it at the next 2 MiB boundary (`info roms` of QEMU 7.2 with -m 256: initrd at
  0x4800_0000, dtb at 0x4820_0000); the plan's `initrd` range is what the tree's /chosen says.

Refused with `ImageError` (one line naming the file; a subclass of ElfLoadError, so the CLI's handling of bad
images applies): missing/unreadable/empty files, bad or truncated ELF files (elfload's checks), U-Boot
uImages (QEMU would parse their header: not modelled), images that do not fit in RAM (QEMU: "kernel ... is
too large to fit in RAM"), no room for the tree after a raw image (QEMU: "Not enough space for DTB after
kernel/initrd"), and overlapping blobs (QEMU: "Some ROM regions are overlapping").

`largest_free_gap(base, size, plan.rom_regions())` is QEMU's rom_find_largest_gap_between: the RAM that
SYS_HEAPINFO reports as the heap (semihosting/arm-compat-semi.c common_semi_find_bases).
"""
from __future__ import annotations

import os
import zlib

from devmodel.record import Frozen, assign

from .elfload import ElfImage, ElfLoadError, load_elf
from .exits import HarnessInputError
from .userfile import user_file

__all__ = ["ImageError", "LoadSegment", "LinuxImageHeader", "BootPlan", "plan_boot", "boot_stub",
           "largest_free_gap", "KERNEL64_LOAD_OFFSET", "BOOTLOADER_MAX_SIZE", "MAX_GUNZIP_BYTES", "dtb_address",
           "initrd_address"]

KERNEL64_LOAD_OFFSET = 0x8_0000          # QEMU hw/arm/boot.c KERNEL64_LOAD_ADDR
BOOTLOADER_MAX_SIZE = 0x1000             # QEMU hw/arm/boot.c: the stub's reserved room at the RAM base
MAX_GUNZIP_BYTES = 256 << 20             # QEMU include/hw/loader.h LOAD_IMAGE_MAX_GUNZIP_BYTES
ARM64_MAGIC_OFFSET, ARM64_MAGIC = 56, b"ARM\x64"
UIMAGE_MAGIC = b"\x27\x05\x19\x56"
ELF_MAGIC = b"\x7fELF"
ET_DYN = 3
_2M = 2 << 20
_128M = 128 << 20


class ImageError(ElfLoadError, HarnessInputError):
    """The image cannot be booted: the message is one line naming the file (bad input: status 125)."""


class LoadSegment(Frozen):
    """`data` goes to `addr`, followed by `memsz - len(data)` zero bytes. `name` says what it is: "elf[i]"
    (program header i), "kernel" (a raw image), "bootloader" (QEMU's stub) or "dtb"."""
    __slots__ = ("addr", "data", "memsz", "executable", "name")
    addr: int
    data: bytes
    memsz: int
    executable: bool
    name: str

    def __init__(self, addr: int, data: bytes, memsz: int, executable: bool, name: str) -> None:
        assign(self, "addr", addr)
        assign(self, "data", data)
        assign(self, "memsz", memsz)
        assign(self, "executable", executable)
        assign(self, "name", name)

    @property
    def end(self) -> int:
        return self.addr + self.memsz


class LinuxImageHeader(Frozen):
    """The arm64 Image header fields QEMU and a boot loader read (Linux booting.rst, little-endian)."""
    __slots__ = ("text_offset", "image_size", "flags")
    text_offset: int
    image_size: int
    flags: int

    def __init__(self, text_offset: int, image_size: int, flags: int) -> None:
        assign(self, "text_offset", text_offset)
        assign(self, "image_size", image_size)
        assign(self, "flags", flags)

    @property
    def big_endian(self) -> bool:                       # flags bit 0: kernel endianness
        return bool(self.flags & 1)

    @property
    def page_size(self) -> int | None:                  # flags bits [2:1]: 0 unspecified, 4K, 16K, 64K
        return {1: 4 << 10, 2: 16 << 10, 3: 64 << 10}.get((self.flags >> 1) & 3)

    @property
    def placement_anywhere(self) -> bool:               # flags bit 3: 2 MiB-aligned base anywhere in RAM
        return bool(self.flags & 8)


class BootPlan(Frozen):
    __slots__ = ("path", "kind", "segments", "entry", "kernel_entry", "regs", "dtb_addr", "elf", "header", "notes",
                 "initrd")
    path: str
    kind: str                                   # "elf", "raw" or "linux-image"
    segments: tuple[LoadSegment, ...]           # every blob QEMU writes into RAM, the tree included
    entry: int                                  # vCPU 0's PC at reset (QEMU's boot stub for raw images)
    kernel_entry: int                           # the image's own entry point
    regs: tuple[int, int, int, int]             # x0..x3 at kernel_entry (x0 = device tree address or 0)
    dtb_addr: int | None                        # None: the guest gets no device tree
    elf: ElfImage | None
    header: LinuxImageHeader | None
    notes: tuple[str, ...]                      # QEMU-consistent facts worth logging (e.g. why no tree)
    initrd: tuple[int, int] | None              # [start, end) of the initrd (the tree's linux,initrd-*)

    def __init__(self, path: str, kind: str, segments: tuple[LoadSegment, ...], entry: int, kernel_entry: int,
                 regs: tuple[int, int, int, int], dtb_addr: int | None, elf: ElfImage | None = None,
                 header: LinuxImageHeader | None = None, notes: tuple[str, ...] = (),
                 initrd: tuple[int, int] | None = None) -> None:
        assign(self, "path", path)
        assign(self, "kind", kind)
        assign(self, "segments", segments)
        assign(self, "entry", entry)
        assign(self, "kernel_entry", kernel_entry)
        assign(self, "regs", regs)
        assign(self, "dtb_addr", dtb_addr)
        assign(self, "elf", elf)
        assign(self, "header", header)
        assign(self, "notes", notes)
        assign(self, "initrd", initrd)

    def rom_regions(self) -> list[tuple[int, int]]:
        """(address, size) of every blob, sorted: what QEMU's ROM list holds after a -kernel boot."""
        return sorted((s.addr, s.memsz) for s in self.segments)


def boot_stub(dtb_addr: int, entry: int) -> bytes:
    """QEMU's AArch64 boot stub (hw/arm/boot.c bootloader_aarch64): x0 = dtb, x1 = x2 = x3 = 0, x4 = entry,
    br x4; the two 64-bit literals follow the six instructions."""
    insns = (0x580000C0,    # ldr x0, #24      (the dtb literal)
             0xAA1F03E1,    # mov x1, xzr
             0xAA1F03E2,    # mov x2, xzr
             0xAA1F03E3,    # mov x3, xzr
             0x58000084,    # ldr x4, #16      (the entry literal)
             0xD61F0080)    # br  x4
    return b"".join(i.to_bytes(4, "little") for i in insns) + dtb_addr.to_bytes(8, "little") \
        + entry.to_bytes(8, "little")


def initrd_address(ram_base: int, ram_size: int, image_end: int = 0) -> int:
    """Where QEMU 7.2 puts an initrd after a raw image (hw/arm/boot.c): RAM base + min(RAM / 2, 128 MiB), but
    not below the image's end, page aligned (`info roms` with -initrd: 0x4800_0000 for -m 256)."""
    start = max(ram_base + min(ram_size // 2, _128M), image_end)
    return (start + 0xFFF) & ~0xFFF


def dtb_address(ram_base: int, ram_size: int, image_end: int = 0, initrd_size: int = 0) -> int:
    """Where QEMU 7.2 puts the tree for a raw image (hw/arm/boot.c): after the initrd (at its start when
    there is none), aligned up to 2 MiB because early arm64 kernels map the tree through the 2 MiB block
    around it."""
    return (initrd_address(ram_base, ram_size, image_end) + initrd_size + _2M - 1) & ~(_2M - 1)


def largest_free_gap(base: int, size: int, regions: list[tuple[int, int]]) -> tuple[int, int]:
    """The largest (address, size) range of [base, base + size) that no region touches; the lowest one of
    equal candidates (QEMU hw/core/loader.c rom_find_largest_gap_between)."""
    end = base + size
    best, cursor = (base, 0), base
    for a, n in sorted(regions):
        if a + n <= cursor or n == 0:
            continue
        if a > cursor and min(a, end) - cursor > best[1]:
            best = (cursor, min(a, end) - cursor)
        cursor = max(cursor, a + n)
        if cursor >= end:
            break
    if end - cursor > best[1]:
        best = (cursor, end - cursor)
    return best


def _read(spath: str, path, ram_size: int) -> bytes:
    with user_file(path, ImageError) as f:
        head = f.read(4)
        size = os.fstat(f.fileno()).st_size
        if head != ELF_MAGIC and size > ram_size:        # refused before reading it all (ELF: debug info)
            raise ImageError(f"{spath}: too large to fit in RAM (image {size:#x} bytes, RAM {ram_size:#x})")
        data = head + f.read()
    if not data:
        raise ImageError(f"{spath}: empty image")
    return data


def plan_boot(path: str | os.PathLike, *, ram_base: int, ram_size: int, dtb: bytes | None = None,
              initrd: bytes | None = None) -> BootPlan:
    """Plan the boot of `path` into RAM [ram_base, ram_base + ram_size) with the device tree blob `dtb`
    (None: no tree; bytes, or what gives its size with len() and its bytes with bytes() only if the plan
    places it, such as harness/devicetree.py's DeferredBoardDtb) and the `initrd` bytes (QEMU's -initrd: raw
    and Image kernels only). Raises ImageError with a one-line message naming the file."""
    spath = str(path)
    data = _read(spath, path, ram_size)
    if data[:4] == ELF_MAGIC:
        if initrd is not None:
            raise ImageError(f"{spath}: an initrd is booted with raw and Image kernels only, not an ELF")
        return _plan_elf(spath, path, data, ram_base, ram_size, dtb)
    if data[:4] == UIMAGE_MAGIC:
        raise ImageError(f"{spath}: U-Boot uImage: not supported (boot the Image or raw binary it wraps)")
    return _plan_raw(spath, data, ram_base, ram_size, dtb, initrd)


def _check_in_ram(spath: str, what: str, addr: int, size: int, ram_base: int, ram_size: int,
                  hint: str = "") -> None:
    if addr < ram_base or addr + size > ram_base + ram_size:
        raise ImageError(f"{spath}: {what} [{addr:#x}, {addr + size:#x}) does not fit in RAM "
                         f"[{ram_base:#x}, {ram_base + ram_size:#x}){hint}")


def _check_overlaps(spath: str, segs: list[LoadSegment]) -> None:
    ordered = sorted((s for s in segs if s.memsz), key=lambda s: s.addr)
    for a, b in zip(ordered, ordered[1:]):
        if b.addr < a.end:
            raise ImageError(f"{spath}: {a.name} [{a.addr:#x}, {a.end:#x}) and {b.name} [{b.addr:#x}, "
                             f"{b.end:#x}) overlap")


def _plan_elf(spath: str, path, data: bytes, ram_base: int, ram_size: int, dtb: bytes | None) -> BootPlan:
    try:
        elf = load_elf(path)
    except ImageError:
        raise
    except ElfLoadError as e:
        raise ImageError(str(e)) from None
    segs = []
    for i, s in enumerate(elf.segments):
        memsz = s.memsz
        if memsz > len(s.data):                 # zero-fill overlapping another segment: file size only
            z0, z1 = s.paddr + len(s.data), s.paddr + memsz
            if any(o is not s and o.paddr < z1 and z0 < o.paddr + o.memsz for o in elf.segments):
                memsz = len(s.data)
        segs.append(LoadSegment(s.paddr, s.data, memsz, s.executable, f"elf[{i}]"))
    hint = (" (QEMU does not relocate ELF images: a PIE is loaded at its link address; link it inside RAM or "
            "boot its raw binary)") if int.from_bytes(data[16:18], "little") == ET_DYN else ""
    for seg in segs:
        _check_in_ram(spath, f"segment {seg.name}", seg.addr, seg.memsz, ram_base, ram_size, hint)
    _check_overlaps(spath, segs)
    low = min(s.addr for s in segs)
    notes: list[str] = []
    dtb_addr = None
    if dtb is not None:
        if low > ram_base and len(dtb) <= low - ram_base:
            dtb_addr = ram_base
            segs.append(LoadSegment(ram_base, bytes(dtb), len(dtb), False, "dtb"))
        elif low > ram_base:
            notes.append(f"no device tree: its {len(dtb):#x} bytes do not fit below the image at {low:#x}")
        else:
            notes.append("no device tree: the image starts at the RAM base (QEMU writes the tree into flash)")
    return BootPlan(spath, "elf", tuple(segs), elf.entry, elf.entry, (0, 0, 0, 0), dtb_addr, elf=elf,
                    notes=tuple(notes))


def _gunzip(data: bytes) -> bytes | None:
    """The inflated gzip member, or None when `data` is not gzip, is corrupt or inflates past the limit."""
    if data[:2] != b"\x1f\x8b":
        return None
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_GUNZIP_BYTES + 1)
    except zlib.error:
        return None
    if len(out) > MAX_GUNZIP_BYTES or not d.eof:
        return None
    return out


def _plan_raw(spath: str, data: bytes, ram_base: int, ram_size: int, dtb: bytes | None,
              initrd: bytes | None = None) -> BootPlan:
    data = _gunzip(data) or data
    offset, header, kind = KERNEL64_LOAD_OFFSET, None, "raw"
    if len(data) > ARM64_MAGIC_OFFSET + 4 and data[ARM64_MAGIC_OFFSET:ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC:
        header = LinuxImageHeader(int.from_bytes(data[8:16], "little"), int.from_bytes(data[16:24], "little"),
                                  int.from_bytes(data[24:32], "little"))
        kind = "linux-image"
        if header.image_size:                   # text_offset is meaningful only with a non-zero image_size
            offset = header.text_offset
            if offset < BOOTLOADER_MAX_SIZE:
                offset += _2M
    entry = ram_base + offset
    if ram_base + offset + len(data) > ram_base + ram_size:
        raise ImageError(f"{spath}: too large to fit in RAM (image {len(data):#x} bytes at {entry:#x}, "
                         f"RAM [{ram_base:#x}, {ram_base + ram_size:#x}))")
    segs = [LoadSegment(entry, data, len(data), True, "kernel")]
    rd = None
    if initrd is not None:
        start = initrd_address(ram_base, ram_size, entry + len(data))
        _check_in_ram(spath, "initrd", start, len(initrd), ram_base, ram_size)
        segs.append(LoadSegment(start, bytes(initrd), len(initrd), False, "initrd"))
        rd = (start, start + len(initrd))
    dtb_addr = None
    if dtb is not None:
        dtb_addr = dtb_address(ram_base, ram_size, entry + len(data), len(initrd or b""))
        if dtb_addr >= ram_base + ram_size:
            raise ImageError(f"{spath}: not enough space for the device tree after the image (it would start "
                             f"at {dtb_addr:#x}, RAM ends at {ram_base + ram_size:#x})")
        _check_in_ram(spath, "device tree", dtb_addr, len(dtb), ram_base, ram_size)
        segs.append(LoadSegment(dtb_addr, bytes(dtb), len(dtb), False, "dtb"))
    stub = boot_stub(dtb_addr or 0, entry)
    segs.insert(0, LoadSegment(ram_base, stub, len(stub), True, "bootloader"))
    _check_overlaps(spath, segs)
    return BootPlan(spath, kind, tuple(segs), ram_base, entry, (dtb_addr or 0, 0, 0, 0), dtb_addr, header=header,
                    initrd=rd)
