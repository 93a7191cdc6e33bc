"""virtio-mmio on the board: QEMU virt's 32 transports in every VM, the devices plugged into them, their
interrupt lines, and the chr-testdev exit that ends a kvm-unit-tests run.

* Layout (QEMU hw/arm/virt.c `create_virtio_devices`, `a15irqmap`): transport i at 0x0a00_0000 + 0x200 * i,
  i = 0..31, on SPI 16 + i (INTID 48 + i). The n-th device plugged (`plug`) sits on transport 31 - n, as
  QEMU gives its n-th `-device virtio-*` the highest free transport; the others are empty (DeviceID 0).
  Transports are legacy (virtio-mmio Version 1) unless the VM is built with `virtio_modern=True` (QEMU:
  `-global virtio-mmio.force-legacy=false`). Empty transports are created on first access, so a VM that
  never touches virtio pays nothing for them.
* MMIO: one 16 KiB window (`VirtioTransports` is the MMIO device: Unicorn maps whole 4 KiB pages) that routes
  each access to its transport. Unicorn's memory core hands devices aligned pieces, as QEMU's TCG does:
  an unaligned load becomes the aligned 32-bit loads around it, an unaligned store single-byte stores, a
  64-bit access two 32-bit ones (unicorn 2.1.4, tests/harness/test_virtio_board.py); the transports judge
  those pieces (docs/virtio.md: RAZ/WI for control registers, byte access for the configuration space).
  An access that would still cross a transport boundary is split at the boundary here.
* DMA: the devices read and write guest memory through `memory`, guest RAM only by default (`GuestRam`: a ring
  or buffer aimed at MMIO is the device's "out of RAM" error, never an access to a device); anything with
  `read_bytes`/`write_bytes` raising `devmodel.bus.BusError` can be put in front (an IOMMU's view).
* VM exits: `accesses[i]` counts the guest's accesses to transport i (each one traps to the VMM),
  `notifies[i]` its QueueNotify writes.
* Interrupts: each transport drives one level (InterruptStatus != 0). `levels[i]` is the current level of
  transport i, `raised[i]` counts its rising edges, `irq_handler(spi, level)` (None until an interrupt
  controller is connected) is called on every change, and trace event `virtio_board_irq` records it.
* chr-testdev (`add_chr_testdev`): QEMU's `-device virtio-serial-device -device virtconsole,chardev=ctd
  -chardev testdev,id=ctd` as kvm-unit-tests' arm/run adds it: a virtio console whose port 0 feeds a
  `ChrTestdev`. When the guest sends `<code>q` the VM ends with an EXIT outcome whose status is what arm/run
  reports (`harness.exits.kut_status`: 0 for code 0, else QEMU's (code << 1) | 1). The exit arrives inside
  the guest's QueueNotify store: `Machine.stop` then calls `emu_stop`, which in an MMIO write leaves the PC
  on the store (unicorn 2.1.4 re-executes it on the next `emu_start`); the VM's vCPUs are powered off by the
  stop and never resume, so the store is not executed twice. The callback never raises (Unicorn's MMIO
  callbacks must not). A VM built with `chr_testdev=True` defers the device (`defer_chr_testdev`) until the
  guest first touches the window or something asks for `testdev`/`devices`, so a run whose guest never uses
  virtio never imports the virtio package (start-up); `chr_testdev` says whether the board has it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from devmodel.bus import BusError
from devmodel.trace import define

from .devicetree import MMIO_SPI, NUM_VIRTIO_TRANSPORTS, VIRT_MMIO, VIRT_MMIO_SIZE
from .exits import Kind, Outcome, kut_status

if TYPE_CHECKING:
    from devmodel.virtio import ChrTestdev, VirtioDevice, VirtioMmio

    from .machine import VM

__all__ = ["VirtioTransports", "WINDOW_BASE", "WINDOW_SIZE", "NUM_TRANSPORTS", "transport_spi"]

# QEMU virt's layout (hw/arm/virt.c base_memmap VIRT_MMIO, a15irqmap), as the board's device tree declares it;
# the same numbers as devmodel/virtio/mmio.py's VIRT_* (a test checks), taken from the board rather than from
# the virtio package so that a VM does not import that package until a guest touches a transport.
WINDOW_BASE = VIRT_MMIO
TRANSPORT_SIZE = VIRT_MMIO_SIZE
NUM_TRANSPORTS = NUM_VIRTIO_TRANSPORTS
FIRST_SPI = MMIO_SPI
WINDOW_SIZE = TRANSPORT_SIZE * NUM_TRANSPORTS          # 0x4000: four pages
QUEUE_NOTIFY = 0x050                                   # virtio v1.2 4.2.2 (both register interfaces)

define("virtio_board_irq", ("vm", "transport", "spi", "level"),
       "a virtio-mmio transport's interrupt line changed (SPI 16 + transport, level = InterruptStatus != 0)")


def transport_spi(index: int) -> int:
    """SPI number of transport `index` on QEMU virt (INTID = 32 + SPI)."""
    return FIRST_SPI + index


class GuestRam:
    """A virtio device's DMA view of the VM (every device on the board's transports, the virtio-iommu too):
    guest RAM only. The VM's IPA bus would hand a 1/2/4/8-byte
    access to an MMIO region to that device (`Bus.write_bytes`), so a guest could aim a reply at the
    transport's own QueueNotify (re-entering the device) or at its assigned device's registers; here such an
    address is a bus error (the ring's "out of RAM": the device's error state), as QEMU's re-entrancy guard
    (`MemReentrancyGuard`, QEMU 8.1) refuses a device's DMA into MMIO it would re-enter."""

    def __init__(self, vm: Any):
        self.vm = vm
        self.ipa = vm.ipa

    def read_bytes(self, addr: int, size: int) -> bytes:
        if not self.vm.in_ram(addr, size):
            raise BusError(addr, size, "not guest RAM")
        return self.ipa.read_bytes(addr, size)

    def write_bytes(self, addr: int, data: bytes) -> None:
        if not self.vm.in_ram(addr, len(data)):
            raise BusError(addr, len(data), "not guest RAM")
        self.ipa.write_bytes(addr, data)

    def read(self, addr: int, size: int = 8) -> int:
        return int.from_bytes(self.read_bytes(addr, size), "little")

    def write(self, addr: int, value: int, size: int = 8) -> None:
        self.write_bytes(addr, value.to_bytes(size, "little"))


class VirtioTransports:
    """The 32 virtio-mmio transports of `vm` (see the module docstring); an MMIO device over WINDOW_SIZE."""

    def __init__(self, vm: "VM", *, modern: bool = False, memory: Any = None):
        self.vm = vm
        self.modern = modern
        self.memory = memory if memory is not None else GuestRam(vm)
        self._slots: list[VirtioMmio | None] = [None] * NUM_TRANSPORTS
        self._devices: list["VirtioDevice"] = []
        self._deferred: list[Any] = []             # chr-testdevs not built yet: the `memory` each was added with
        self.chr_testdev = False                   # arm/run's chr-testdev is on the board (built or deferred)
        self.levels = [0] * NUM_TRANSPORTS
        self.raised = [0] * NUM_TRANSPORTS
        self.accesses = [0] * NUM_TRANSPORTS       # guest accesses per transport: each one a trap to the VMM
        self.notifies = [0] * NUM_TRANSPORTS       # QueueNotify writes (virtio v1.2 4.2.2) among them
        self.irq_handler: Callable[[int, int], None] | None = None
        self._testdev: "ChrTestdev | None" = None

    @property
    def devices(self) -> list["VirtioDevice"]:
        """The plugged devices, in plug order."""
        self._build_deferred()
        return self._devices

    @property
    def testdev(self) -> "ChrTestdev | None":
        """The chr-testdev backend (None without `add_chr_testdev`)."""
        self._build_deferred()
        return self._testdev

    # -- transports --------------------------------------------------------------------------------------
    def transport(self, index: int) -> VirtioMmio:
        """Transport `index` (0..31), created empty on first use."""
        if self._deferred:
            self._build_deferred()
        t = self._slots[index]
        if t is None:
            t = self._slots[index] = self._make(index, None)
        return t

    def _make(self, index: int, device: "VirtioDevice | None", modern: bool | None = None) -> VirtioMmio:
        from devmodel.virtio.mmio import VirtioMmio
        m = self.vm.machine
        name = f"{self.vm.name}.virtio-mmio@{WINDOW_BASE + TRANSPORT_SIZE * index:x}"
        legacy = not (self.modern if modern is None else modern)
        return VirtioMmio(device, legacy=legacy, irq=lambda level: self._irq(index, level), name=name,
                          tracer=m.tracer, log=m.log)

    def plug(self, device: "VirtioDevice", *, modern: bool | None = None) -> int:
        """Plug `device` into the next transport QEMU would give it (31, then 30, ...); returns its index.
        `modern` overrides the VM's choice for this transport (a device that requires VIRTIO_F_VERSION_1, as
        virtio-iommu, needs the Version 2 interface: QEMU's `-global virtio-mmio.force-legacy=false`)."""
        self._build_deferred()
        return self._plug(device, modern)

    def _plug(self, device: "VirtioDevice", modern: bool | None = None) -> int:
        from devmodel.virtio.mmio import virt_transport_for
        index = virt_transport_for(len(self._devices))
        self._slots[index] = self._make(index, device, modern)
        self._devices.append(device)
        return index

    def plugged(self, build: bool = True) -> list[tuple[int, "VirtioDevice"]]:
        """(transport index, device) of every plugged device; `build=False`: of those built so far (a deferred
        chr-testdev is a virtio console: the device tree, which looks for a virtio-iommu, needs no more)."""
        if build:
            self._build_deferred()
        return [(i, t.device) for i, t in enumerate(self._slots) if t is not None and t.device is not None]

    def add_chr_testdev(self) -> int:
        """arm/run's virtio console with chr-testdev behind port 0; returns its transport index."""
        self._build_deferred()
        return self._add_chr_testdev(self.memory)

    def defer_chr_testdev(self) -> None:
        """`add_chr_testdev`, built when first needed: the guest's first access to the window, `testdev`,
        `devices`, `plugged()`, the next `plug`; with the `memory` of now. A VM whose guest never touches virtio
        then never imports the virtio package (start-up of `run`, which adds arm/run's chr-testdev)."""
        self._deferred.append(self.memory)
        self.chr_testdev = True

    def _build_deferred(self) -> None:
        while self._deferred:
            self._add_chr_testdev(self._deferred.pop(0))

    def _add_chr_testdev(self, memory: Any) -> int:
        from devmodel.virtio import ChrTestdev, VirtioConsole
        m = self.vm.machine
        self.chr_testdev = True
        self._testdev = ChrTestdev(on_exit=self._testdev_exit, tracer=m.tracer)
        console = VirtioConsole(memory, self._testdev.write, name=f"{self.vm.name}.virtio-console",
                                tracer=m.tracer, log=m.log)
        return self._plug(console)

    # -- MMIO device ----------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        index, off = divmod(offset, TRANSPORT_SIZE)
        if off + size > TRANSPORT_SIZE:                 # never from Unicorn (aligned pieces); split at the edge
            low = TRANSPORT_SIZE - off
            return self.read(offset, low) | self.read(offset + low, size - low) << (8 * low)
        self.accesses[index] += 1
        return self.transport(index).read(off, size)

    def write(self, offset: int, value: int, size: int) -> None:
        index, off = divmod(offset, TRANSPORT_SIZE)
        if off + size > TRANSPORT_SIZE:
            low = TRANSPORT_SIZE - off
            self.write(offset, value & ((1 << (8 * low)) - 1), low)
            self.write(offset + low, value >> (8 * low), size - low)
            return
        self.accesses[index] += 1
        if off == QUEUE_NOTIFY:
            self.notifies[index] += 1
        self.transport(index).write(off, value, size)

    # -- interrupts and the testdev exit ---------------------------------------------------------------------
    def _irq(self, index: int, level: int) -> None:
        self.levels[index] = level
        if level:
            self.raised[index] += 1
        spi = transport_spi(index)
        tracer = self.vm.machine.tracer
        if "virtio_board_irq" in tracer.enabled:
            tracer.emit("virtio_board_irq", vm=self.vm.name, transport=index, spi=spi, level=level)
        if self.irq_handler is not None:
            self.irq_handler(spi, level)

    def _testdev_exit(self, code: int) -> None:
        vm = self.vm
        qemu = self.testdev.exit_status if self.testdev is not None else 1
        status = kut_status(qemu)
        out = Outcome(Kind.EXIT, f"{vm.name}: chr-testdev exit code {code} (QEMU exits with {qemu}, "
                                 f"arm/run reports {status})", status)
        for v in vm.vcpus:                          # the writing vCPU is one of them; emu_stop on each
            vm.machine.stop(v, out)
