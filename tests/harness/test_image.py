"""Boot image placement (harness/image.py) like QEMU's -kernel, with qemu-system-aarch64 7.2 + gdb-multiarch
as the oracle: QEMU runs each image to its entry point and gdb reads the registers and memory it left there.

The oracle tests skip, saying why, when QEMU or gdb-multiarch is not installed.
"""
import gzip
import os
import shutil
import struct
import subprocess
import tempfile

import capstone
import pytest

from guestbin import guest_elf
from harness import image as image_mod
from harness.devicetree import BoardSpec, board_dtb, build_tree
from harness.elfload import ElfLoadError, load_elf
from harness.image import (ImageError, LinuxImageHeader, boot_stub, dtb_address, largest_free_gap, plan_boot)

QEMU = shutil.which("qemu-system-aarch64")
GDB = shutil.which("gdb-multiarch")
needs_oracle = pytest.mark.skipif(QEMU is None or GDB is None,
                                  reason="needs qemu-system-aarch64 and gdb-multiarch "
                                         "(Debian: apt-get install qemu-system-arm gdb-multiarch)")
BASE = 0x4000_0000
MiB = 1 << 20
LOOP = struct.pack("<I", 0x14000000)           # b .
DTB = board_dtb(BoardSpec())                    # QEMU's size: 1 MiB


# -- image builders ---------------------------------------------------------------------------------------
def make_elf(segments, entry, e_type=2) -> bytes:
    """A minimal AArch64 ELF: segments are (paddr, vaddr, data, memsz, flags)."""
    n = len(segments)
    off = 64 + 56 * n
    hdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    hdr += struct.pack("<HHIQQQIHHHHHH", e_type, 183, 1, entry, 64, 0, 0, 64, 56, n, 64, 0, 0)
    phdrs, body = b"", b""
    for paddr, vaddr, data, memsz, flags in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, flags, off + len(body), vaddr, paddr, len(data), memsz, 0x10)
        body += data
    return hdr + phdrs + body


def make_image(text_offset, image_size, flags=0, code=LOOP, extra=b"") -> bytes:
    """An arm64 Linux Image header (Linux booting.rst): code0 is the first instruction executed."""
    return (code + bytes(4) + struct.pack("<QQQQQQ", text_offset, image_size, flags, 0, 0, 0) + b"ARM\x64"
            + bytes(4) + extra)


def heapinfo_guest(load: int) -> bytes:
    """Raw code at `load`: SYS_HEAPINFO into a 4-word block, then b . (Arm semihosting v2, HLT #0xF000)."""
    code = struct.pack("<4I", 0xD28002C0,      # mov x0, #0x16 (SYS_HEAPINFO)
                       0x10000061,             # adr x1, param (pc + 12)
                       0xD45E0000,             # hlt #0xf000
                       0x14000000)             # b .
    return code + struct.pack("<Q", load + 24) + bytes(32)


def plan_boot_bytes(data: bytes, ram_size=128 * MiB, dtb=DTB):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "img")
        with open(p, "wb") as f:
            f.write(data)
        return plan_boot(p, ram_base=BASE, ram_size=ram_size, dtb=dtb)


def write(tmp_path, name, data) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# -- the oracle -------------------------------------------------------------------------------------------
def qemu_at(kernel: str, stop: int, mem_mib: int, reads: dict, semihosting=False) -> tuple[dict, dict]:
    """Run QEMU to address `stop`; return (registers x0..x4 and pc, {name: words read at each address})."""
    cmd = (f"exec {QEMU} -M virt -cpu max -m {mem_mib} -display none -nodefaults -S -gdb stdio "
           f"{'-semihosting' if semihosting else ''} -kernel {kernel}")
    script = ["set pagination off", f"target remote | {cmd}", f"break *{stop:#x}", "continue",
              "info registers x0 x1 x2 x3 x4 pc"]
    for name, (addr, fmt) in reads.items():
        script += [f"echo @{name}\\n", f"x/{fmt} {addr:#x}"]
    script.append("kill")
    p = subprocess.run([GDB, "-q", "-batch", "-nx", *sum((["-ex", s] for s in script), [])],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    regs, mem, cur = {}, {}, None
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("x0", "x1", "x2", "x3", "x4", "pc"):
            regs[parts[0]] = int(parts[1], 16)
        elif line.startswith("@"):
            cur = line[1:]
        elif cur and line.startswith("0x") and ":" in line:
            mem.setdefault(cur, []).extend(int(w, 16) for w in line.split(":", 1)[1].split())
    assert "pc" in regs, p.stdout + p.stderr
    return regs, mem


FDT_MAGIC_LE = 0xEDFE0DD0                       # gdb reads the big-endian magic as a little-endian word


def check_against_qemu(path: str, mem_mib: int):
    plan = plan_boot(path, ram_base=BASE, ram_size=mem_mib * MiB, dtb=DTB)
    reads = {"base": (BASE, "2wx"), "kernel": (plan.kernel_entry, "1wx")}
    if plan.dtb_addr is not None:
        reads["dtb"] = (plan.dtb_addr, "2wx")
    if plan.kind != "elf":
        reads["stub"] = (BASE, "10wx")
    regs, mem = qemu_at(path, plan.kernel_entry, mem_mib, reads)
    assert regs["pc"] == plan.kernel_entry
    assert [regs[f"x{i}"] for i in range(4)] == list(plan.regs)
    kernel_seg = next(s for s in plan.segments if s.name in ("kernel", "elf[0]"))
    assert mem["kernel"][0] == int.from_bytes(kernel_seg.data[:4], "little")
    if plan.dtb_addr is not None:
        assert mem["dtb"] == [FDT_MAGIC_LE, int.from_bytes(struct.pack(">I", len(DTB)), "little")]
    else:
        assert mem["base"][0] != FDT_MAGIC_LE, "QEMU placed a tree where the plan has none"
    if plan.kind != "elf":
        stub = plan.segments[0]
        assert plan.entry == stub.addr == BASE and regs["x4"] == plan.kernel_entry
        assert mem["stub"] == list(struct.unpack("<10I", stub.data))
    else:
        assert plan.entry == plan.kernel_entry
    return plan


RAW_CASES = {
    "raw-128M": (LOOP * 4, 128, BASE + 0x8_0000, BASE + 64 * MiB),
    "raw-256M": (LOOP * 4, 256, BASE + 0x8_0000, BASE + 128 * MiB),
    "raw-1G": (LOOP * 4, 1024, BASE + 0x8_0000, BASE + 128 * MiB),
    "image-text-0x80000": (make_image(0x8_0000, 0x1_0000), 128, BASE + 0x8_0000, BASE + 64 * MiB),
    "image-text-0": (make_image(0, 0x1_0000), 128, BASE + 2 * MiB, BASE + 64 * MiB),
    "image-text-0x1000": (make_image(0x1000, 0x1_0000), 128, BASE + 0x1000, BASE + 64 * MiB),
    "image-size-0": (make_image(0x20_0000, 0), 128, BASE + 0x8_0000, BASE + 64 * MiB),
    "image-text-3M": (make_image(0x30_0000, 0x1_0000), 128, BASE + 0x30_0000, BASE + 64 * MiB),
    "image-gzip": (gzip.compress(make_image(0x10_0000, 0x1_0000)), 128, BASE + 0x10_0000, BASE + 64 * MiB),
    "raw-small-ram": (LOOP * 4, 24, BASE + 0x8_0000, BASE + 12 * MiB),
    "raw-big-dtb-after-image": (LOOP + bytes(65 * MiB), 128, BASE + 0x8_0000, BASE + 66 * MiB),
    "raw-4M-in-8M": (LOOP + bytes(4 * MiB - 4), 8, BASE + 0x8_0000, BASE + 6 * MiB),
}


@pytest.mark.parametrize("name", RAW_CASES)
def test_raw_and_image_placement(tmp_path, name):
    data, mem, kernel, dtb = RAW_CASES[name]
    plan = plan_boot(write(tmp_path, "k.bin", data), ram_base=BASE, ram_size=mem * MiB, dtb=DTB)
    assert (plan.kernel_entry, plan.dtb_addr, plan.entry) == (kernel, dtb, BASE)
    assert plan.regs == (dtb, 0, 0, 0) and plan.kind == ("raw" if name.startswith("raw") else "linux-image")
    assert [s.name for s in plan.segments] == ["bootloader", "kernel", "dtb"]
    assert plan.segments[2].data == DTB and plan.segments[1].executable and not plan.segments[2].executable


@needs_oracle
@pytest.mark.qemu
@pytest.mark.parametrize("name", RAW_CASES)
def test_raw_and_image_placement_matches_qemu(tmp_path, name):
    data, mem, _, _ = RAW_CASES[name]
    check_against_qemu(write(tmp_path, "k.bin", data), mem)


def elf_at(load, *, e_type=2, vaddr=None, memsz=None, flags=5) -> bytes:
    va = load if vaddr is None else vaddr
    return make_elf([(load, va, LOOP * 4, memsz or 16, flags)], va, e_type)


ELF_CASES = {
    "elf-2M": (elf_at(BASE + 2 * MiB), BASE),
    "elf-1M-exactly-fits": (elf_at(BASE + MiB), BASE),
    "elf-512K-no-room": (elf_at(BASE + 0x8_0000), None),
    "pie-in-ram": (elf_at(BASE + 2 * MiB, e_type=3), BASE),
    "vaddr-differs": (elf_at(BASE + 4 * MiB, vaddr=0xFFFF_0000_0040_0000), BASE),
    "at-ram-base": (elf_at(BASE), None),
}


@pytest.mark.parametrize("name", ELF_CASES)
def test_elf_placement(tmp_path, name):
    data, dtb = ELF_CASES[name]
    plan = plan_boot(write(tmp_path, "k.elf", data), ram_base=BASE, ram_size=128 * MiB, dtb=DTB)
    assert plan.kind == "elf" and plan.dtb_addr == dtb and plan.regs == (0, 0, 0, 0)
    assert plan.entry == plan.kernel_entry == plan.segments[0].addr
    assert plan.elf is not None and (dtb is None) == bool(plan.notes)


@needs_oracle
@pytest.mark.qemu
@pytest.mark.parametrize("name", [n for n in ELF_CASES if n != "at-ram-base"])   # QEMU: tree into flash at 0
def test_elf_placement_matches_qemu(tmp_path, name):
    check_against_qemu(write(tmp_path, "k.elf", ELF_CASES[name][0]), 128)


def test_harness_guest_elf_gets_no_qemu_sized_tree_but_a_small_one_fits():
    plan = plan_boot(guest_elf("hello"), ram_base=BASE, ram_size=128 * MiB, dtb=DTB)
    elf = load_elf(guest_elf("hello"))
    assert plan.entry == elf.entry == 0x4008_0000 and plan.dtb_addr is None
    assert [(s.addr, s.data, s.memsz) for s in plan.segments] == [(s.paddr, s.data, s.memsz) for s in elf.segments]
    assert plan.elf.symbol("main") == elf.symbol("main")
    small = build_tree(BoardSpec()).to_bytes()
    assert len(small) < 0x8_0000
    plan = plan_boot(guest_elf("hello"), ram_base=BASE, ram_size=128 * MiB, dtb=small)
    assert plan.dtb_addr == BASE and plan.regs == (0, 0, 0, 0) and plan.segments[-1].name == "dtb"


def test_boot_stub_is_the_documented_code():
    stub = boot_stub(0x4800_0000, 0x4008_0000)
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    insns = [(i.mnemonic, i.op_str) for i in md.disasm(stub[:24], 0)]
    assert insns == [("ldr", "x0, #0x18"), ("mov", "x1, xzr"), ("mov", "x2, xzr"), ("mov", "x3, xzr"),
                     ("ldr", "x4, #0x20"), ("br", "x4")]
    assert struct.unpack("<QQ", stub[24:]) == (0x4800_0000, 0x4008_0000) and len(stub) == 40


def test_linux_header_fields_and_flags():
    plan = plan_boot_bytes(make_image(0x8_0000, 0x2_0000, flags=0b1011))
    assert plan.header == LinuxImageHeader(0x8_0000, 0x2_0000, 0b1011)
    assert plan.header.big_endian and plan.header.page_size == 4096 and plan.header.placement_anywhere
    assert LinuxImageHeader(0, 1, 0b110).page_size == 64 << 10 and LinuxImageHeader(0, 1, 0).page_size is None
    short = make_image(0, 1)[:60]                   # QEMU reads the header only when size > 60
    assert plan_boot_bytes(short).kind == "raw"


def test_gzip_fallbacks_like_qemu(monkeypatch):
    corrupt = gzip.compress(b"x" * 100)[:-9] + b"\xff" * 9
    plan = plan_boot_bytes(corrupt)
    assert plan.segments[1].data == corrupt          # QEMU: cannot inflate -> loaded as it is
    monkeypatch.setattr(image_mod, "MAX_GUNZIP_BYTES", 64)
    big = gzip.compress(bytes(65))
    assert plan_boot_bytes(big).segments[1].data == big


def test_no_tree_means_x0_zero():
    plan = plan_boot_bytes(LOOP, dtb=None)
    assert plan.dtb_addr is None and plan.regs == (0, 0, 0, 0) and [s.name for s in plan.segments] == [
        "bootloader", "kernel"]
    assert struct.unpack_from("<Q", plan.segments[0].data, 24)[0] == 0


def test_zero_fill_overlapping_another_segment_is_dropped_like_qemu():
    a = (BASE + 2 * MiB, BASE + 2 * MiB, LOOP * 4, 0x2000, 5)       # bss would cover the next segment
    b = (BASE + 2 * MiB + 0x1000, BASE + 2 * MiB + 0x1000, b"\1" * 16, 16, 6)
    plan = plan_boot_bytes(make_elf([a, b], a[0]))
    assert [s.memsz for s in plan.segments[:2]] == [16, 16]
    c = (BASE + 3 * MiB, BASE + 3 * MiB, LOOP, 0x3000, 6)             # plain bss: kept
    assert plan_boot_bytes(make_elf([a[:3] + (16, 5), c], a[0])).segments[1].memsz == 0x3000


@pytest.mark.parametrize("data,ram,dtb,message", [
    (b"", 128, DTB, "empty image"),
    (b"\x27\x05\x19\x56" + bytes(60), 128, DTB, "U-Boot uImage"),
    (LOOP * (MiB // 4), 1, None, "too large to fit in RAM"),
    (LOOP * (MiB // 2), 1, None, r"too large to fit in RAM \(image 0x200000 bytes, RAM 0x100000\)"),
    (LOOP, 2.5, DTB, r"device tree \[0x40200000, 0x40300000\) does not fit in RAM"),
    (LOOP, 2, DTB, "not enough space for the device tree after the image"),
    (bytes(7 * MiB), 8, DTB, "not enough space for the device tree after the image"),
    (make_elf([(0x1000, 0x1000, LOOP, 4, 5)], 0x1000), 128, DTB, "segment elf.0. .* does not fit in RAM"),
    (make_elf([(0, 0, LOOP, 4, 5)], 0, e_type=3), 128, DTB, "QEMU does not relocate ELF images"),
    (make_elf([(BASE + 0x10_0000, BASE + 0x10_0000, LOOP * 8, 32, 5),
               (BASE + 0x10_0010, BASE + 0x10_0010, LOOP * 8, 32, 6)], BASE + 0x10_0000), 128, DTB,
     r"elf\[0\] .* and elf\[1\] .* overlap"),
    (b"\x7fELF" + bytes(12), 128, DTB, "truncated ELF header"),
    (make_elf([(BASE, BASE, LOOP, 4, 5)], BASE + 0x100), 128, DTB, "entry point"),
], ids=["empty", "uimage", "too-large", "larger-than-ram", "dtb-past-ram", "no-room-for-dtb", "no-room-after-7M", "elf-below-ram",
        "pie-at-0", "elf-overlap", "elf-truncated", "elf-entry-outside"])
def test_bad_images_are_one_line_image_errors(tmp_path, data, ram, dtb, message):
    path = write(tmp_path, "bad.img", data)
    with pytest.raises(ImageError, match=message) as e:
        plan_boot(path, ram_base=BASE, ram_size=int(ram * MiB), dtb=dtb)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)
    assert isinstance(e.value, ElfLoadError)         # the CLI's bad-image handling (status 125) applies


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        plan_boot(tmp_path / "none.bin", ram_base=BASE, ram_size=MiB)
    with pytest.raises(ImageError, match="is a directory"):
        plan_boot(tmp_path, ram_base=BASE, ram_size=MiB)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
@pytest.mark.qemu
@pytest.mark.parametrize("name,data,mem,ours,theirs", [
    ("big.bin", bytes(7 * MiB), 8, "not enough space for the device tree", "Not enough space for DTB"),
    ("huge.bin", bytes(9 * MiB), 8, "too large to fit in RAM", "too large to fit in RAM"),
    ("ov.elf", make_elf([(BASE + MiB, BASE + MiB, LOOP * 8, 32, 5), (BASE + MiB + 16, BASE + MiB + 16, LOOP * 8,
                                                                       32, 6)], BASE + MiB),
     128, "overlap", "ROM regions are overlapping"),
], ids=["no-room-for-dtb", "too-large", "elf-overlap"])
def test_qemu_refuses_the_same_images(tmp_path, name, data, mem, ours, theirs):
    path = write(tmp_path, name, data)
    with pytest.raises(ImageError, match=ours):
        plan_boot(path, ram_base=BASE, ram_size=mem * MiB, dtb=DTB)
    p = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-m", str(mem), "-display", "none", "-nodefaults", "-S",
                        "-kernel", path], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and theirs in p.stderr


def test_dtb_address_rule():
    assert dtb_address(BASE, 128 * MiB) == BASE + 64 * MiB
    assert dtb_address(BASE, 1 << 30) == BASE + 128 * MiB
    assert dtb_address(BASE, 3 * MiB) == BASE + 2 * MiB             # 1.5 MiB rounded up to 2 MiB
    assert dtb_address(BASE, 128 * MiB, BASE + 65 * MiB + 1) == BASE + 66 * MiB   # never below the image


def test_largest_free_gap():
    assert largest_free_gap(0, 100, []) == (0, 100)
    assert largest_free_gap(0, 100, [(10, 10), (50, 10)]) == (60, 40)
    assert largest_free_gap(0, 100, [(0, 10), (60, 40)]) == (10, 50)
    assert largest_free_gap(0, 100, [(0, 50), (40, 20), (90, 50)]) == (60, 30)   # overlapping, past the end
    assert largest_free_gap(10, 90, [(0, 5), (20, 10), (60, 0)]) == (30, 70)      # below base, empty ignored
    assert largest_free_gap(0, 100, [(10, 20), (50, 30)]) == (30, 20)             # ties: the lowest


@needs_oracle
@pytest.mark.qemu
@pytest.mark.parametrize("kind", ["raw", "elf-bss"])
def test_heapinfo_is_qemus_largest_gap(tmp_path, kind):
    if kind == "raw":
        load = BASE + 0x8_0000
        path = write(tmp_path, "h.bin", heapinfo_guest(load))
    else:
        load = BASE + 2 * MiB
        path = write(tmp_path, "h.elf", make_elf([(load, load, heapinfo_guest(load), 0x5_0000, 7)], load))
    plan = plan_boot(path, ram_base=BASE, ram_size=128 * MiB, dtb=DTB)
    regs, mem = qemu_at(path, load + 12, 128, {"block": (load + 24, "4gx")}, semihosting=True)
    base, size = largest_free_gap(BASE, 128 * MiB, plan.rom_regions())
    assert mem["block"] == [base, base + size, base + size, base]       # heap base, limit, stack base, limit
