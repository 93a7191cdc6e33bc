"""harness/pci.py: QEMU virt's PCIe host bridge in every VM, its windows in the IPA space, `-device
pci-testdev` (the guest side is kvm-unit-tests' pci-test: tests/harness/test_kvm_unit_tests.py)."""
from pathlib import Path

import pytest

from devmodel.pci import Bar, ConfigSpace, PciFunction
from harness.cli import main
from harness.devicetree import VIRT_HIGH_PCIE_MMIO, VIRT_PCIE_ECAM, VIRT_PCIE_MMIO, VIRT_PCIE_PIO
from harness.machine import Machine

PCI_TEST = str(Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e" / "arm" / "pci-test.flat")
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
    assert "pcie" in vm.device_tree().decode("latin-1")


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
