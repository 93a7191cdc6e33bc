"""virtio-mmio on the board (harness/virtio.py): QEMU virt's 32 transports in every VM, chr-testdev's exit,
interrupt lines, accesses as Unicorn delivers them, and the kvm-unit-tests exit statuses (harness/exits.py)."""
from __future__ import annotations

import functools
import shutil
import struct

import pytest

from devmodel.trace import ListSink, Tracer
from devmodel.virtio import mmio as vmmio
from harness import virtio as board
from harness.build import build_guest
from harness.exits import EXIT_SKIP, Kind, exit_line_status, kut_status
from harness.machine import Machine

from guestbin import ROOT

ORACLE = ROOT / "tests" / "devmodel" / "virtio" / "guests" / "virtio_oracle.c"
EXIT_LINE = ROOT / "tests" / "harness" / "guests" / "kut_exit_line.c"
QEMU = shutil.which("qemu-system-aarch64")
TESTDEV = 31                     # QEMU virt gives its first -device virtio-* the highest transport


@functools.cache
def oracle_elf():
    return str(build_guest([ORACLE], name="virtio_oracle").path)


def _base(i: int) -> int:
    return board.WINDOW_BASE + board.TRANSPORT_SIZE * i


def test_layout_is_qemu_virts():
    assert (board.WINDOW_BASE, board.TRANSPORT_SIZE, board.NUM_TRANSPORTS, board.FIRST_SPI) == \
           (vmmio.VIRT_MMIO_BASE, vmmio.MMIO_SIZE, vmmio.VIRT_NUM_TRANSPORTS, vmmio.VIRT_MMIO_SPI)
    assert board.WINDOW_SIZE == 0x4000 and board.transport_spi(31) == 47
    assert [vmmio.virt_transport_base(i) for i in (0, 31)] == [_base(0), _base(31)]


@pytest.mark.parametrize("modern", [False, True])
def test_every_vm_has_32_transports_empty_ones_read_device_id_0(modern):
    m = Machine()
    vm = m.add_vm(chr_testdev=True, virtio_modern=modern)
    plain = m.add_vm()
    for i in range(32):
        assert vm.ipa.read(_base(i), 4) == vmmio.MAGIC_VALUE
        assert vm.ipa.read(_base(i) + 4, 4) == (2 if modern else 1)
        assert vm.ipa.read(_base(i) + 0xC, 4) == vmmio.VENDOR_ID_QEMU
        assert vm.ipa.read(_base(i) + 8, 4) == (3 if i == TESTDEV else 0)      # VIRTIO_ID_CONSOLE
        assert plain.ipa.read(_base(i) + 8, 4) == 0
    assert vm.virtio.testdev is not None and plain.virtio.testdev is None
    # DMA through the VM's guest-physical space, its RAM only (test_board_devices_dma_only_into_guest_ram)
    assert isinstance(vm.virtio.memory, board.GuestRam) and vm.virtio.memory.ipa is vm.ipa


def test_plug_order_is_qemus_and_memory_is_pluggable():
    from devmodel.virtio import VirtioConsole
    m = Machine()
    vm = m.add_vm()
    seen = []

    class Tap:                                        # an IOMMU-like view in front of guest memory
        def read_bytes(self, addr, size):
            seen.append(addr)
            return vm.ipa.read_bytes(addr, size)

        def write_bytes(self, addr, data):
            vm.ipa.write_bytes(addr, data)
    vm.virtio.memory = Tap()
    assert vm.virtio.add_chr_testdev() == 31
    assert vm.virtio.plug(VirtioConsole(vm.virtio.memory)) == 30
    assert vm.virtio.devices[0].memory is vm.virtio.memory


def test_deferred_chr_testdev_is_built_as_it_was_added():
    """A VM's chr-testdev is built at first use (start-up), with the DMA view it had when added, before any
    later device (QEMU's order), and `chr_testdev` says it is there without building it."""
    from devmodel.virtio import VirtioConsole
    m = Machine()
    vm, plain = m.add_vm(chr_testdev=True), m.add_vm()
    assert vm.virtio.chr_testdev and not plain.virtio.chr_testdev
    assert vm.virtio.plugged(build=False) == []
    ram = vm.virtio.memory
    vm.virtio.memory = object()                      # replaced after the VM was built: not the testdev's view
    assert vm.virtio.plug(VirtioConsole(vm.ipa)) == 30
    assert [i for i, _ in vm.virtio.plugged()] == [30, 31] and vm.virtio.devices[0].memory is ram
    assert vm.virtio.testdev is not None and vm.virtio.chr_testdev


def _run_oracle(modern: bool, tracer: Tracer | None = None):
    out = bytearray()
    m = Machine(console=lambda vm, data, stream: out.extend(data), tracer=tracer)
    vm = m.add_vm(chr_testdev=True, virtio_modern=modern)
    levels = []
    vm.virtio.irq_handler = lambda spi, level: levels.append((spi, level))
    vm.load(oracle_elf())
    return m, vm, m.run(timeout=60), out.decode(), levels


@pytest.mark.parametrize("modern, code", [(False, 3), (True, 5)])
def test_oracle_guest_ends_through_chr_testdev(modern, code):
    """The virtio oracle guest (tests/devmodel/virtio) sends "<code>q": QEMU exits with (code << 1) | 1 and
    arm/run keeps that status (it only turns 1 into 0)."""
    sink = ListSink()
    m, vm, o, out, levels = _run_oracle(modern, Tracer("chr_testdev_exit,virtio_board_irq,virtio_mmio_write",
                                                       sinks=[sink]))
    assert o.kind is Kind.EXIT and o.exit_code == (code << 1) | 1 and vm.outcome is o
    assert [(r["code"], r["status"]) for r in sink.of("chr_testdev_exit")] == [(code, (code << 1) | 1)]
    assert vm.virtio.testdev.exit_code == code
    # the exit arrives inside the QueueNotify store, which emu_stop leaves to be re-executed: never resumed
    notifies = [r for r in sink.of("virtio_mmio_write") if r["dev"].endswith("@a003e00") and r["offset"] == 0x50]
    assert len(notifies) == out.count(f"W {TESTDEV:x} 50 4 ")
    # the transport's interrupt line: levels on SPI 47 reach the handler, counted and traced
    irqs = sink.of("virtio_board_irq")
    assert irqs and {r["spi"] for r in irqs} == {47} and levels == [(r["spi"], r["level"]) for r in irqs]
    assert vm.virtio.raised[TESTDEV] == sum(1 for r in irqs if r["level"]) > 0
    assert sum(vm.virtio.raised) == vm.virtio.raised[TESTDEV]


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_oracle_transcript_matches_qemu_through_the_board():
    """Every value the guest read through the board, as under QEMU 7.2, except the one InterruptStatus
    read docs/virtio.md lists (QEMU also sets bit 0 with a configuration change)."""
    import subprocess
    q = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-m", "128M", "-nographic", "-no-reboot", "-nodefaults",
                        "-monitor", "none", "-serial", "stdio", "-semihosting", "-device", "virtio-serial-device",
                        "-device", "virtconsole,chardev=ctd", "-chardev", "testdev,id=ctd", "-kernel", oracle_elf()],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    _, _, o, out, _ = _run_oracle(False)
    assert o.exit_code == q.returncode == 7
    theirs, ours = q.stdout.splitlines(), out.splitlines()
    assert len(theirs) == len(ours)
    diff = [(a, b) for a, b in zip(theirs, ours) if a != b]
    assert diff == [(f"R {TESTDEV:x} 60 4 1", f"R {TESTDEV:x} 60 4 0")]


# ldur w2, [x1, #1]; ldr x3, [x1]; str w2, [x1 + 0x31]; then PSCI SYSTEM_OFF (x1 = transport 31)
_UNALIGNED = [0xD2A14001, 0xF287C001, 0xB8401022, 0xF9400023, 0x9100C424, 0xB9000082, 0xD2B08000, 0xF2800100,
              0xD4000002]


def test_unicorn_hands_the_transports_aligned_pieces():
    sink = ListSink()
    m = Machine(tracer=Tracer("virtio_mmio_read,virtio_mmio_write,virtio_mmio_bad_access", sinks=[sink]))
    vm = m.add_vm(chr_testdev=True)
    vm.load_code(0x4008_0000, struct.pack(f"<{len(_UNALIGNED)}I", *_UNALIGNED))
    o = m.run(timeout=10)
    assert o.kind is Kind.EXIT and o.exit_code == 0
    reads = [(r["offset"], r["size"]) for r in sink.of("virtio_mmio_read")]
    writes = [(r["offset"], r["size"]) for r in sink.of("virtio_mmio_write")]
    assert reads == [(0, 4), (4, 4), (0, 4), (4, 4)]          # 4 bytes at +1: the two words; 8 bytes: two words
    assert writes == [(0x31, 1), (0x32, 1), (0x33, 1), (0x34, 1)]     # an unaligned store: byte stores
    bad = sink.of("virtio_mmio_bad_access")
    assert [(r["kind"], r["offset"]) for r in bad] == [("write", 0x31), ("write", 0x32), ("write", 0x33),
                                                      ("write", 0x34)]
    assert vm.virtio.transport(TESTDEV).regs["QueueSel"] == 0        # RAZ/WI


def test_window_splits_at_a_transport_boundary():
    m = Machine()
    vm = m.add_vm(chr_testdev=True)
    w = vm.virtio
    # the last word of transport 30 (configuration space of an empty slot: 0) and MagicValue of transport 31
    assert w.read(0x200 * 31 - 4, 8) == vmmio.MAGIC_VALUE << 32
    w.write(0x200 * 31 - 4, 0x7 << 32, 8)                 # the high word lands on transport 31's MagicValue (RO)
    assert w.transport(TESTDEV).bad_accesses == 1 and w.transport(30).bad_accesses == 0


@functools.cache
def exit_line_elf(code: int):
    return str(build_guest([EXIT_LINE], name=f"kut_exit_line{code}", cflags=[f"-DCODE={code}"]).path)


@pytest.mark.parametrize("code, status", [(0, 0), (1, 3), (38, EXIT_SKIP)])
def test_exit_line_without_testdev(code, status):
    """No chr-testdev: the "EXIT: STATUS=" line before PSCI SYSTEM_OFF is the status (run_test_status)."""
    m = Machine(console=lambda vm, data, stream: None)
    vm = m.add_vm()
    vm.load(exit_line_elf(code))
    o = m.run(timeout=30)
    assert o.kind is Kind.EXIT and o.exit_code == status and "EXIT: STATUS" in o.message


def test_system_off_with_a_testdev_keeps_qemus_status():
    """With chr-testdev present, arm/run reads QEMU's status, not the line: SYSTEM_OFF is QEMU's 0."""
    m = Machine(console=lambda vm, data, stream: None)
    vm = m.add_vm(chr_testdev=True)
    vm.load(exit_line_elf(1))
    o = m.run(timeout=30)
    assert o.exit_code == 0 and vm.virtio.testdev.exit_code is None


@pytest.mark.parametrize("qemu, status", [(1, 0), (0, 1), (3, 3), (77, 77), (124, 124), (139, 139)])
def test_kut_status_is_qemu_fixup_return_code(qemu, status):
    assert kut_status(qemu) == status


@pytest.mark.parametrize("text, status", [
    (b"PASS: x\n\nEXIT: STATUS=1\n", 0), (b"EXIT: STATUS=3\nEXIT: STATUS=1\n", 3), (b"x EXIT: STATUS=3\n", None),
    (b"EXIT: a STATUS=5 STATUS=7\n", 7), (b"EXIT: nothing\n", None), (b"", None), (b"EXIT: STATUS=77", 77)])
def test_exit_line_is_the_first_exit_line(text, status):
    assert exit_line_status(text) == status


def test_a_testdev_exit_ends_only_its_own_vm():
    """Two VMs: vm0's guest exits through its chr-testdev, vm1's own guest runs on to its semihosting exit;
    vm1's transports are its own (no testdev there: DeviceID 0)."""
    from guestbin import guest_elf
    m = Machine(console=lambda vm, data, stream: None)
    vm0 = m.add_vm("vm0", chr_testdev=True)
    vm1 = m.add_vm("vm1")
    vm0.load(oracle_elf())
    vm1.load(str(guest_elf("hello")))
    m.run(timeout=60)
    assert vm0.outcome.exit_code == 7 and "chr-testdev" in vm0.outcome.message
    assert vm1.outcome.exit_code == 0 and "semihosting" in vm1.outcome.message
    assert vm1.ipa.read(_base(TESTDEV) + 8, 4) == 0 and vm1.virtio.testdev is None
    assert m.outcome.exit_code == 7                     # the machine reports the VM that did not exit 0


def test_device_tree_lists_the_transports_and_the_asked_gic():
    m = Machine()
    vm = m.add_vm(chr_testdev=True)
    tree = vm.device_tree()
    assert tree.count(b"virtio_mmio@") == 32 and b"virtio_mmio@a003e00" in tree
    assert b"arm,cortex-a15-gic" in tree and b"arm,gic-v3" not in tree       # QEMU virt's default: GICv2
    vm.gic_version = 3                                                   # -machine gic-version=3
    assert b"arm,gic-v3" in vm.device_tree()


def test_board_devices_dma_only_into_guest_ram():
    """A descriptor aimed at MMIO (a transport's own QueueNotify, the GIC) is the device's bus error, never an
    access to that device (a re-entry, or a write the guest could not make itself through the device)."""
    from devmodel.bus import BusError
    m = Machine()
    vm = m.add_vm(chr_testdev=True)
    mem = vm.virtio.memory
    assert isinstance(mem, board.GuestRam) and vm.virtio.devices[0].memory is mem
    mem.write_bytes(vm.ram_ipa + 0x1000, b"ok")
    assert mem.read_bytes(vm.ram_ipa + 0x1000, 2) == b"ok"
    notify = _base(TESTDEV) + 0x50                     # QueueNotify of the chr-testdev's own transport
    for addr in (notify, 0x0800_0000, vm.ram_ipa + vm.ram.size - 1):
        with pytest.raises(BusError):
            mem.write_bytes(addr, b"\0\0\0\0")
        with pytest.raises(BusError):
            mem.read_bytes(addr, 4)
