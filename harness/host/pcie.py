"""What the host kernel's PCI core does to a function's ATS and PRI capabilities (Linux `drivers/pci/ats.c`:
`pci_enable_ats`, `pci_disable_ats`, `pci_enable_pri`, `pci_disable_pri`, `pci_reset_pri`), for the functions of
this board: the DMA test device, whose PCIE_CTRL / PRI_ALLOC registers stand for the ATS Control and PRI
Control / Outstanding Page Request Allocation registers of its configuration space (devmodel/dmatest.py).

The SMMU driver gets a `PcieFunction` per master (`SmmuDriver.probe_device(sid, pcie=...)`) and calls it in
Linux's order (`arm_smmu_enable_ats` after the STE with EATS is in place, `pci_disable_ats` before the STE that
drops EATS). A master without one has no PCIe side the driver can see (a platform device, or a function whose
capabilities firmware owns): EATS still follows the domain, nothing is enabled at the function.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from devmodel.dmatest import PCIE_ATS_EN, PCIE_PRI_EN, PCIE_PRI_RESET
from devmodel.dmatest import REGS as DMATEST_REGS

__all__ = ["PcieFunction", "DmaTestFunction"]

_OFF = {r.name: r.offset for r in DMATEST_REGS}


class PcieFunction(Protocol):
    ats_supported: bool
    pri_supported: bool

    def enable_ats(self, stu: int) -> None: ...

    def disable_ats(self) -> None: ...

    def enable_pri(self, reqs: int) -> None: ...

    def disable_pri(self) -> None: ...

    def reset_pri(self) -> None: ...


class DmaTestFunction:
    """The DMA test device as a PCIe function: its capability controls written through its register window
    (`dev.read/write`, what config-space accesses are to a real function)."""

    ats_supported = True
    pri_supported = True

    def __init__(self, dev: Any):
        self.dev = dev
        self.calls: Counter[str] = Counter()

    def _ctrl(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        v = self.dev.read(_OFF["PCIE_CTRL"], 4)
        self.dev.write(_OFF["PCIE_CTRL"], (v & ~clear_bits) | set_bits, 4)

    @property
    def ats_enabled(self) -> bool:
        return bool(self.dev.read(_OFF["PCIE_CTRL"], 4) & PCIE_ATS_EN)

    def enable_ats(self, stu: int) -> None:
        """`pci_enable_ats(pdev, stu)`: ATS Control.Enable (the STU is not modelled by the device)."""
        self.calls["enable_ats"] += 1
        self._ctrl(set_bits=PCIE_ATS_EN)

    def disable_ats(self) -> None:
        self.calls["disable_ats"] += 1
        self._ctrl(clear_bits=PCIE_ATS_EN)

    def enable_pri(self, reqs: int) -> None:
        """`pci_enable_pri(pdev, reqs)`: Outstanding Page Request Allocation, then PRI Control.Enable."""
        self.calls["enable_pri"] += 1
        self.dev.write(_OFF["PRI_ALLOC"], reqs, 4)
        self._ctrl(set_bits=PCIE_PRI_EN)

    def disable_pri(self) -> None:
        self.calls["disable_pri"] += 1
        self._ctrl(clear_bits=PCIE_PRI_EN)

    def reset_pri(self) -> None:
        self.calls["reset_pri"] += 1
        self._ctrl(set_bits=PCIE_PRI_RESET)
