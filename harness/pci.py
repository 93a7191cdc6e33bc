"""PCIe on the board: QEMU virt's generic ECAM host bridge (hw/pci-host/gpex.c as hw/arm/virt.c
`create_pcie` wires it) in every VM, and the functions plugged into its bus 0.

* Windows (QEMU 7.2 virt with highmem, as its dumpdtb shows for `-cpu max`; harness/devicetree.py declares
  them): ECAM at 0x40_1000_0000 (256 MiB, buses 0..255), the PIO window at 0x3eff_0000 (64 KiB of PCI I/O
  space from port 0), the 32-bit MMIO window 0x1000_0000..0x3efe_ffff and the high MMIO window
  0x80_0000_0000 (512 GiB), both identity-mapped onto PCI memory space. Each window is one MMIO region of
  the VM's IPA space; an access goes to `devmodel.pci.PciHost` (ECAM decode, BAR decode: a BAR serves only
  while its COMMAND decode bit is set and it holds an address in the window; the guest assigns BARs itself,
  as kvm-unit-tests and Linux do). Nothing claiming an access reads all-ones, a write is dropped (QEMU 7.2).
* Functions: the host bridge function (1b36:0008) at 00:00.0 always, as QEMU with -nodefaults; `add_testdev`
  plugs QEMU's pci-testdev (`-device pci-testdev`, what kvm-unit-tests' arm/run adds) in the next free slot,
  00:01.0 for the first one, as QEMU places a `-device` without `addr=`.
* INTx: the device tree maps INTA..D of slot s to SPI 3 + (pin + s) % 4 (QEMU's interrupt-map); no modelled
  function has an interrupt pin, so no line is driven yet. MSIs: the tree's msi-map sends RIDs to the ITS
  (GICv3 boards); no function has an MSI capability yet.
* DMA: no modelled function is a bus master; the SMMU and the DMA test devices stay platform devices
  (docs/DESIGN.md "PCIe host").

`devmodel.pci` is imported when a guest first touches a window or a function is plugged: a VM that never
looks at PCI pays only for the four mappings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .devicetree import VIRT_HIGH_PCIE_MMIO, VIRT_PCIE_ECAM, VIRT_PCIE_MMIO, VIRT_PCIE_PIO

if TYPE_CHECKING:
    from devmodel.pci import PciFunction, PciHost

    from .machine import VM

__all__ = ["PcieBoard", "WINDOWS"]

#: (name, (base, size), space): what each window of the IPA space reaches
WINDOWS = (("pcie-mmio", VIRT_PCIE_MMIO, "mem"), ("pcie-pio", VIRT_PCIE_PIO, "io"),
           ("pcie-ecam", VIRT_PCIE_ECAM, "config"), ("pcie-mmio-high", VIRT_HIGH_PCIE_MMIO, "mem"))


class _Window:
    """One window as an MMIO device: offsets from the window's base become PCI addresses of its space."""

    def __init__(self, board: "PcieBoard", base: int, space: str):
        self.board = board
        self.pci_base = base if space == "mem" else 0      # memory windows are identity-mapped
        self.space = space

    def read(self, offset: int, size: int) -> int:
        host = self.board.host
        if self.space == "config":
            return host.config_read(offset, size)
        if self.space == "io":
            return host.io_read(offset, size)
        return host.mem_read(self.pci_base + offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        host = self.board.host
        if self.space == "config":
            host.config_write(offset, value, size)
        elif self.space == "io":
            host.io_write(offset, value, size)
        else:
            host.mem_write(self.pci_base + offset, value, size)


class PcieBoard:
    """The PCIe host of `vm` (see the module docstring)."""

    def __init__(self, vm: "VM"):
        self.vm = vm
        self._host: "PciHost | None" = None
        self.windows = [(name, base, size, _Window(self, base, space)) for name, (base, size), space in WINDOWS]

    @property
    def host(self) -> "PciHost":
        """Bus 0 (`devmodel.pci.PciHost`), created with its host bridge function on first use."""
        if self._host is None:
            from devmodel.pci import GpexRoot, PciHost
            self._host = PciHost(GpexRoot(name=f"{self.vm.name}.gpex-root"))
        return self._host

    def map(self, ipa: Any) -> None:
        """Add the four windows to the VM's IPA bus (before its vCPUs exist: they map every region)."""
        for name, base, size, window in self.windows:
            ipa.add_device(base, size, window, name)

    def plug(self, function: "PciFunction") -> int:
        """Plug `function` into the next free slot of bus 0; returns its devfn."""
        return self.host.add(function)

    def add_testdev(self) -> int:
        """QEMU's `-device pci-testdev`; returns its devfn (8: 00:01.0 on a bus with only the host bridge)."""
        from devmodel.pci import PciTestdev
        return self.plug(PciTestdev(name=f"{self.vm.name}.pci-testdev"))
