"""The interrupt controller of each VM on the board: QEMU virt's GIC (hw/arm/virt.c `create_gic`) built on the
pure models of `devmodel/gic` (docs/gic.md), mapped at QEMU's addresses, with its CPU interface, its input lines
wired to the VM's devices, and its outputs handed to the delivery into the vCPUs (harness/interrupts.py).

* Version: GICv2 or GICv3, per VM (`Machine.add_vm(gic_version=)`, `VM.gic_version`; the CLI's `--gic 2|3`
  and `-machine gic-version=N`). The default is QEMU 7.2's under TCG, GICv2 (checked on QEMU 7.2's dumped
  tree), for up to 8 vCPUs; above 8, where QEMU refuses a GICv2 board, GICv3 (`default_gic_version`).
* Frames, as QEMU 7.2 maps them (checked by a guest on QEMU: outside them an access is a synchronous external
  abort, ESR 0x96000010, which Unicorn's unmapped access becomes here too): GICv2 distributor 4 KiB at
  0x0800_0000 and CPU interface 8 KiB at 0x0801_0000 (the 64 KiB windows of the tree hold only these), both
  banked: each vCPU's Unicorn maps its own view (`GicV2.distributor_for(cpu)`, `cpu_interface_for(cpu)`) and
  the VM's IPA bus a view of the vCPU that runs. GICv3 distributor 64 KiB at 0x0800_0000, one 128 KiB
  redistributor frame per vCPU from 0x080A_0000 (at most the 123 of the single region the tree describes),
  the CPU interface as the ICC_* system registers of `GicV3.sysreg_table()` through `vcpu.sysregs` (below).
  The ITS frame (0x0808_0000, `VIRT_GIC_ITS`): harness/its.py `add_its` creates the VM's ITS and maps it
  with `attach_its` on every GICv3 (QEMU's default `its=on`); the GICv3 model reads its LPI tables through
  the VM's IPA bus (`dma`), which the ITS shares.
* ICC_* registers (IHI 0069 12.2): one MRS handler per readable and one MSR handler per writable encoding of
  the table, so the other direction of a read-only or write-only register stays UNDEFINED (Unicorn does not
  implement them); at EL0 every access is UNDEFINED (the handlers decline); ICC_SRE_EL2 exists only on vCPUs
  that start at EL2 and only at EL2. With HCR_EL2.IMO/FMO set, EL1 accesses would reach the virtual CPU
  interface (ICV_*), which is not modelled: they reach the physical one, logged once under `-d unimp`.
  ID_AA64PFR0_EL1.GIC reads 1 on a GICv3 VM, as QEMU's `id_aa64pfr0_read` reports the system register
  interface (0 on a GICv2 VM: Unicorn's value).
* Inputs (`devmodel.gic` numbering, INTID = SPI + 32; a guest's GICD_ICFGR decides level or edge): the
  generic timers' outputs as level PPIs of their vCPU (virtual 27, EL1 physical 30, EL2 physical 26, EL2
  virtual 28: `devmodel.timer.PPI`; harness/interrupts.py attaches them), the PL011's UARTINTR as SPI 1
  (level), virtio-mmio transport i as SPI 16 + i (`set_spi`, level = InterruptStatus != 0), the wired
  interrupts of an SMMUv3 mapped into the VM (the VMM's vSMMU, or a physical one passed through) as SPIs 74..77
  in QEMU's order, event queue, PRI queue, CMD_SYNC, GERROR (edges: `pulse_spi`), chained after any callback
  the SMMU had. `line(intid)` / `edge(intid)` give a device the callable its model takes.
* Arming: the guest's first access to the GIC (a frame or an ICC register) starts the virtual clock, so that
  slices are counted from then on: the delivery needs the PC of the instruction an interrupt follows, which
  Unicorn reports inside an MMIO callback only in counted mode. Before any access nothing can be delivered
  (every group enable resets to 0), so a guest that never uses interrupts keeps the uncounted fast path.
* Outputs: `irq_line(cpu)`, `fiq_line(cpu)`, `hppi(cpu)`; every change goes to `machine.interrupts`.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

from devmodel.gic.frames import GICC_SIZE, GICD_SIZE  # the models: GICv2 at first use, GICv3 and its ITS for a GICv3 VM

from .devicetree import (GICV2_MAX_CPUS, GICV3_MAX_CPUS, MMIO_SPI, SMMU_SPI, UART_SPI, VIRT_GIC_CPU, VIRT_GIC_DIST,
                         VIRT_GIC_REDIST)
from .exits import HarnessInputError
from .sysregs import Encoding

if TYPE_CHECKING:
    from .machine import VM
    from .vcpu import Vcpu

__all__ = ["VmGic", "default_gic_version", "UART_INTID", "SMMU_INTIDS", "VIRTIO_INTID", "ID_AA64PFR0_EL1"]

UART_INTID = 32 + UART_SPI
VIRTIO_INTID = 32 + MMIO_SPI                     # transport i: VIRTIO_INTID + i
#: the SMMUv3 model's wired lines -> INTID (QEMU hw/arm/smmuv3.c SMMUIrq order, the tree's interrupt-names)
SMMU_INTIDS = {"eventq": 32 + SMMU_SPI, "priq": 32 + SMMU_SPI + 1, "cmd_sync": 32 + SMMU_SPI + 2,
               "gerror": 32 + SMMU_SPI + 3}
ID_AA64PFR0_EL1: Encoding = (3, 0, 0, 4, 0)
_PFR0_GIC = 1 << 24                              # ID_AA64PFR0_EL1.GIC [27:24] = 1: GICv3 system registers
HCR_EL2 = (3, 4, 1, 1, 0)
_HCR_FMO, _HCR_IMO = 1 << 3, 1 << 4


def default_gic_version(ncpus: int) -> int:
    """QEMU 7.2 virt's default under TCG (GICv2) where it can hold the vCPUs, GICv3 above 8."""
    return 2 if ncpus <= GICV2_MAX_CPUS else 3


class _GuestView:
    """An MMIO device in front of one GIC frame: the guest's first access arms the VM's GIC. `dev` is the frame's
    device, or None and `frame` its name on the model (a GICv2's `frame(cpu)` is looked up at the first access,
    which builds the model)."""

    __slots__ = ("dev", "gic", "frame", "cpu")

    def __init__(self, dev: Any, gic: "VmGic", frame: str = "", cpu: int = 0):
        self.dev, self.gic, self.frame, self.cpu = dev, gic, frame, cpu

    def _device(self) -> Any:
        if self.dev is None:
            self.dev = getattr(self.gic.model, self.frame)(self.cpu)
        return self.dev

    def read(self, offset: int, size: int) -> int:
        if not self.gic.armed:
            self.gic.arm()
        dev = self.dev
        return (dev if dev is not None else self._device()).read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        if not self.gic.armed:
            self.gic.arm()
        dev = self.dev
        (dev if dev is not None else self._device()).write(offset, value, size)


class _SharedFrame:
    """A GICv2 frame on the VM's IPA bus (Python's accesses: the view of the vCPU that runs): the model's
    `distributor` or `cpu_interface`, looked up at each access (the first builds the model)."""

    __slots__ = ("gic", "frame")

    def __init__(self, gic: "VmGic", frame: str):
        self.gic, self.frame = gic, frame

    def read(self, offset: int, size: int) -> int:
        return getattr(self.gic.model, self.frame).read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        getattr(self.gic.model, self.frame).write(offset, value, size)


class VmGic:
    """The GIC of `vm` (see the module docstring). `model` is the `devmodel.gic` object (GicV2 or GicV3). A
    GICv2 model is built at its first use (an access to a frame, an input, `model`): until then nothing is
    pending, as at its reset, and a guest that never uses its GIC does not pay for it (its import and
    construction, ~2 ms of `run hello.elf`)."""

    def __init__(self, vm: "VM", version: int):
        if version not in (2, 3):
            raise HarnessInputError(f"{vm.name}: gic-version={version}: 2 or 3")
        n = len(vm.vcpus)
        if version == 2 and n > GICV2_MAX_CPUS:
            raise HarnessInputError(f"{vm.name}: {n} vCPUs exceed the {GICV2_MAX_CPUS} CPU interfaces of a GICv2 "
                                    f"(QEMU virt refuses it too): use GICv3 (--gic 3)")
        m = vm.machine
        self.vm = vm
        self.version = version
        self.armed = False
        self.its: Any = None
        self.mapped: list[tuple[int, int]] = []
        self._icv_logged = False
        self._wired: set[int] = set()                # id() of the devices whose lines are wired here
        self._model: Any = None
        if version == 3:
            from devmodel.gic import GicV3
            self._model = GicV3(n, dma=vm.ipa, affinities=[_affinity(v.mpidr) for v in vm.vcpus], tracer=m.tracer,
                                log=m.log, on_change=self._changed, name=f"{vm.name}.gicv3")
        self._map()
        if version == 3:
            from .its import add_its
            self._serve_sysregs()
            add_its(self)                    # QEMU virt's ITS (harness/its.py), as `its=on` (the default)

    @property
    def model(self) -> Any:
        model = self._model
        if model is None:
            from devmodel.gic import GicV2
            m, vm = self.vm.machine, self.vm
            model = self._model = GicV2(len(vm.vcpus), tracer=m.tracer, log=m.log, on_change=self._changed,
                                        current_cpu=self._running_cpu, name=f"{vm.name}.gicv2")
        return model

    # -- frames -----------------------------------------------------------------------------------------------
    def _map(self) -> None:
        vm = self.vm
        if self.version == 2:
            frames = ((VIRT_GIC_DIST[0], GICD_SIZE, "distributor", "gicd"),
                      (VIRT_GIC_CPU[0], GICC_SIZE, "cpu_interface", "gicc"))
            for base, size, frame, name in frames:
                vm.ipa.add_device(base, size, _SharedFrame(self, frame), name)
                for v in vm.vcpus:
                    v.map_mmio(base, size, _GuestView(None, self, f"{frame}_for", v.index))
                self.mapped.append((base, size))
            return
        model = self.model
        from devmodel.gic import GICD_V3_SIZE, GICR_FRAME
        nframes = min(len(vm.vcpus), GICV3_MAX_CPUS)
        for base, size, dev, name in ((VIRT_GIC_DIST[0], GICD_V3_SIZE, model.distributor, "gicd"),
                                      (VIRT_GIC_REDIST[0], nframes * GICR_FRAME, model.redistributors, "gicr")):
            vm.ipa.add_device(base, size, dev, name)
            view = _GuestView(dev, self)
            for v in vm.vcpus:
                v.map_mmio(base, size, view)
            self.mapped.append((base, size))

    def unmap(self) -> None:
        """Take the frames off the VM (before a `VM.gic_version` change; the vCPUs have not run)."""
        for base, size in self.mapped:
            self.vm.ipa.remove(base)
            for v in self.vm.vcpus:
                v.unmap_mmio(base, size)
        self.mapped = []

    def remap(self) -> None:
        """Map the frames again after `unmap` (a refused version change)."""
        self._map()

    def attach_its(self, base: int, size: int, its: Any, name: str = "its") -> None:
        """Map a GICv3 ITS (devmodel.gic.Its over `self.model`) at `base` in the VM, behind the arming view."""
        if self.version != 3:
            raise ValueError(f"{self.vm.name}: an ITS needs a GICv3")
        self.its = its
        self.vm.ipa.add_device(base, size, its, name)
        view = _GuestView(its, self)
        for v in self.vm.vcpus:
            v.map_mmio(base, size, view)
        self.mapped.append((base, size))

    def _running_cpu(self) -> int:
        """GICv2 banked frames on the IPA bus: the view of this VM's vCPU that runs (CPU 0 otherwise)."""
        v = self.vm.machine.scheduler.running
        return v.index if v is not None and v.vm is self.vm else 0

    def arm(self) -> None:
        """The guest uses its GIC: count instructions from now on (see the module docstring)."""
        self.armed = True
        self.vm.machine.clock.start("interrupt controller")

    # -- the GICv3 CPU interface --------------------------------------------------------------------------------
    def _serve_sysregs(self) -> None:
        for v in self.vm.vcpus:
            for enc, reg in self.model.sysreg_table().items():
                el2 = reg.name.endswith("_EL2")
                if el2 and v.start_el < 2:
                    continue                    # no EL2: UNDEFINED, as Unicorn makes it
                v.sysregs.register(enc, read=self._icc_reader(reg.name, el2) if reg.readable else None,
                                   write=self._icc_writer(reg.name, el2) if reg.writable else None)
            v.sysregs.register(ID_AA64PFR0_EL1, read=_pfr0_with_gicv3)

    def _icc_allowed(self, v: "Vcpu", el2: bool) -> bool:
        el = v.el
        if el == 0 or (el2 and el < 2):
            return False
        if not self.armed:
            self.arm()
        if el == 1 and v.start_el == 2 and not self._icv_logged and v.uc.cpr_read(*HCR_EL2) & (_HCR_IMO | _HCR_FMO):
            self._icv_logged = True
            log = v.machine.log
            if "unimp" in log.enabled:
                log("unimp", f"{v.dvm_name}: ICC_* access at EL1 with HCR_EL2.IMO/FMO set at pc {v.pc:#x}: the "
                             f"virtual CPU interface (ICV_*) is not modelled, the physical one answers")
        return True

    def _icc_reader(self, name: str, el2: bool) -> Callable[["Vcpu"], int | None]:
        def read(v: "Vcpu") -> int | None:
            if not self._icc_allowed(v, el2):
                return None
            return self.model.cpu_interface(v.index).read_sysreg(name)
        return read

    def _icc_writer(self, name: str, el2: bool) -> Callable[["Vcpu", int], bool]:
        def write(v: "Vcpu", value: int) -> bool:
            if not self._icc_allowed(v, el2):
                return False
            self.model.cpu_interface(v.index).write_sysreg(name, value)
            return True
        return write

    # -- inputs ---------------------------------------------------------------------------------------------
    def set_spi(self, intid: int, level: bool) -> None:
        self.model.set_spi(intid, level)

    def pulse_spi(self, intid: int) -> None:
        self.model.pulse_spi(intid)

    def set_ppi(self, cpu: int, intid: int, level: bool) -> None:
        self.model.set_ppi(cpu, intid, level)

    def line(self, intid: int) -> Callable[[Any], None]:
        """A level-sensitive output of a device, as the callable `irq(level)` its model takes."""
        return lambda level: self.model.set_spi(intid, bool(level))

    def edge(self, intid: int) -> Callable[[], None]:
        """An edge-triggered source's event, as a callable."""
        return lambda: self.model.pulse_spi(intid)

    def device_added(self, device: Any) -> None:
        """A device was mapped into the VM: wire its interrupt outputs (an SMMUv3's wired lines)."""
        if _is_smmu(device) and id(device) not in self._wired:
            self._wired.add(id(device))
            previous = device.irq

            def wired(line: str, previous=previous) -> None:
                if previous is not None:
                    previous(line)
                intid = SMMU_INTIDS.get(line)
                if intid is not None:
                    self.model.pulse_spi(intid)
            device.irq = wired

    # -- outputs ----------------------------------------------------------------------------------------------
    def irq_line(self, cpu: int) -> bool:
        model = self._model                          # no model yet: nothing pending, as at its reset
        return model is not None and model.irq_pending(cpu)

    def fiq_line(self, cpu: int) -> bool:
        model = self._model
        return model is not None and model.fiq_pending(cpu)

    def hppi(self, cpu: int) -> int | None:
        """INTID of the highest-priority interrupt `cpu` is offered (what its acknowledge would return)."""
        model = self._model
        best = None if model is None else model.hppi(cpu)
        return None if best is None else best.intid

    def _changed(self, cpu: int) -> None:
        self.vm.machine.interrupts.line_changed(self.vm.vcpus[cpu])

    def __repr__(self) -> str:
        return f"<VmGic {self.vm.name} v{self.version}{' armed' if self.armed else ''}>"


def _affinity(mpidr: int) -> int:
    """MPIDR_EL1 -> the packed Aff3.Aff2.Aff1.Aff0 of `devmodel.gic.GicV3` (Aff3 [39:32] to [31:24])."""
    return ((mpidr >> 8) & 0xFF00_0000) | (mpidr & 0xFF_FFFF)


def _pfr0_with_gicv3(v: "Vcpu") -> int | None:
    """ID_AA64PFR0_EL1 with GIC = 1 (QEMU's id_aa64pfr0_read with a GICv3); EL0 reads stay Unicorn's
    (UNDEFINED)."""
    if v.el == 0:
        return None
    return dict(v.features.ids)["pfr0"] | _PFR0_GIC


def _is_smmu(device: Any) -> bool:
    """An SMMUv3 model instance (looked up in sys.modules, as harness/board.py does: a run that never imported
    the SMMU model has none)."""
    mod = sys.modules.get("devmodel.smmuv3.device")
    return mod is not None and isinstance(device, mod.SMMUv3)
