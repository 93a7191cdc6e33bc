"""A generic ECAM PCI host (QEMU's gpex, Linux's pci-host-ecam-generic): bus 0's functions, their
configuration space through ECAM, and the memory and I/O spaces their BARs decode.

ECAM (PCIe Base 6.0 7.2.2, Linux Documentation/devicetree/bindings/pci/host-generic-pci.yaml): the byte at
window offset `bus << 20 | device << 15 | function << 12 | register` is that register of that function
(`ecam_decode`). A function that does not exist reads all-ones (vendor 0xFFFF: "no function here") and
ignores writes, as do buses other than 0 (no bridges are modelled).

Memory and I/O space: `mem_read(addr)` / `io_read(port)` take PCI bus addresses; the BAR that decodes the
address gets the access at its offset in the BAR; nothing claiming it reads all-ones and drops a write (a
master abort: what QEMU 7.2 virt gives the guest in its PCI windows). Overlapping BARs (undefined for PCI):
the one mapped last wins, as in QEMU - hw/pci/pci.c pci_update_mappings re-adds a BAR whose decoded address
changed (in BAR order) at the same priority, and the memory core puts a new subregion before its equals
(softmmu/memory.c memory_region_add_subregion_common), so it shadows them. `_remap` records that order at
each configuration write.

Functions are placed as QEMU places `-device` without `addr=`: the first free slot of bus 0, function 0
(the host bridge takes 00:00.0). Nothing a guest writes raises.
"""
from __future__ import annotations

from .function import GpexRoot, PciFunction

__all__ = ["PciHost", "ecam_decode", "ECAM_BUS_SHIFT", "ECAM_DEVFN_SHIFT", "ECAM_BUS_SIZE", "MAX_DEVFN"]

ECAM_BUS_SHIFT, ECAM_DEVFN_SHIFT = 20, 12
ECAM_BUS_SIZE = 1 << ECAM_BUS_SHIFT          # 32 devices x 8 functions x 4 KiB
MAX_DEVFN = 256


def ecam_decode(offset: int) -> tuple[int, int, int, int]:
    """(bus, device, function, register) of an ECAM window offset."""
    return (offset >> ECAM_BUS_SHIFT) & 0xFF, (offset >> 15) & 0x1F, (offset >> ECAM_DEVFN_SHIFT) & 0x7, \
        offset & 0xFFF


class PciHost:
    """Bus 0 of an ECAM host bridge (see the module docstring); `functions` maps devfn to function."""

    def __init__(self, root: PciFunction | None = None):
        self.functions: dict[int, PciFunction] = {}
        self._mapped: dict[tuple[int, int], int | None] = {}     # (devfn, BAR) -> address last decoded
        self._order: dict[tuple[int, int], int] = {}             # (devfn, BAR) -> when it was mapped
        self._seq = 0
        self.add(root if root is not None else GpexRoot(), devfn=0)

    def add(self, function: PciFunction, devfn: int | None = None) -> int:
        """Plug `function` at `devfn` (None: function 0 of the first free slot); returns its devfn."""
        if devfn is None:
            devfn = next((s << 3 for s in range(32) if not any((s << 3) + f in self.functions for f in range(8))),
                         None)
            if devfn is None:                        # QEMU's words for the same refusal
                raise ValueError(f"PCI: no slot/function available for {function.name}, all in use or reserved")
        if not 0 <= devfn < MAX_DEVFN or devfn in self.functions:
            raise ValueError(f"devfn {devfn:#x} is taken or out of range")
        self.functions[devfn] = function
        self.functions = dict(sorted(self.functions.items()))
        return devfn

    # -- configuration space (ECAM) -----------------------------------------------------------------------
    def _function_at(self, offset: int) -> tuple[PciFunction | None, int]:
        bus, dev, fn, reg = ecam_decode(offset)
        return (self.functions.get(dev << 3 | fn) if bus == 0 else None), reg

    def config_read(self, offset: int, size: int) -> int:
        fn, reg = self._function_at(offset)
        if fn is None or reg + size > 1 << ECAM_DEVFN_SHIFT:
            return (1 << 8 * size) - 1
        return fn.config.read(reg, size)

    def config_write(self, offset: int, value: int, size: int) -> None:
        fn, reg = self._function_at(offset)
        if fn is not None and reg + size <= 1 << ECAM_DEVFN_SHIFT:
            fn.config.write(reg, value, size)
            _, dev, func, _ = ecam_decode(offset)
            self._remap(dev << 3 | func, fn)

    def _remap(self, devfn: int, fn: PciFunction) -> None:
        """After a configuration write: each BAR of `fn` whose decoded address changed to a mapped one becomes
        the newest mapping (module docstring)."""
        for index in sorted(fn.config.bars):
            key, addr = (devfn, index), fn.config.bar_address(index)
            if self._mapped.get(key) != addr:
                self._mapped[key] = addr
                if addr is not None:
                    self._seq += 1
                    self._order[key] = self._seq

    # -- memory and I/O space -----------------------------------------------------------------------------
    def claim(self, addr: int, io: bool) -> tuple[PciFunction, int, int] | None:
        """(function, BAR index, offset in the BAR) of the BAR that decodes bus address `addr` (of several, the
        one mapped last), or None."""
        best, when = None, -1
        for devfn, fn in self.functions.items():
            for index, bar in fn.config.bars.items():
                if bar.io != io:
                    continue
                base = fn.config.bar_address(index)
                if base is not None and base <= addr < base + bar.size:
                    order = self._order.get((devfn, index), 0)
                    if order > when:
                        best, when = (fn, index, addr - base), order
        return best

    def _read(self, addr: int, size: int, io: bool) -> int:
        hit = self.claim(addr, io)
        if hit is None:
            return (1 << 8 * size) - 1
        fn, index, off = hit
        return fn.bar_read(index, off, size)

    def _write(self, addr: int, value: int, size: int, io: bool) -> None:
        hit = self.claim(addr, io)
        if hit is not None:
            fn, index, off = hit
            fn.bar_write(index, off, value, size)

    def mem_read(self, addr: int, size: int) -> int:
        return self._read(addr, size, False)

    def mem_write(self, addr: int, value: int, size: int) -> None:
        self._write(addr, value, size, False)

    def io_read(self, port: int, size: int) -> int:
        return self._read(port, size, True)

    def io_write(self, port: int, value: int, size: int) -> None:
        self._write(port, value, size, True)
