"""-initrd as QEMU 7.2 boots it (harness/image.py, harness/devicetree.py, VM.load): where the initrd and the
tree go, and /chosen's linux,initrd-start/-end; checked against QEMU's own `info roms` and dumpdtb."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from devmodel.fdt import Fdt
from harness.devicetree import BoardSpec, build_tree
from harness.exits import HarnessInputError
from harness.image import ImageError, initrd_address, plan_boot
from harness.machine import Machine

QEMU = shutil.which("qemu-system-aarch64")
BASE, MiB = 0x4000_0000, 1 << 20
LOOP = (0x14000000).to_bytes(4, "little")          # b .
ENV = b"TARGET=qemu\nERRATA_FORCE=y\n"
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                     "(Debian: apt-get install qemu-system-arm)")
def _k(tmp_path, data: bytes):
    p = tmp_path / "k.bin"
    p.write_bytes(data)
    return p


def test_placement_and_tree_names_it(tmp_path):
    plan = plan_boot(_k(tmp_path, LOOP * 4), ram_base=BASE, ram_size=256 * MiB, dtb=bytes(MiB), initrd=ENV)
    assert [(s.name, s.addr) for s in plan.segments] == [
        ("bootloader", BASE), ("kernel", BASE + 0x8_0000), ("initrd", BASE + 128 * MiB), ("dtb", BASE + 130 * MiB)]
    assert plan.initrd == (BASE + 128 * MiB, BASE + 128 * MiB + len(ENV)) and plan.regs[0] == BASE + 130 * MiB
    # past the middle of RAM the initrd follows the image, page aligned; the tree the next 2 MiB boundary
    big = plan_boot(_k(tmp_path, LOOP + bytes(70 * MiB)), ram_base=BASE, ram_size=128 * MiB, dtb=bytes(MiB),
                    initrd=ENV)
    end = BASE + 0x8_0000 + 4 + 70 * MiB
    assert big.initrd[0] == initrd_address(BASE, 128 * MiB, end) == (end + 0xFFF) & ~0xFFF
    assert big.dtb_addr == (big.initrd[1] + 2 * MiB - 1) & ~(2 * MiB - 1)
    chosen = build_tree(BoardSpec(bootargs="x", initrd=plan.initrd)).root.child("chosen")
    assert list(chosen.props)[:3] == ["linux,initrd-end", "linux,initrd-start", "bootargs"]
    assert chosen.props["linux,initrd-start"] == (BASE + 128 * MiB).to_bytes(4, "big")


def test_refused_with_an_elf_and_a_missing_file(tmp_path):
    elf = tmp_path / "k.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(ImageError, match="raw and Image kernels only"):
        plan_boot(elf, ram_base=BASE, ram_size=128 * MiB, initrd=ENV)
    vm = Machine().add_vm()
    with pytest.raises(HarnessInputError, match="no such file"):
        vm.load(_k(tmp_path, LOOP), initrd=tmp_path / "none")
    assert vm.initrd is None and vm.boot is None


def test_vm_load_puts_it_in_ram_and_the_tree(tmp_path):
    vm = Machine().add_vm(ram_size=256 * MiB)
    plan = vm.load(_k(tmp_path, LOOP * 4), append="a b", initrd=ENV)
    start, end = plan.initrd
    assert bytes(vm.ram.buf[start - BASE:end - BASE]) == ENV and vm.initrd == (start, end)
    dtb = next(s for s in plan.segments if s.name == "dtb").data
    chosen = Fdt.from_bytes(dtb).root.child("chosen")
    assert chosen.props["linux,initrd-end"] == end.to_bytes(4, "big")
    vm.load(_k(tmp_path, LOOP * 4))                      # a later load without one: no initrd in the tree
    assert vm.initrd is None and "linux,initrd-start" not in Fdt.from_bytes(vm.device_tree()).root.child("chosen").props


def _qemu_roms(kernel, initrd, mem: int) -> dict[str, int]:
    p = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-nodefaults", "-display", "none", "-S", "-monitor",
                        "stdio", "-m", str(mem), "-kernel", str(kernel), "-initrd", str(initrd)],
                       input="info roms\nquit\n", capture_output=True, text=True, timeout=60)
    roms = {}
    for m in re.finditer(r"addr=([0-9a-f]+) size=0x[0-9a-f]+ mem=ram name=\"([^\"]+)\"", p.stdout):
        roms[m.group(2)] = int(m.group(1), 16)
    return roms


@needs_qemu
@pytest.mark.qemu
@pytest.mark.parametrize("data, mem", [(LOOP * 4, 256), (LOOP * 4, 128), (LOOP + bytes(70 * MiB), 128)],
                         ids=["256M", "128M", "image-past-half"])
def test_placement_and_chosen_match_qemu(tmp_path, data, mem):
    kernel, env = _k(tmp_path, data), tmp_path / "env"
    env.write_bytes(ENV)
    roms = _qemu_roms(kernel, env, mem)
    vm = Machine().add_vm(ram_size=mem * MiB)
    plan = vm.load(kernel, append="setup", initrd=env)
    assert (roms[str(env)], roms["dtb"]) == (plan.initrd[0], plan.dtb_addr)
    dump = tmp_path / "q.dtb"
    subprocess.run([QEMU, "-M", f"virt,dumpdtb={dump}", "-cpu", "max", "-nodefaults", "-display", "none", "-m",
                    str(mem), "-kernel", str(kernel), "-initrd", str(env), "-append", "setup"],
                   capture_output=True, timeout=60, check=True)
    theirs = Fdt.from_bytes(dump.read_bytes()).root.child("chosen").props
    ours = Fdt.from_bytes(vm.device_tree()).root.child("chosen").props
    names = ["linux,initrd-end", "linux,initrd-start", "bootargs", "stdout-path"]
    assert list(theirs)[:4] == list(ours)[:4] == names           # QEMU adds rng-seed, kaslr-seed after
    assert all(theirs[n] == ours[n] for n in names)
