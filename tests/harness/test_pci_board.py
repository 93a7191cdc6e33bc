"""harness/pci.py: QEMU virt's PCIe host bridge in every VM, its windows in the IPA space, `-device
pci-testdev` (the guest side is kvm-unit-tests' pci-test: tests/harness/test_kvm_unit_tests.py)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devmodel.fdt import parse
from devmodel.pci import Bar, ConfigSpace, PciFunction
from harness.catalogue import parse_catalogue
from harness.cli import main
from harness.devicetree import VIRT_HIGH_PCIE_MMIO, VIRT_PCIE_ECAM, VIRT_PCIE_MMIO, VIRT_PCIE_PIO
from harness.machine import Machine

KUT = Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e"
PCI_TEST, CFG = str(KUT / "arm" / "pci-test.flat"), KUT / "arm" / "unittests.cfg"
ECAM = VIRT_PCIE_ECAM[0]


def cfg(dev: int, reg: int) -> int:
    return ECAM + (dev << 15) + reg


@pytest.fixture
def vm():
    m = Machine()
    yield m.add_vm()
    m.close()


def test_every_vm_has_the_host_bridge_alone_on_bus_0(vm):
    names = {r.name: (r.base, r.size) for r in vm.ipa.regions}
    assert names["pcie-ecam"] == VIRT_PCIE_ECAM and names["pcie-pio"] == VIRT_PCIE_PIO
    assert names["pcie-mmio"] == VIRT_PCIE_MMIO and names["pcie-mmio-high"] == VIRT_HIGH_PCIE_MMIO
    assert vm.ipa.read(cfg(0, 0), 4) == 0x0008_1B36 and vm.ipa.read(cfg(0, 8), 4) == 0x0600_0000
    assert [vm.ipa.read(cfg(d, 0), 4) for d in range(1, 32)] == [0xFFFF_FFFF] * 31     # -nodefaults: nothing else
    assert vm.ipa.read(VIRT_PCIE_MMIO[0], 4) == 0xFFFF_FFFF and vm.ipa.read(VIRT_PCIE_PIO[0], 2) == 0xFFFF
    assert vm.ipa.read(ECAM + (1 << 20), 4) == 0xFFFF_FFFF                           # bus 1: no bridge
    node = parse(vm.device_tree()).find("/pcie@10000000")
    assert node.string("compatible") == "pci-host-ecam-generic"


class Bar64(PciFunction):
    """A function with one 64-bit memory BAR that answers its offset."""

    def __init__(self):
        c = ConfigSpace(0x1B36, 0x00FF, 0xFF00)
        c.add_bar(Bar(0, 1 << 20, is64=True))
        super().__init__(c, "bar64")
        self.writes = []

    def bar_read(self, index, offset, size):
        return offset

    def bar_write(self, index, offset, value, size):
        self.writes.append((index, offset, value, size))


def test_bars_are_reached_through_the_windows_once_decoded(vm):
    assert vm.pcie.add_testdev() == 8
    fn = Bar64()
    assert vm.pcie.plug(fn) == 16
    vm.ipa.write(cfg(1, 0x10), 0x1000_0000, 4)                   # testdev BAR0: 32-bit window
    vm.ipa.write(cfg(1, 0x14), 0x100, 4)                         # BAR1: port 0x100
    vm.ipa.write(cfg(2, 0x10), 0x0010_0000, 4)                   # 64-bit BAR at 0x80_0010_0000
    vm.ipa.write(cfg(2, 0x14), 0x80, 4)
    high = VIRT_HIGH_PCIE_MMIO[0] + 0x10_0000
    assert vm.ipa.read(high + 0x44, 4) == 0xFFFF_FFFF            # COMMAND.MEMORY clear: not decoded
    for dev in (1, 2):
        vm.ipa.write(cfg(dev, 4), 0x3, 2)
    assert vm.ipa.read(high + 0x44, 4) == 0x44
    vm.ipa.write(high + 8, 0xAB, 1)
    assert fn.writes == [(0, 8, 0xAB, 1)]
    vm.ipa.write(VIRT_PCIE_MMIO[0], 0, 1)                        # testdev: select mmio-no-eventfd
    assert vm.ipa.read(VIRT_PCIE_MMIO[0] + 4, 4) == 2048
    vm.ipa.write(VIRT_PCIE_PIO[0] + 0x100, 1, 1)                 # select portio-wildcard-eventfd
    assert vm.ipa.read(VIRT_PCIE_PIO[0] + 0x104, 4) == 132
    assert vm.ipa.read(VIRT_PCIE_PIO[0], 4) == 0xFFFF_FFFF       # port 0: nobody


def test_run_device_pci_testdev(capsys):
    assert main(["run", PCI_TEST, "-device", "pci-testdev"]) == 0
    out = capsys.readouterr().out
    assert "00.01.0 1b36:0005" in out and "PASS: pci: PCI test device passed 6/6 tests" in out


def test_run_without_device_has_only_the_host_bridge(capsys):
    assert main(["run", PCI_TEST]) == 77                          # as QEMU -nodefaults: only the host bridge
    out = capsys.readouterr().out
    assert "00.01.0" not in out and "SKIP: pci: No PCI test device" in out


def test_run_refuses_devices_it_does_not_have(capsys):
    assert main(["run", PCI_TEST, "-device", "e1000"]) == 125    # usage error, naming what it has
    assert "invalid choice: 'e1000' (choose from 'pci-testdev')" in capsys.readouterr().err
    assert main(["run", PCI_TEST] + ["-device", "pci-testdev"] * 32) == 125      # 31 slots after the host bridge
    assert "PCI: no slot/function available for vm0.pci-testdev, all in use or reserved" in capsys.readouterr().err


QEMU = shutil.which("qemu-system-aarch64")
_OPS = re.compile(r"memory_region_ops_(read|write) cpu \d+ mr \S+ addr (0x[0-9a-f]+) value (0x[0-9a-f]+) size 1 "
                  r"name 'pci-testdev-(?:mmio|portio)'")


def _testdev_traffic_here() -> list[tuple[str, int, int]]:
    """pci-test's accesses that reach the pci-testdev here, byte by byte at CPU addresses (as QEMU traces them:
    its access size is 1; a write its ioeventfd takes never reaches the device)."""
    m = Machine(console=lambda vm, data, stream: None)
    vm = m.add_vm(chr_testdev=True)
    dev = vm.pcie.host.functions[vm.pcie.add_testdev()]
    seen, read, write = [], dev.bar_read, dev.bar_write
    base = lambda index: (VIRT_PCIE_PIO[0] if index else 0) + dev.config.bar_address(index)  # noqa: E731

    def bar_read(index, offset, size):
        value = read(index, offset, size)
        seen.extend(("read", base(index) + offset + i, (value >> 8 * i) & 0xFF) for i in range(size))
        return value

    def bar_write(index, offset, value, size):
        taken = sum(dev.signalled)
        write(index, offset, value, size)
        if sum(dev.signalled) == taken:
            seen.extend(("write", base(index) + offset + i, (value >> 8 * i) & 0xFF) for i in range(size))

    dev.bar_read, dev.bar_write = bar_read, bar_write
    vm.load(PCI_TEST)
    assert m.run(timeout=60).exit_code == 0
    m.close()
    return seen


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_testdev_sees_the_same_accesses_as_qemus():
    """QEMU 7.2's `-trace memory_region_ops_*` of the pci-testdev regions under arm/run's command line: every
    access (address, byte value) in order, so the registers, counts and ioeventfd behaviour are QEMU's."""
    from harness.unittests import qemu_command
    entry = next(e for e in parse_catalogue(CFG, 2) if e.name == "pci-test")
    p = subprocess.run(qemu_command(entry, QEMU) + ["-trace", "memory_region_ops_read", "-trace",
                                                   "memory_region_ops_write"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    # the trace shows the device's return value before the memory core masks it to the access size (QEMU's
    # pci-testdev returns a `char`, so 0xfa is traced sign-extended); the guest reads the low byte
    theirs = [(op, int(a, 16), int(v, 16) & 0xFF) for op, a, v in _OPS.findall(p.stderr)]
    assert len(theirs) > 200 and "PASS: pci: PCI test device passed 6/6 tests" in p.stdout
    assert _testdev_traffic_here() == theirs


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_overlapping_bars_answer_as_on_qemu():
    """guest_fw pci_overlap.c: two pci-testdevs' memory BARs moved over each other (the one mapped last answers)
    and one over guest RAM (RAM answers): the same console output and status under QEMU 7.2."""
    from guestbin import guest_elf, run_cli
    elf = guest_elf("pci_overlap")
    devices = ["-device", "pci-testdev"] * 2
    q = subprocess.run([QEMU, "-nodefaults", "-M", "virt", "-cpu", "max", "-m", "128M", "-semihosting",
                        "-display", "none", "-no-reboot", "-serial", "stdio", *devices, "-kernel", str(elf)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    h = run_cli("run", elf, *devices)
    assert q.returncode == h.returncode == 0, (q.stdout, h.stdout, h.stderr)
    assert q.stdout.replace("\r\n", "\n") == h.stdout and "offset 2050" in h.stdout
