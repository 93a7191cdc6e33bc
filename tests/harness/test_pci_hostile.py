"""A hostile guest against the PCIe host (harness/pci.py over devmodel/pci): seeded random ECAM traffic that
programs BARs over guest RAM, over other devices' MMIO, at 0, across the window edges and with random 64-bit
halves, mixed with accesses through every window. Nothing raises; RAM and the platform devices read as
before (QEMU virt maps the PCI windows beside them: a BAR decodes only inside a window, hw/arm/virt.c
create_pcie); the other VM's PCI functions are untouched; the BAR registers stay architectural (type bits
read-only, address bits above the size only)."""
from __future__ import annotations

import random

import pytest

from devmodel.pci import Bar, ConfigSpace, PciFunction
from harness.devicetree import VIRT_HIGH_PCIE_MMIO, VIRT_PCIE_ECAM, VIRT_PCIE_MMIO, VIRT_PCIE_PIO
from harness.machine import Machine

ECAM = VIRT_PCIE_ECAM[0]
RAM = 0x4000_0000
PL011, GICD, VIRTIO = 0x0900_0000, 0x0800_0000, 0x0A00_0000
PROBES = [(RAM + 0x1000 * i, 4) for i in range(8)] + [(PL011 + 0xFE0, 4), (PL011 + 0x18, 2), (GICD + 8, 4),
                                                      (GICD + 4, 4), (VIRTIO, 4), (VIRTIO + 8, 4)]
LOW, LOW_SIZE = VIRT_PCIE_MMIO
PIO, PIO_SIZE = VIRT_PCIE_PIO
HIGH = VIRT_HIGH_PCIE_MMIO[0]


class Echo64(PciFunction):
    """A 64-bit prefetchable 1 MiB BAR0 and a 16-byte 32-bit BAR2 that answer a constant."""

    def __init__(self):
        c = ConfigSpace(0x1B36, 0x00FF, 0xFF00)
        c.add_bar(Bar(0, 1 << 20, is64=True, prefetch=True))
        c.add_bar(Bar(2, 16))
        super().__init__(c, "echo64")

    def bar_read(self, index, offset, size):
        return 0x5A5A5A5A5A5A5A5A & ((1 << 8 * size) - 1)


def cfg(dev: int, reg: int) -> int:
    return ECAM + (dev << 15) + reg


def address(rng: random.Random) -> int:
    """A hostile BAR value: RAM, a platform device, 0, all-ones, window edges, anything."""
    return rng.choice((RAM, RAM + 0x1000, PL011, GICD, VIRTIO, 0, 0xFFFF_FFFF, LOW, LOW + LOW_SIZE - 0x1000,
                       LOW + LOW_SIZE, PIO, 0xFF00, 0xFFF0, 0x1_0000, HIGH & 0xFFFF_FFFF, HIGH >> 32,
                       rng.getrandbits(32), rng.getrandbits(32) & ~0xFFF))


def hostile(rng: random.Random, vm, n: int) -> None:
    windows = [(LOW, LOW_SIZE), (PIO, PIO_SIZE), (HIGH, 1 << 32), (ECAM, 3 << 15)]
    for _ in range(n):
        r = rng.random()
        size = rng.choice((1, 2, 4, 8))
        if r < 0.45:
            dev, reg = rng.randrange(4), rng.choice((0x04, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30, 0x3C,
                                                     rng.randrange(0x1000)))
            vm.ipa.write(cfg(dev, reg), rng.choice((address(rng), 0x3, 0x7, rng.getrandbits(16))), 4)
        elif r < 0.55:
            vm.ipa.read(cfg(rng.randrange(32), rng.randrange(0x1000)) & ~(size - 1), size)
        else:
            base, span = rng.choice(windows)
            at = base + rng.choice((0, span - size, rng.randrange(span))) & ~(size - 1)
            if rng.random() < 0.5:
                vm.ipa.write(at, rng.getrandbits(8 * size), size)
            else:
                vm.ipa.read(at, size)
        if rng.random() < 0.1:
            for addr, size in PROBES:
                vm.ipa.read(addr, size)


def snapshot(vm) -> list[int]:
    return [vm.ipa.read(a, s) for a, s in PROBES]


def pci_state(vm) -> list[int]:
    return [vm.ipa.read(cfg(d, r), 4) for d in range(4) for r in range(0, 0x100, 4)]


@pytest.mark.parametrize("seed", range(3))
def test_hostile_bars_shadow_nothing_and_stay_in_their_vm(seed):
    rng = random.Random(seed)
    m = Machine(console=lambda vm, d, s: None)
    vms = [m.add_vm(), m.add_vm()]
    for k, vm in enumerate(vms):
        vm.pcie.add_testdev()
        vm.pcie.plug(Echo64())
        for i, (addr, _) in enumerate(PROBES[:8]):
            vm.ipa.write(addr, 0xC0DE0000 + 16 * k + i, 4)                   # a pattern in each VM's RAM
    a, b = vms
    before, other, other_pci = snapshot(a), snapshot(b), pci_state(b)
    # first the worst case on purpose: BARs decoding over RAM and the PL011, memory and I/O decode on
    for dev, bar, where in ((1, 0x10, RAM), (2, 0x10, PL011), (2, 0x18, RAM + 0x1000), (1, 0x14, 0)):
        a.ipa.write(cfg(dev, bar), where, 4)
        a.ipa.write(cfg(dev, 4), 0x3, 2)
    assert snapshot(a) == before
    hostile(rng, a, 1500)
    assert snapshot(a) == before and snapshot(b) == other and pci_state(b) == other_pci
    assert b.pcie.host.functions[8].current is None and all(t.count == 0 for t in b.pcie.host.functions[8].tests)
    for fn in a.pcie.host.functions.values():
        c = fn.config
        for index, bar in c.bars.items():
            width = 8 if bar.is64 else 4
            v = int.from_bytes(c.data[bar.offset:bar.offset + width], "little")
            assert v & (bar.size - 1) == bar.flags                          # type bits fixed, low bits 0
    m.close()
