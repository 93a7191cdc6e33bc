"""The board's device tree, as QEMU 7.2's `-M virt` writes it, and QEMU's fix-ups of a user's `-dtb` tree.

Pure: builds a `devmodel.fdt.Fdt` from a plain `BoardSpec`; nothing here touches Unicorn or a Machine.

`build_tree(spec)` describes, at QEMU virt's addresses and interrupt numbers (hw/arm/virt.c `base_memmap` and
`a15irqmap`): the RAM (`/memory@...`), the CPUs (`/cpus`, `cpu-map`, `enable-method = "psci"` when there is
more than one), `/psci` (method "hvc" for a guest started at EL1, "smc" at EL2, as virt picks the conduit),
the GIC (v2: distributor + CPU interface, + GICH/GICV and the maintenance PPI with the virtualization
extensions; v3: distributor + one redistributor region, + ITS), the PL011 with its 24 MHz `apb-pclk` fixed
clock, the generic timer (PPIs 13, 14, 11, 10: secure and non-secure physical, virtual, hypervisor
physical), the PMU (`arm,armv8-pmuv3`, PPI 7), the 32 virtio-mmio transports, the SMMUv3 (`arm,smmu-v3`,
SPIs 74..77 named eventq, priq, cmdq-sync, gerror, edge-triggered), the PCIe host bridge, `/chosen`
(bootargs, stdout-path). Node order, property order, names and phandle numbers are QEMU's (QEMU prepends every
new node and property, libfdt-style, so its trees read "backwards"; the comparison test in
tests/harness/test_devicetree.py checks this against QEMU's own dump).

Our additions, absent from QEMU: DMA test devices (`compatible = "smmu-harness,dmatest"`, `iommus =
<&smmu SID>` or `<&viommu ENDPOINT>`, and on a GICv3 board with its ITS `msi-parent = <&its SID>`: the
StreamID is the device's DeviceID), `msi-parent = <&its DEVID>` on an SMMU that signals MSIs with a DeviceID
(the VMM's vSMMU: harness/its.py SMMU_MSI_DEVID) and the virtio-iommu marking of one transport (`#iommu-cells = <1>`,
Linux Documentation/devicetree/bindings/virtio/mmio.yaml). The PCIe host bridge (`/pcie@10000000`,
`pci-host-ecam-generic`) is QEMU's less two properties (`_pcie_node`). QEMU virt nodes not modelled (flash,
fw-cfg, pl031, pl061 + gpio-keys, platform-bus, GICv2m) and the random `rng-seed`/`kaslr-seed` of
/chosen are deliberately absent: docs/devicetree-and-loading.md lists them.

`board_dtb(spec)` is the blob padded to QEMU's 1 MiB (`FDT_MAX_SIZE` in QEMU's device_tree.c: the size QEMU
places and that a guest sees in the header's totalsize). `load_user_dtb(path, ...)` is `-dtb FILE`: QEMU's
`arm_load_dtb` (hw/arm/boot.c) fix-ups, each new node/property inserted first as libfdt does: root-level
`/memory` and `/memory@*` nodes replaced by one `memory@BASE` per RAM range, `/chosen` created if missing,
`bootargs` set when non-empty, `/psci` replaced by QEMU's own (seen with 7.2: a user's node is dropped, a
fresh one goes first); padded to (file size + 10000) * 2 as QEMU's
`load_device_tree` does.
"""
from __future__ import annotations

import os
from typing import Callable

from devmodel.fdt import EMPTY, Fdt, FdtError, Node, cells, string, strings, u32
from devmodel.record import Frozen, assign

from .userfile import user_file

__all__ = ["BoardSpec", "SmmuSpec", "DmaDeviceSpec", "BoardSpecError", "build_tree", "board_dtb", "DeferredBoardDtb",
           "adjust_user_dtb", "load_user_dtb", "virt_mpidr", "psci_method", "CPU_COMPATIBLE",
           "QEMU_FDT_SIZE", "MAX_USER_DTB", "VIRT_MEM", "VIRT_GIC_DIST", "VIRT_GIC_CPU", "VIRT_GIC_HYP",
           "VIRT_GIC_VCPU", "VIRT_GIC_ITS", "VIRT_GIC_REDIST", "VIRT_UART", "VIRT_SMMU", "VIRT_MMIO",
           "VIRT_MMIO_SIZE", "NUM_VIRTIO_TRANSPORTS", "UART_SPI", "MMIO_SPI", "SMMU_SPI", "TIMER_PPIS",
           "GIC_MAINT_PPI", "GICV2_MAX_CPUS", "GICV3_MAX_CPUS", "DMATEST_COMPATIBLE", "STDOUT_PATH",
           "VIRT_PCIE_ECAM", "VIRT_PCIE_PIO", "VIRT_PCIE_MMIO", "VIRT_HIGH_PCIE_MMIO", "PCIE_SPI"]

# QEMU hw/arm/virt.c base_memmap (address, size)
VIRT_GIC_DIST = (0x0800_0000, 0x1_0000)
VIRT_GIC_CPU = (0x0801_0000, 0x1_0000)
VIRT_GIC_HYP = (0x0803_0000, 0x1_0000)
VIRT_GIC_VCPU = (0x0804_0000, 0x1_0000)
VIRT_GIC_ITS = (0x0808_0000, 0x2_0000)
VIRT_GIC_REDIST = (0x080A_0000, 0xF6_0000)      # one 0x2_0000 RD_base + SGI_base frame pair per CPU
VIRT_UART = (0x0900_0000, 0x1000)
VIRT_SMMU = (0x0905_0000, 0x2_0000)
VIRT_MMIO = 0x0A00_0000                          # first virtio-mmio transport
VIRT_MMIO_SIZE = 0x200
NUM_VIRTIO_TRANSPORTS = 32
VIRT_MEM = 0x4000_0000
VIRT_PCIE_MMIO = (0x1000_0000, 0x2EFF_0000)      # 32-bit PCI memory window (bus address = CPU address)
VIRT_PCIE_PIO = (0x3EFF_0000, 0x1_0000)          # PCI I/O space, ports 0..0xffff
VIRT_PCIE_ECAM = (0x40_1000_0000, 0x1000_0000)   # VIRT_HIGH_PCIE_ECAM: highmem ECAM, 256 buses
VIRT_HIGH_PCIE_MMIO = (0x80_0000_0000, 0x80_0000_0000)
# QEMU hw/arm/virt.c a15irqmap (SPI numbers: INTID - 32) and include/hw/arm/virt.h (PPI numbers: INTID - 16)
UART_SPI = 1
MMIO_SPI = 16                                    # transport i uses SPI 16 + i
SMMU_SPI = 74                                    # eventq, priq, cmdq-sync, gerror = 74..77
PCIE_SPI = 3                                     # INTA..INTD = SPIs 3..6 (GPEX_NUM_IRQS = 4)
TIMER_PPIS = (13, 14, 11, 10)                    # ARCH_TIMER_S_EL1, NS_EL1, VIRT, NS_EL2
GIC_MAINT_PPI = 9                                # ARCH_GIC_MAINT_IRQ
PMU_PPI = 7                                      # VIRTUAL_PMU_IRQ (INTID 23; harness/pmu.py)
GICV2_MAX_CPUS = 8                               # GICv2 CPU interfaces (IHI 0048 GICD_ITARGETSR: 8 bits)
GICV3_MAX_CPUS = VIRT_GIC_REDIST[1] // 0x2_0000  # 123 redistributors fit the single region we describe
DMATEST_COMPATIBLE = "smmu-harness,dmatest"
STDOUT_PATH = f"/pl011@{VIRT_UART[0]:x}"
QEMU_FDT_SIZE = 0x10_0000                        # QEMU softmmu/device_tree.c FDT_MAX_SIZE
MAX_USER_DTB = 16 << 20                          # larger --dtb files are refused (QEMU: INT_MAX / 2)
APB_PCLK_HZ = 24_000_000

# Linux include/dt-bindings/interrupt-controller/arm-gic.h
GIC_SPI, GIC_PPI = 0, 1
IRQ_EDGE_RISING, IRQ_LEVEL_HIGH = 1, 4

#: CPU node `compatible` for Unicorn's models, as QEMU 7.2 reports them (`-cpu max` says cortex-a57)
CPU_COMPATIBLE = {"a53": "arm,cortex-a53", "a57": "arm,cortex-a57", "a72": "arm,cortex-a72",
                  "max": "arm,cortex-a57"}

# PSCI 0.2+ SMC64 function IDs (Arm DEN 0022) that QEMU's /psci node lists
PSCI_CPU_SUSPEND, PSCI_CPU_OFF, PSCI_CPU_ON, PSCI_MIGRATE = 0xC400_0001, 0x8400_0002, 0xC400_0003, 0xC400_0005
PSCI_COMPATIBLE = ("arm,psci-1.0", "arm,psci-0.2", "arm,psci")

#: phandles: QEMU allocates from 0x8000 in creation order: the clock, the CPUs (last first), the GIC, its
#: MSI controller (ITS, or the GICv2m we do not model), the SMMU; the virtio-iommu transport is ours.
PHANDLE_BASE = 0x8000
AFFINITY_MASK = 0xFF_00FF_FFFF                   # MPIDR Aff3 [39:32], Aff2..Aff0 [23:0]


class BoardSpecError(ValueError):
    """A board the tree cannot describe (e.g. 9 CPUs on a GICv2); one line."""


class SmmuSpec(Frozen):
    """An SMMUv3 the guest sees: MMIO base and the first of its four consecutive wired SPIs."""
    __slots__ = ("base", "spi", "msi_devid")
    base: int
    spi: int
    msi_devid: int | None             # the DeviceID of its MSIs at the ITS (None: wired interrupts only)

    def __init__(self, base: int = VIRT_SMMU[0], spi: int = SMMU_SPI, msi_devid: int | None = None) -> None:
        assign(self, "base", base)
        assign(self, "spi", spi)
        assign(self, "msi_devid", msi_devid)


class DmaDeviceSpec(Frozen):
    """A DMA test device: its MMIO window and what translates its DMA: "smmu" (iommus = <&smmu sid>),
    "viommu" (iommus = <&viommu sid>, sid being the virtio-iommu endpoint ID) or None (no iommus)."""
    __slots__ = ("base", "size", "iommu", "sid")
    base: int
    size: int
    iommu: str | None
    sid: int

    def __init__(self, base: int = 0x0910_0000, size: int = 0x1000, iommu: str | None = "smmu",
                 sid: int = 0) -> None:
        assign(self, "base", base)
        assign(self, "size", size)
        assign(self, "iommu", iommu)
        assign(self, "sid", sid)


class BoardSpec(Frozen):
    """What the guest's tree describes. `ram`: (base, size) ranges, the first being the boot RAM; `mpidrs`:
    one MPIDR per CPU (None: QEMU virt's numbering, `virt_mpidr`); `start_el` 1 or 2 picks the PSCI conduit;
    `gic_virt`: describe the GIC virtualization extensions (None: as QEMU, when the guest starts at EL2);
    `virtio_iommu`: index of the virtio-mmio transport that holds a virtio-iommu, or None."""
    __slots__ = ("ram", "cpus", "mpidrs", "cpu_compatible", "start_el", "gic_version", "its", "gic_virt", "smmu",
                 "dma_devices", "virtio_iommu", "bootargs", "initrd", "pcie")
    ram: tuple[tuple[int, int], ...]
    cpus: int
    mpidrs: tuple[int, ...] | None
    cpu_compatible: str
    start_el: int
    gic_version: int
    its: bool
    gic_virt: bool | None
    smmu: SmmuSpec | None
    dma_devices: tuple[DmaDeviceSpec, ...]
    virtio_iommu: int | None
    bootargs: str
    initrd: tuple[int, int] | None               # [start, end): /chosen linux,initrd-start / -end
    pcie: bool                                   # the generic ECAM host bridge (QEMU virt always has it)

    def __init__(self, ram: tuple[tuple[int, int], ...] = ((VIRT_MEM, 128 << 20),), cpus: int = 1,
                 mpidrs: tuple[int, ...] | None = None, cpu_compatible: str = CPU_COMPATIBLE["max"], start_el: int = 1,
                 gic_version: int = 2, its: bool = True, gic_virt: bool | None = None, smmu: SmmuSpec | None = None,
                 dma_devices: tuple[DmaDeviceSpec, ...] = (), virtio_iommu: int | None = None, bootargs: str = "",
                 initrd: tuple[int, int] | None = None, pcie: bool = True) -> None:
        assign(self, "ram", ram)
        assign(self, "cpus", cpus)
        assign(self, "mpidrs", mpidrs)
        assign(self, "cpu_compatible", cpu_compatible)
        assign(self, "start_el", start_el)
        assign(self, "gic_version", gic_version)
        assign(self, "its", its)
        assign(self, "gic_virt", gic_virt)
        assign(self, "smmu", smmu)
        assign(self, "dma_devices", dma_devices)
        assign(self, "virtio_iommu", virtio_iommu)
        assign(self, "bootargs", bootargs)
        assign(self, "initrd", initrd)
        assign(self, "pcie", pcie)

    def cpu_mpidrs(self) -> tuple[int, ...]:
        if self.mpidrs is None:
            return tuple(virt_mpidr(i, self.gic_version) for i in range(self.cpus))
        return self.mpidrs

    def validate(self) -> None:
        if self.gic_version not in (2, 3):
            raise BoardSpecError(f"GIC version {self.gic_version}: 2 or 3")
        if self.start_el not in (1, 2):
            raise BoardSpecError(f"start EL {self.start_el}: the guest starts at EL1 or EL2")
        limit = GICV2_MAX_CPUS if self.gic_version == 2 else GICV3_MAX_CPUS
        if not 1 <= self.cpus <= limit:
            raise BoardSpecError(f"{self.cpus} CPUs: a GICv{self.gic_version} board has 1 to {limit}")
        if self.mpidrs is not None and (len(self.mpidrs) != self.cpus
                                        or len({m & AFFINITY_MASK for m in self.mpidrs}) != self.cpus):
            raise BoardSpecError(f"mpidrs must give {self.cpus} distinct affinities")
        if not self.ram:
            raise BoardSpecError("the board needs RAM")
        if self.virtio_iommu is not None and not 0 <= self.virtio_iommu < NUM_VIRTIO_TRANSPORTS:
            raise BoardSpecError(f"virtio-iommu transport {self.virtio_iommu}: 0..{NUM_VIRTIO_TRANSPORTS - 1}")
        for d in self.dma_devices:
            if d.iommu == "smmu" and self.smmu is None:
                raise BoardSpecError(f"DMA device at {d.base:#x} is behind an SMMU the board does not have")
            if d.iommu == "viommu" and self.virtio_iommu is None:
                raise BoardSpecError(f"DMA device at {d.base:#x} is behind a virtio-iommu the board does not have")
            if d.iommu not in ("smmu", "viommu", None):
                raise BoardSpecError(f"DMA device at {d.base:#x}: iommu {d.iommu!r} is not smmu, viommu or None")


def virt_mpidr(index: int, gic_version: int = 3) -> int:
    """MPIDR affinity QEMU virt gives CPU `index` (virt_cpu_mp_affinity): clusters of 8 CPUs with a GICv2
    (its target lists are 8 bits), 16 with a GICv3; Aff0 = index % cluster, Aff1 = index // cluster."""
    cluster = 8 if gic_version == 2 else 16
    return ((index // cluster) << 8) | (index % cluster)


def psci_method(start_el: int) -> str:
    """QEMU virt's PSCI conduit: HVC for a guest started at EL1, SMC when it owns EL2 (virtualization=on)."""
    return "smc" if start_el == 2 else "hvc"


def _irq(kind: int, num: int, flags: int) -> tuple[int, int, int]:
    return (kind, num, flags)


def _reg(*ranges: tuple[int, int]) -> bytes:
    return b"".join(cells((a, 2), (s, 2)) for a, s in ranges)


def _psci_node(method: str) -> Node:
    # QEMU sets compatible, method, cpu_suspend, cpu_off, cpu_on, migrate, each prepended
    return Node("psci", {"migrate": u32(PSCI_MIGRATE), "cpu_on": u32(PSCI_CPU_ON), "cpu_off": u32(PSCI_CPU_OFF),
                         "cpu_suspend": u32(PSCI_CPU_SUSPEND), "method": string(method),
                         "compatible": strings(*PSCI_COMPATIBLE)})


def _memory_node(base: int, size: int, acells: int = 2, scells: int = 2) -> Node:
    return Node(f"memory@{base:x}", {"reg": cells((base, acells), (size, scells)),
                                     "device_type": string("memory")})


class _Phandles:
    def __init__(self, ncpus: int):
        self.clock = PHANDLE_BASE
        self.cpu = [PHANDLE_BASE + ncpus - i for i in range(ncpus)]   # created last CPU first
        self.gic = PHANDLE_BASE + ncpus + 1
        self.msi = self.gic + 1
        self.smmu = self.gic + 2
        self.viommu = self.gic + 3


def build_tree(spec: BoardSpec) -> Fdt:
    """The board's tree (see the module docstring). Raises BoardSpecError for a board it cannot describe."""
    spec.validate()
    ph = _Phandles(spec.cpus)
    root = Node("", {"interrupt-parent": u32(ph.gic), "model": string("linux,dummy-virt"),
                     "#size-cells": u32(2), "#address-cells": u32(2), "compatible": string("linux,dummy-virt")})
    root.add(_psci_node(psci_method(spec.start_el)))
    for base, size in reversed(spec.ram):          # arm_load_dtb prepends one node per range
        root.add(_memory_node(base, size))
    for i in range(NUM_VIRTIO_TRANSPORTS):
        root.add(_virtio_node(i, ph if spec.virtio_iommu == i else None))
    its = spec.gic_version == 3 and spec.its
    if spec.smmu is not None:
        root.add(_smmu_node(spec.smmu, ph.smmu, ph.msi if its else None))
    for d in spec.dma_devices:
        root.add(_dma_node(d, ph, its))
    if spec.pcie:
        root.add(_pcie_node(ph, its))
    root.add(Node(f"pl011@{VIRT_UART[0]:x}", {
        "clock-names": strings("uartclk", "apb_pclk"), "clocks": u32(ph.clock, ph.clock),
        "interrupts": u32(*_irq(GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH)), "reg": _reg(VIRT_UART),
        "compatible": strings("arm,pl011", "arm,primecell")}))
    root.add(Node("pmu", {"interrupts": u32(*_irq(GIC_PPI, PMU_PPI, _ppi_flags(spec))),   # fdt_add_pmu_nodes
                          "compatible": string("arm,armv8-pmuv3")}))
    root.add(_gic_node(spec, ph))
    root.add(_cpus_node(spec, ph))
    root.add(Node("timer", {"interrupts": u32(*(c for p in TIMER_PPIS for c in _irq(GIC_PPI, p, _ppi_flags(spec)))),
                            "always-on": EMPTY, "compatible": strings("arm,armv8-timer", "arm,armv7-timer")}))
    root.add(Node("apb-pclk", {"phandle": u32(ph.clock), "clock-output-names": string("clk24mhz"),
                               "clock-frequency": u32(APB_PCLK_HZ), "#clock-cells": u32(0),
                               "compatible": string("fixed-clock")}))
    chosen = root.add(Node("chosen", {"stdout-path": string(STDOUT_PATH)}))
    if spec.bootargs:
        chosen.set("bootargs", string(spec.bootargs), first=True)
    _set_initrd(chosen, spec.initrd)
    return Fdt(root)


def _set_initrd(chosen: Node, initrd: tuple[int, int] | None) -> None:
    """QEMU 7.2 arm_load_dtb: linux,initrd-start then -end, each prepended, one 32-bit cell each (as its
    dumpdtb shows); an address above 4 GiB takes two cells."""
    if initrd is None:
        return
    for name, addr in (("linux,initrd-start", initrd[0]), ("linux,initrd-end", initrd[1])):
        chosen.set(name, u32(addr) if addr < 1 << 32 else u32(addr >> 32, addr & 0xFFFF_FFFF), first=True)


def board_dtb(spec: BoardSpec) -> bytes:
    """The board's DTB as QEMU hands it to a guest: padded to QEMU_FDT_SIZE (1 MiB)."""
    return build_tree(spec).to_bytes(min_size=QEMU_FDT_SIZE)


class DeferredBoardDtb:
    """`board_dtb(spec)` for a boot plan (harness/image.py takes len() and bytes() of its `dtb`), built when
    the plan needs the bytes: `len()` is the blob's size (the tree flattened without its padding, or
    QEMU_FDT_SIZE), `bytes()` calls `build(spec)` (default board_dtb). An ELF with less room below it than
    that size gets no tree, so its load pads no 1 MiB blob."""
    __slots__ = ("spec", "build", "_size")

    def __init__(self, spec: BoardSpec, build: Callable[[BoardSpec], bytes] | None = None) -> None:
        self.spec, self.build, self._size = spec, build or board_dtb, None

    def __len__(self) -> int:
        if self._size is None:
            self._size = max(len(build_tree(self.spec).to_bytes()), QEMU_FDT_SIZE)
        return self._size

    def __bytes__(self) -> bytes:
        return self.build(self.spec)


def _ppi_flags(spec: BoardSpec) -> int:
    """GICv2 PPI specifiers carry a CPU mask in bits [15:8] (Linux arm,gic binding); GICv3 ones do not."""
    if spec.gic_version == 2:
        return (((1 << spec.cpus) - 1) << 8) | IRQ_LEVEL_HIGH
    return IRQ_LEVEL_HIGH


def _virtio_node(i: int, ph: _Phandles | None) -> Node:
    base = VIRT_MMIO + i * VIRT_MMIO_SIZE
    n = Node(f"virtio_mmio@{base:x}", {"dma-coherent": EMPTY,
                                        "interrupts": u32(*_irq(GIC_SPI, MMIO_SPI + i, IRQ_EDGE_RISING)),
                                        "reg": _reg((base, VIRT_MMIO_SIZE)), "compatible": string("virtio,mmio")})
    if ph is not None:                               # the transport of the virtio-iommu
        n.set("#iommu-cells", u32(1), first=True)
        n.set("phandle", u32(ph.viommu), first=True)
    return n


def _smmu_node(s: SmmuSpec, phandle: int, its: int | None) -> Node:
    irqs = (c for k in range(4) for c in _irq(GIC_SPI, s.spi + k, IRQ_EDGE_RISING))
    n = Node(f"smmuv3@{s.base:x}", {"phandle": u32(phandle), "#iommu-cells": u32(1), "dma-coherent": EMPTY,
                                    "interrupt-names": strings("eventq", "priq", "cmdq-sync", "gerror"),
                                    "interrupts": u32(*irqs), "reg": _reg((s.base, VIRT_SMMU[1])),
                                    "compatible": string("arm,smmu-v3")})
    if its is not None and s.msi_devid is not None:   # Linux arm,smmu-v3 binding: msi-parent (platform MSIs)
        n.set("msi-parent", u32(its, s.msi_devid), first=True)
    return n


def _dma_node(d: DmaDeviceSpec, ph: _Phandles, its: bool) -> Node:
    n = Node(f"dmatest@{d.base:x}", {"reg": _reg((d.base, d.size)), "compatible": string(DMATEST_COMPATIBLE)})
    if its:
        n.set("msi-parent", u32(ph.msi, d.sid), first=True)
    if d.iommu is not None:
        n.set("iommus", u32(ph.smmu if d.iommu == "smmu" else ph.viommu, d.sid), first=True)
    return n


def _pcie_irq_map(gic: int) -> bytes:
    """QEMU virt `create_pcie_irq_map`: INTA..D (pin 1..4) of slot s go to SPI PCIE_SPI + (pin - 1 + s) % 4;
    each entry: child unit address (3 cells) + pin, the GIC, its unit address (2 cells), its specifier."""
    return b"".join(u32(slot << 11, 0, 0, pin + 1, gic, 0, 0, GIC_SPI, PCIE_SPI + (pin + slot) % 4, IRQ_LEVEL_HIGH)
                    for slot in range(4) for pin in range(4))


def _pcie_node(ph: _Phandles, its: bool) -> Node:
    """QEMU virt `create_pcie` (Linux pci-host-ecam-generic binding). Not described: `iommu-map` to the SMMU
    (ours translates the platform DMA test devices; docs/DESIGN.md "PCIe host") and, on a GICv2 board, the
    `msi-map` to the GICv2m we do not model."""
    pio, mmio, high = VIRT_PCIE_PIO, VIRT_PCIE_MMIO, VIRT_HIGH_PCIE_MMIO
    ranges = (u32(0x0100_0000, 0, 0) + cells((pio[0], 2), (pio[1], 2))              # I/O from port 0
              + u32(0x0200_0000) + cells((mmio[0], 2), (mmio[0], 2), (mmio[1], 2))   # 32-bit memory
              + u32(0x0300_0000) + cells((high[0], 2), (high[0], 2), (high[1], 2)))  # 64-bit memory
    n = Node(f"pcie@{VIRT_PCIE_MMIO[0]:x}", {
        "interrupt-map-mask": u32(0x1800, 0, 0, 7), "interrupt-map": _pcie_irq_map(ph.gic), "#interrupt-cells": u32(1),
        "ranges": ranges, "reg": _reg(VIRT_PCIE_ECAM)})
    if its:
        n.set("msi-map", u32(0, ph.msi, 0, 0x1_0000))
    for k, v in (("dma-coherent", EMPTY), ("bus-range", u32(0, VIRT_PCIE_ECAM[1] // (1 << 20) - 1)),
                 ("linux,pci-domain", u32(0)), ("#size-cells", u32(2)), ("#address-cells", u32(3)),
                 ("device_type", string("pci")), ("compatible", string("pci-host-ecam-generic"))):
        n.set(k, v)
    return n


def _gic_node(spec: BoardSpec, ph: _Phandles) -> Node:
    virt = spec.start_el == 2 if spec.gic_virt is None else spec.gic_virt
    n = Node(f"intc@{VIRT_GIC_DIST[0]:x}", {"phandle": u32(ph.gic)})
    if virt:
        n.set("interrupts", u32(*_irq(GIC_PPI, GIC_MAINT_PPI, IRQ_LEVEL_HIGH)))
    if spec.gic_version == 2:
        frames = (VIRT_GIC_DIST, VIRT_GIC_CPU) + ((VIRT_GIC_HYP, VIRT_GIC_VCPU) if virt else ())
        n.set("reg", _reg(*frames))
        n.set("compatible", string("arm,cortex-a15-gic"))
    else:
        n.set("reg", _reg(VIRT_GIC_DIST, VIRT_GIC_REDIST))
        n.set("#redistributor-regions", u32(1))
        n.set("compatible", string("arm,gic-v3"))
    for k, v in (("ranges", EMPTY), ("#size-cells", u32(2)), ("#address-cells", u32(2)),
                 ("interrupt-controller", EMPTY), ("#interrupt-cells", u32(3))):
        n.set(k, v)
    if spec.gic_version == 3 and spec.its:
        n.add(Node(f"its@{VIRT_GIC_ITS[0]:x}", {"phandle": u32(ph.msi), "reg": _reg(VIRT_GIC_ITS),
                                                "#msi-cells": u32(1), "msi-controller": EMPTY,
                                                "compatible": string("arm,gic-v3-its")}))
    return n


def _cpus_node(spec: BoardSpec, ph: _Phandles) -> Node:
    affs = [m & AFFINITY_MASK for m in spec.cpu_mpidrs()]
    acells = 2 if any(a >> 32 for a in affs) else 1
    cpus = Node("cpus", {"#size-cells": u32(0), "#address-cells": u32(acells)})
    cluster = cpus.add(Node("cpu-map")).add(Node("socket0")).add(Node("cluster0"))
    for i in range(spec.cpus):
        cluster.add(Node(f"core{i}", {"cpu": u32(ph.cpu[i])}))
    for i, aff in enumerate(affs):
        n = cpus.add(Node(f"cpu@{i}", {"phandle": u32(ph.cpu[i]), "reg": cells((aff, acells))}))
        if spec.cpus > 1:
            n.set("enable-method", string("psci"))
        n.set("compatible", string(spec.cpu_compatible))
        n.set("device_type", string("cpu"))
    return cpus


# -- a user's tree (-dtb FILE) ----------------------------------------------------------------------------
def _root_cell(root: Node, name: str) -> int:
    v = root.get(name)
    if v is None or len(v) != 4:
        raise FdtError(f"the root node has no 32-bit {name}")
    return int.from_bytes(v, "big")


def adjust_user_dtb(fdt: Fdt, *, ram: tuple[tuple[int, int], ...] | list[tuple[int, int]], bootargs: str = "",
                    psci: str | None = "hvc", initrd: tuple[int, int] | None = None) -> None:
    """QEMU 7.2 arm_load_dtb's changes to a user tree, in place (see the module docstring). `psci` is the
    conduit ("hvc"/"smc") of the /psci node that replaces the tree's own (None: leave /psci alone)."""
    root = fdt.root
    acells, scells = _root_cell(root, "#address-cells"), _root_cell(root, "#size-cells")
    if acells == 0 or scells == 0:
        raise FdtError("dtb file invalid (#address-cells or #size-cells 0)")
    if scells < 2 and any(size >= 1 << 32 for _, size in ram):
        raise FdtError("dtb file not compatible with RAM size > 4GB")
    if acells > 2 or scells > 2:                     # qemu_fdt_setprop_sized_cells takes 1 or 2 cells
        raise FdtError(f"couldn't add /memory: #address-cells {acells} / #size-cells {scells} not 1 or 2")
    _drop_memory_nodes(root)
    for base, size in ram:
        try:
            root.add(_memory_node(base, size, acells, scells), first=True)
        except FdtError:
            raise FdtError(f"couldn't add /memory@{base:x}: RAM [{base:#x}, +{size:#x}) does not fit "
                           f"#address-cells {acells} / #size-cells {scells}") from None
    chosen = root.child("chosen") or root.add(Node("chosen"), first=True)
    if bootargs:
        chosen.set("bootargs", string(bootargs), first=True)
    _set_initrd(chosen, initrd)
    if psci is not None:                             # QEMU 7.2 replaces a user's /psci with its own
        root.remove_child("psci")
        root.add(_psci_node(psci), first=True)


def _drop_memory_nodes(root: Node) -> None:
    """Remove the nodes QEMU NOPs: every node named memory or memory@* whose path starts with /memory."""
    for path, node in list(root.walk()):
        if path.startswith("/memory") and (node.name == "memory" or node.name.startswith("memory@")):
            parent = root.find(path.rsplit("/", 1)[0] or "/")
            if parent is not None:
                parent.children = [c for c in parent.children if c is not node]


def load_user_dtb(path: str | os.PathLike, *, ram, bootargs: str = "", psci: str | None = "hvc",
                  initrd: tuple[int, int] | None = None) -> bytes:
    """`-dtb FILE`: read, parse, apply QEMU's fix-ups, flatten padded as QEMU's load_device_tree pads.
    Every failure is an FdtError whose one-line message names the file."""
    spath = str(path)
    with user_file(path, FdtError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_USER_DTB:
            raise FdtError(f"{spath}: {size} bytes is larger than the {MAX_USER_DTB >> 20} MiB accepted")
        raw = f.read()
    try:
        fdt = Fdt.from_bytes(raw)
        adjust_user_dtb(fdt, ram=ram, bootargs=bootargs, psci=psci, initrd=initrd)
        return fdt.to_bytes(min_size=(len(raw) + 10000) * 2)
    except FdtError as e:
        raise FdtError(f"{spath}: {e}") from None
