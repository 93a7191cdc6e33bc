"""Booting like `-kernel` through the Python API (harness/machine.py VM.load, harness/board.py): raw images
behind QEMU's stub with x0 = the device tree, the tree built at boot from the devices the VM has then, a
user's tree, SYS_HEAPINFO and SYS_GET_CMDLINE from the plan, the TLBI trap's pre-scan of raw code.
QEMU comparisons are in test_boot_qemu.py."""
import struct

import pytest

from devmodel.fdt import Fdt, Node, string, u32
from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf
from harness.build import build_test_guest
from harness.devicetree import VIRT_MEM
from harness.exits import HarnessInputError, Kind
from harness.image import ImageError, boot_stub
from harness.machine import Machine
from harness.trap import TlbiTrap
from harness.vmm import setup_nested_vm

KERNEL = VIRT_MEM + 0x8_0000


def machine(**kw):
    out = bytearray()
    return Machine(console=lambda vm, data, stream: out.extend(data), **kw), out


def words(*w):
    return struct.pack(f"<{len(w)}I", *w)


def phandles(t: Fdt) -> dict[int, str]:
    return {n.u32s("phandle")[0]: path for path, n in t.root.walk() if n.get("phandle")}


@pytest.fixture(scope="module")
def fdt_probe():
    return build_test_guest("fdt_probe", binary=True).path


def test_raw_image_runs_behind_the_stub_with_the_tree_in_x0(fdt_probe):
    m, out = machine()
    vm = m.add_vm(ncpus=2, ram_size=256 << 20)
    plan = vm.load(fdt_probe, append="console=ttyAMA0 quiet")
    assert plan.kind == "raw" and vm.entry == VIRT_MEM and plan.kernel_entry == KERNEL
    assert plan.dtb_addr == 0x4800_0000 and vm.image is None and len(vm.symbolizer) == 0
    assert vm.ipa.read_bytes(VIRT_MEM, 40) == boot_stub(0x4800_0000, KERNEL)
    assert [(c.vaddr, c.ipa, len(c.data)) for c in vm.code_ranges] == [
        (VIRT_MEM, VIRT_MEM, 40), (KERNEL, KERNEL, fdt_probe.stat().st_size)]     # the pre-scan sees both
    o = m.run(timeout=60)
    assert (o.kind, o.exit_code) == (Kind.EXIT, 2)                                 # the guest counted 2 CPUs
    assert b"fdt: x0 48000000 x1 0 x2 0 x3 0\n" in out
    assert b'chosen: bootargs="console=ttyAMA0 quiet" stdout-path="/pl011@9000000"\n' in out
    assert b'psci: compatible="arm,psci-1.0" method="hvc"' in out and b"cpus: 2\n" in out
    t = Fdt.from_bytes(vm.dtb)
    assert vm.dtb == vm.ipa.read_bytes(0x4800_0000, len(vm.dtb)) and len(vm.dtb) == 1 << 20
    assert t.find("/cpus/cpu@1").u32s("reg") == (1,) and t.find("/memory@40000000").get("reg") == \
        struct.pack(">4I", 0, VIRT_MEM, 0, 256 << 20)


def test_heapinfo_and_cmdline_come_from_the_plan(fdt_probe):
    m, _ = machine()
    vm = m.add_vm()
    vm.load(str(fdt_probe), append="  a  b ")
    sh = vm.semihosting
    assert sh.cmdline == f"{fdt_probe} a b".encode()             # QEMU: the -kernel path, then the words
    # raw image: the stub, the image and the tree are QEMU's ROM blobs; the heap is the largest gap
    assert sh.heap == (KERNEL + fdt_probe.stat().st_size, 0x4400_0000, 0x4400_0000,
                       KERNEL + fdt_probe.stat().st_size)
    elf = guest_elf("hello")
    vm.load(elf)
    plan = vm.boot
    end = max(s.addr + s.memsz for s in plan.segments)
    assert plan.dtb_addr is None and sh.heap == (end, VIRT_MEM + (128 << 20), VIRT_MEM + (128 << 20), end)
    assert sh.cmdline == str(elf).encode()
    assert [c.vaddr for c in vm.code_ranges] == [s.addr for s in plan.segments if s.executable]


def test_the_tree_describes_the_devices_the_vm_has_at_boot():
    m, _ = machine()
    vm = m.add_vm(ncpus=3, start_el=2)
    vm.load(str(build_test_guest("fdt_probe", binary=True).path))
    before = Fdt.from_bytes(vm.device_tree())
    assert before.find("/smmuv3@9050000") is None and not [p for p, _ in before.root.walk() if "dmatest" in p]
    nv = setup_nested_vm(m, vm, vsid=0x23)             # after the load: a vSMMU and an assigned DMA device
    m.run(max_insns=1)                                  # boot writes the tree, then the budget ends the run
    t = Fdt.from_bytes(vm.dtb)
    assert vm.dtb == vm.ipa.read_bytes(vm.boot.dtb_addr, len(vm.dtb))
    smmu, dma = t.find("/smmuv3@9050000"), t.find("/dmatest@9100000")
    assert smmu.string("compatible") == "arm,smmu-v3" and smmu.u32s("interrupts")[1] == 74
    ph = phandles(t)
    assert (ph[dma.u32s("iommus")[0]], dma.u32s("iommus")[1]) == ("/smmuv3@9050000", nv.vsid)
    assert t.find("/psci").string("method") == "smc"                    # started at EL2: QEMU's conduit
    assert [t.find(f"/cpus/cpu@{i}").u32s("reg") for i in range(3)] == [(0,), (1,), (2,)]
    assert t.find("/intc@8000000").string("compatible") == "arm,cortex-a15-gic"


def test_a_dma_device_without_an_smmu_has_no_iommus():
    from devmodel.dmatest import DMATEST_BASE, DMATEST_SIZE, DmaTestDevice

    m, _ = machine()
    vm = m.add_vm()
    vm.add_device(DMATEST_BASE, DMATEST_SIZE, DmaTestDevice(vm.ipa, lambda *a: None, sid=5))
    dma = Fdt.from_bytes(vm.device_tree()).find("/dmatest@9100000")
    assert dma.string("compatible") == "smmu-harness,dmatest" and dma.get("iommus") is None


def test_user_dtb_is_fixed_up_as_qemu_does(tmp_path, fdt_probe):
    user = Fdt(Node("", {"#address-cells": u32(2), "#size-cells": u32(2), "model": string("mine")}))
    user.root.add(Node("memory@80000000", {"reg": u32(0, 0x8000_0000, 0, 0x1000), "device_type": string("memory")}))
    user.root.add(Node("psci", {"method": string("smc")}))
    path = tmp_path / "mine.dtb"
    path.write_bytes(user.to_bytes())
    m, out = machine()
    vm = m.add_vm()
    vm.load(fdt_probe, dtb=path, append="x=1")
    assert m.run(timeout=60).exit_code == 0                     # no /cpus in this tree: 0 CPU nodes
    t = Fdt.from_bytes(vm.dtb)
    assert t.root.string("model") == "mine" and t.find("/memory@80000000") is None
    assert t.find("/memory@40000000").get("reg") == struct.pack(">4I", 0, VIRT_MEM, 0, 128 << 20)
    assert t.find("/chosen").string("bootargs") == "x=1" and t.find("/psci").string("method") == "hvc"
    assert b'/: model="mine"' in out and b"fdt: x0 44000000" in out


def test_bad_user_dtb_and_undescribable_boards(tmp_path, fdt_probe):
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"\xd0\x0d\xfe\xed" + bytes(60))
    m, _ = machine()
    with pytest.raises(HarnessInputError, match=f"^{bad}: "):
        m.add_vm().load(fdt_probe, dtb=bad)
    big = m.add_vm("big", ncpus=124)                           # a GICv3 board describes 123 CPUs at most
    with pytest.raises(HarnessInputError, match="no device tree for this board .*1 to 123"):
        big.load(fdt_probe)
    assert big.load(guest_elf("hello")).dtb_addr is None       # an ELF never gets one at RAM + 0x80000 anyway


def test_text_file_boots_as_a_raw_image_and_dies_there(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")                                    # QEMU's -kernel would load it as raw code too
    m, _ = machine()
    vm = m.add_vm()
    assert vm.load(p).kind == "raw"
    o = m.run(timeout=30)
    assert o.is_death and o.pc == KERNEL and f"at pc {KERNEL:#x} <??>: 6c6c6568 ldnp" in o.message    # "hell"


def test_images_that_cannot_boot_are_image_errors(tmp_path):
    m, _ = machine()
    vm = m.add_vm(ram_size=1 << 20)
    p = tmp_path / "big.bin"
    p.write_bytes(bytes(2 << 20))
    with pytest.raises(ImageError, match="too large to fit in RAM"):
        vm.load(p)
    with pytest.raises(HarnessInputError, match="no such file"):
        vm.load(tmp_path / "missing.bin")


def test_tlbi_trap_prescans_raw_images(tmp_path):
    p = tmp_path / "tlbi.bin"
    # tlbi vmalle1is; dsb ish; mov x0, #0x18; adr x1, block; hlt #0xf000; b .; block: ApplicationExit, 0
    p.write_bytes(words(0xD508831F, 0xD5033B9F, 0xD2800300, 0x10000061, 0xD45E0000, 0x14000000)
                  + struct.pack("<QQ", 0x20026, 0))
    sink = ListSink()
    m = Machine(tracer=Tracer(events="tlbi_dsb,dvm_sync", sinks=[sink]), console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2)
    vm.load(p)
    m.add_plugin(TlbiTrap(m.interconnect, m.tracer))
    o = m.run(timeout=30)
    assert o.exit_code == 0
    assert [r.fields["pc"] for r in sink.of("tlbi_dsb")] == [KERNEL + 4] and sink.of("dvm_sync")


def test_the_board_tree_is_built_only_for_an_image_that_gets_it(fdt_probe, monkeypatch):
    """An ELF at RAM + 0x80000 has no room for the 1 MiB tree, so its load and boot pad none; a raw
    image's load and boot build it once while the board is unchanged, and again when a device came after the
    load (the tree describes the board at boot)."""
    import harness.machine as hm
    built = []
    real = hm.board_dtb
    monkeypatch.setattr(hm, "board_dtb", lambda spec: built.append(spec) or real(spec))
    m, _ = machine()
    vm = m.add_vm()
    plan = vm.load(guest_elf("hello"))
    assert plan.dtb_addr is None and plan.notes == ("no device tree: its 0x100000 bytes do not fit below the "
                                                    "image at 0x40080000",)
    assert (m.run(timeout=60).exit_code, built) == (0, [])
    m, _ = machine()
    vm = m.add_vm()
    vm.load(fdt_probe)
    m.run(max_insns=1)
    assert len(built) == 1 and vm.dtb == real(built[0]) == vm.ipa.read_bytes(vm.boot.dtb_addr, len(vm.dtb))
    m, _ = machine()
    vm = m.add_vm(ncpus=2)
    vm.load(fdt_probe)
    setup_nested_vm(m, vm)                                # a vSMMU after the load: the boot's tree differs
    m.run(max_insns=1)
    assert len(built) == 3 and built[1] != built[2] and Fdt.from_bytes(vm.dtb).find("/smmuv3@9050000")


def test_a_command_line_that_is_not_utf8_reaches_the_guest_as_given(fdt_probe):
    """--append from argv bytes that are not UTF-8 (Python's surrogate escapes): SYS_GET_CMDLINE and
    /chosen/bootargs get those bytes, as QEMU passes -append on; it used to end the run with an encoding error."""
    m, _ = machine()
    vm = m.add_vm()
    vm.load(fdt_probe, append="a\udcffb")
    assert vm.semihosting.cmdline == f"{fdt_probe} ".encode() + b"a\xffb"
    m.run(max_insns=1)
    assert Fdt.from_bytes(vm.dtb).find("/chosen").get("bootargs") == b"a\xffb\0"
