"""PCI: configuration space, a generic ECAM host bridge and QEMU's pci-testdev (docs/DESIGN.md "PCIe host").

Modules:

* `config` -- `ConfigSpace`, a type 0 header with QEMU's read-only / read-write / RW1C masks, `Bar` and
  BAR decoding (PCI Local Bus 3.0 6.1-6.2);
* `function` -- `PciFunction` (a configuration space and the regions its BARs decode) and `GpexRoot`,
  QEMU virt's host bridge function at 00:00.0;
* `host` -- `PciHost`, bus 0 of an ECAM host: ECAM decode, memory and I/O space dispatch to BARs;
* `testdev` -- `PciTestdev`, QEMU's pci-testdev (kvm-unit-tests' pci-test).

Pure: accesses are (offset, size) calls; the board (harness/pci.py) maps the windows.
"""
from .config import Bar, ConfigSpace
from .function import GpexRoot, PciFunction
from .host import PciHost, ecam_decode
from .testdev import PciTestdev

__all__ = ["Bar", "ConfigSpace", "GpexRoot", "PciFunction", "PciHost", "ecam_decode", "PciTestdev"]
