"""`PciFunction`: a configuration space plus the regions its BARs decode, and QEMU virt's host bridge
function at 00:00.0.

A function's BAR regions are read and written with `bar_read(index, offset, size)` /
`bar_write(index, offset, value, size)` (offset from the BAR's base); a function without a region for a BAR
reads all-ones there, as an unclaimed PCI access does (a master abort). The host bridge routes an access to
a BAR only while `config.bar_address(index)` decodes it.
"""
from __future__ import annotations

from .config import REDHAT_VENDOR, ConfigSpace

__all__ = ["PciFunction", "GpexRoot", "GPEX_ROOT_DEVICE", "CLASS_HOST_BRIDGE"]

GPEX_ROOT_DEVICE = 0x0008          # QEMU PCI_DEVICE_ID_REDHAT_PCIE_HOST (hw/pci-host/gpex.c gpex_root)
CLASS_HOST_BRIDGE = 0x060000       # PCI Code and ID Assignment: bridge, host bridge


class PciFunction:
    """A function: `config` (a `ConfigSpace`) and `name`; subclasses serve their BARs."""

    def __init__(self, config: ConfigSpace, name: str = "pci-function"):
        self.config = config
        self.name = name

    def bar_read(self, index: int, offset: int, size: int) -> int:
        return (1 << 8 * size) - 1

    def bar_write(self, index: int, offset: int, value: int, size: int) -> None:
        return None


class GpexRoot(PciFunction):
    """QEMU's generic PCIe host bridge function (`gpex-root`, 1b36:0008, class 06 00 00): no BARs, no
    interrupt pin, nothing behind it but its header."""

    def __init__(self, name: str = "gpex-root"):
        super().__init__(ConfigSpace(REDHAT_VENDOR, GPEX_ROOT_DEVICE, CLASS_HOST_BRIDGE), name)
