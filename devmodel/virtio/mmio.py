"""virtio-mmio transport (virtio v1.2 section 4.2): one 0x200-byte MMIO window in front of a `VirtioDevice`.

Both register interfaces, chosen per transport:

* `legacy=False` -- Version 2 (4.2.2): DeviceFeatures/DriverFeatures with their selectors, QueueReady,
  Queue{Desc,Driver,Device}{Low,High}, SHM registers, QueueReset, ConfigGeneration. virtio-iommu needs this
  one: a modern device offers VIRTIO_F_VERSION_1 and the virtio-iommu driver requires it.
* `legacy=True` -- Version 1 (4.2.4 "Legacy interface"): HostFeatures/GuestFeatures, GuestPageSize,
  QueueAlign, QueuePFN with the contiguous ring layout of 2.7.2. QEMU's virtio-mmio defaults to it
  (`force-legacy=true` in hw/virtio/virtio-mmio.c; `-global virtio-mmio.force-legacy=false` selects
  Version 2), and kvm-unit-tests' driver (lib/virtio-mmio.c) programs QueuePFN, so `legacy=True` is the
  default here too.

Register behaviour is declared in `MODERN_REGS` / `LEGACY_REGS` (devmodel/regs.py tables); the named hooks
below add the side effects. Control registers take 32-bit aligned accesses (4.2.2.2); a 64-bit aligned
access is two 32-bit accesses, low word first, as QEMU's memory core splits accesses to its 4-byte-wide
virtio-mmio region. Any other access, a read of a write-only or a write of a read-only register, or an
offset of no register is RAZ/WI and reported (`virtio_mmio_bad_access`, log category "guest_errors"), as
QEMU does. The device configuration space at 0x100 takes 1-, 2- and 4-byte accesses at any offset
("accessed with byte alignment"). Unaligned control accesses are the CPU's business: QEMU's TCG turns them
into aligned ones before the device sees them, here they are RAZ/WI.

Behaviour where the spec leaves a choice, and where QEMU differs:
* An empty transport (`device=None`) reads MagicValue, Version and VendorID ("QEMU") and 0 elsewhere, and
  ignores writes, as QEMU's transports without a backend do; drivers skip DeviceID 0 (4.2.2.2).
* Queue configuration is checked when the queue is enabled (QueueReady = 1, or a non-zero QueuePFN): a size
  that is not a power of 2 in 1..QueueNumMax, misaligned parts or rings outside memory put the device in its
  error state (DEVICE_NEEDS_RESET on Version 2; QEMU reports the unreachable case the same way).
* QueueReady = 0 and QueuePFN = 0 release the queue (its indices restart at 0 when it is enabled again);
  QEMU resets the whole device on QueuePFN = 0, the spec only stops using the queue.
* DeviceFeaturesSel >= 2 reads 0 (the spec numbers bits sel*32..; QEMU treats every non-zero selector as 1).
* SHMLen and SHMBase read all ones, "no such region" (4.2.2; QEMU 7.2 returns 0 for SHMBase).
* QueueReset works only once VIRTIO_F_RING_RESET is negotiated; a reset completes immediately, so the
  register reads 0.
* A legacy GuestPageSize that is not a power of 2 uses its lowest set bit (QEMU's ctz32); until it is
  written (or after 0) the page size is 1 byte, as in QEMU.
* Status = 0 also resets QueueSel (QEMU `virtio_reset`); `reset()` is the transport's power-on reset.

Interrupt: one level-sensitive line, `irq(level)` with level = InterruptStatus != 0 (4.2.3.4), called when
the level changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..regs import Access, Reg, RegisterFile
from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .constants import F_RING_RESET, Status
from .device import Log, VirtioDevice
from .ring import RingAddrs, RingFault, legacy_layout

__all__ = ["VirtioMmio", "MODERN_REGS", "LEGACY_REGS", "MMIO_SIZE", "CONFIG_OFFSET", "MAGIC_VALUE",
           "VENDOR_ID_QEMU", "VIRT_MMIO_BASE", "VIRT_NUM_TRANSPORTS", "VIRT_MMIO_SPI", "virt_transport_for",
           "virt_transport_base"]

MMIO_SIZE = 0x200
CONFIG_OFFSET = 0x100
MAGIC_VALUE = 0x74726976            # "virt", little-endian
VENDOR_ID_QEMU = 0x554D4551         # "QEMU", what QEMU's virtio-mmio reports (VIRT_VENDOR)
LEGACY_QUEUE_ALIGN = 4096           # QEMU's default vring alignment (VIRTIO_PCI_VRING_ALIGN) until QueueAlign

# QEMU virt's transports (hw/arm/virt.c, create_virtio_devices and a15irqmap): 32 windows of 0x200 bytes from
# 0x0a00_0000, transport i on SPI 16 + i; the n-th `-device virtio-*` (n from 0) is plugged into transport
# 31 - n (checked against qemu-system-aarch64 7.2 by tests/devmodel/virtio/test_qemu_oracle.py).
VIRT_MMIO_BASE = 0x0A00_0000
VIRT_NUM_TRANSPORTS = 32
VIRT_MMIO_SPI = 16


def virt_transport_for(n: int) -> int:
    """Index of the transport QEMU virt gives its n-th virtio device."""
    if not 0 <= n < VIRT_NUM_TRANSPORTS:
        raise ValueError(f"QEMU virt has {VIRT_NUM_TRANSPORTS} virtio-mmio transports, not a device number {n}")
    return VIRT_NUM_TRANSPORTS - 1 - n


def virt_transport_base(index: int) -> int:
    return VIRT_MMIO_BASE + MMIO_SIZE * index

R, W, RW = Access.RO, Access.WO, Access.RW
_ALL_ONES = 0xFFFF_FFFF

_COMMON_HEAD = (
    Reg("MagicValue", 0x000, reset=MAGIC_VALUE, access=R),
    Reg("DeviceID", 0x008, access=R, doc="0: no device"),
    Reg("VendorID", 0x00C, reset=VENDOR_ID_QEMU, access=R),
)
_COMMON_QUEUE = (
    Reg("QueueSel", 0x030, access=W),
    Reg("QueueNumMax", 0x034, access=R, doc="0: no such queue"),
    Reg("QueueNum", 0x038, access=W),
    Reg("QueueNotify", 0x050, access=W, doc="queue index"),
    Reg("InterruptStatus", 0x060, access=R, doc="bit 0 used buffer, bit 1 configuration change"),
    Reg("InterruptACK", 0x064, access=W),
    Reg("Status", 0x070, access=RW, doc="device status (spec 2.1); 0 resets the device"),
)

# Version 2, spec 4.2.2 table "MMIO Device Register Layout"
MODERN_REGS: tuple[Reg, ...] = (
    *_COMMON_HEAD,
    Reg("Version", 0x004, reset=2, access=R),
    Reg("DeviceFeatures", 0x010, access=R, doc="bits DeviceFeaturesSel*32 .. +31"),
    Reg("DeviceFeaturesSel", 0x014, access=W),
    Reg("DriverFeatures", 0x020, access=W, doc="bits DriverFeaturesSel*32 .. +31, taken at FEATURES_OK"),
    Reg("DriverFeaturesSel", 0x024, access=W),
    *_COMMON_QUEUE,
    Reg("QueueReady", 0x044, access=RW),
    Reg("QueueDescLow", 0x080, access=W), Reg("QueueDescHigh", 0x084, access=W),
    Reg("QueueDriverLow", 0x090, access=W), Reg("QueueDriverHigh", 0x094, access=W),
    Reg("QueueDeviceLow", 0x0A0, access=W), Reg("QueueDeviceHigh", 0x0A4, access=W),
    Reg("SHMSel", 0x0AC, access=W),
    Reg("SHMLenLow", 0x0B0, reset=_ALL_ONES, access=R), Reg("SHMLenHigh", 0x0B4, reset=_ALL_ONES, access=R),
    Reg("SHMBaseLow", 0x0B8, reset=_ALL_ONES, access=R), Reg("SHMBaseHigh", 0x0BC, reset=_ALL_ONES, access=R),
    Reg("QueueReset", 0x0C0, access=RW, doc="with VIRTIO_F_RING_RESET"),
    Reg("ConfigGeneration", 0x0FC, access=R),
)

# Version 1, spec 4.2.4 table "MMIO Device Legacy Register Layout"
LEGACY_REGS: tuple[Reg, ...] = (
    *_COMMON_HEAD,
    Reg("Version", 0x004, reset=1, access=R),
    Reg("HostFeatures", 0x010, access=R, doc="feature bits 0-31 (HostFeaturesSel 0), else 0"),
    Reg("HostFeaturesSel", 0x014, access=W),
    Reg("GuestFeatures", 0x020, access=W, doc="taken at once (GuestFeaturesSel 0)"),
    Reg("GuestFeaturesSel", 0x024, access=W),
    Reg("GuestPageSize", 0x028, access=W),
    *_COMMON_QUEUE,
    Reg("QueueAlign", 0x03C, access=W, doc="used ring alignment"),
    Reg("QueuePFN", 0x040, access=RW, doc="page number of the queue; 0 releases it"),
)

_EMPTY_VISIBLE = ("MagicValue", "Version", "VendorID")


@dataclass
class _QueueRegs:
    """What the driver wrote for one queue before enabling it (QEMU's VirtIOMMIOQueue)."""
    num: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0
    align: int = LEGACY_QUEUE_ALIGN
    pfn: int = 0


class VirtioMmio:
    """One virtio-mmio transport. `device=None` is an empty slot (DeviceID 0)."""

    def __init__(self, device: VirtioDevice | None = None, *, legacy: bool = True,
                 irq: Callable[[int], None] | None = None, name: str | None = None,
                 tracer: Tracer = NULL_TRACER, log: Log | None = None):
        self.device = device
        self.legacy = legacy
        self.irq = irq
        self.name = name or (f"virtio-mmio({device.name})" if device else "virtio-mmio")
        self.tracer = tracer
        self.log = log
        self.irq_level = 0
        self.bad_accesses = 0
        self.regs = RegisterFile(self, LEGACY_REGS if legacy else MODERN_REGS, on_bad_access=self._bad_access)
        nq = len(device.vqs) if device else 0
        self.queues = [_QueueRegs() for _ in range(nq)]
        self.driver_features = [0, 0]
        self.page_shift = 0
        if device is not None:
            device.legacy = legacy
            device.irq_changed = self._update_irq

    def reset(self) -> None:
        """Power-on reset of the transport and its device (QEMU virtio_mmio_reset)."""
        self.regs.reset()
        self.queues = [_QueueRegs() for _ in self.queues]
        self.driver_features = [0, 0]
        self.page_shift = 0
        if self.device is not None:
            self.device.reset()

    # -- MMIO --------------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size == 8 and not offset & 7:
            return self.read(offset, 4) | self.read(offset + 4, 4) << 32
        if offset >= CONFIG_OFFSET:
            value = self._config_read(offset - CONFIG_OFFSET, size)
        elif self.device is None:
            hit = self.regs.lookup(offset, size)
            value = self.regs.read(offset, size) if hit and hit[0].name in _EMPTY_VISIBLE else 0
        else:
            self._check_direction("read", offset, size)
            value = self.regs.read(offset, size)
        if "virtio_mmio_read" in self.tracer.enabled:
            self.tracer.emit("virtio_mmio_read", dev=self.name, offset=offset, size=size, value=value)
        return value

    def write(self, offset: int, value: int, size: int) -> None:
        if size == 8 and not offset & 7:
            self.write(offset, value & _ALL_ONES, 4)
            self.write(offset + 4, value >> 32 & _ALL_ONES, 4)
            return
        if "virtio_mmio_write" in self.tracer.enabled:
            self.tracer.emit("virtio_mmio_write", dev=self.name, offset=offset, size=size, value=value)
        if self.device is None:
            return
        if offset >= CONFIG_OFFSET:
            self._config_write(offset - CONFIG_OFFSET, value, size)
            return
        self._check_direction("write", offset, size)
        self.regs.write(offset, value, size)

    def _config_read(self, offset: int, size: int) -> int:
        if self.device is None:
            return 0
        if size not in (1, 2, 4):
            self._report("read", CONFIG_OFFSET + offset, size, "configuration space takes 1, 2 or 4 bytes")
            return 0
        return self.device.config.read(offset, size)

    def _config_write(self, offset: int, value: int, size: int) -> None:
        if size not in (1, 2, 4):
            self._report("write", CONFIG_OFFSET + offset, size, "configuration space takes 1, 2 or 4 bytes")
            return
        self.device.config.write(offset, value, size)

    def _check_direction(self, kind: str, offset: int, size: int) -> None:
        hit = self.regs.lookup(offset, size)
        if hit is None:
            return                            # on_bad_access reports it
        access = hit[0].access
        if kind == "read" and access is Access.WO:
            self._report(kind, offset, size, f"{hit[0].name} is write-only")
        elif kind == "write" and access is Access.RO:
            self._report(kind, offset, size, f"{hit[0].name} is read-only")

    def _bad_access(self, kind: str, offset: int, size: int, value: int | None) -> None:
        why = "not a 32-bit aligned access" if self.regs.lookup(offset & ~3, 4) else "no register here"
        self._report(kind, offset, size, why)

    def _report(self, kind: str, offset: int, size: int, why: str) -> None:
        self.bad_accesses += 1
        if "virtio_mmio_bad_access" in self.tracer.enabled:
            self.tracer.emit("virtio_mmio_bad_access", dev=self.name, kind=kind, offset=offset, size=size, why=why)
        self._guest_error(f"{kind} size {size} at {offset:#x}: {why} (RAZ/WI)")

    def _guest_error(self, msg: str) -> None:
        if self.log is not None:
            self.log("guest_errors", f"{self.name}: {msg}")

    def _update_irq(self) -> None:
        level = int(self.device.isr != 0)
        if level != self.irq_level:
            self.irq_level = level
            if "virtio_mmio_setting_irq" in self.tracer.enabled:
                self.tracer.emit("virtio_mmio_setting_irq", dev=self.name, level=level)
            if self.irq is not None:
                self.irq(level)

    # -- selected queue -----------------------------------------------------------------------------------
    def _selected(self, what: str) -> int | None:
        sel = self.regs["QueueSel"]
        if sel < len(self.queues):
            return sel
        self._guest_error(f"{what} for queue {sel}, which does not exist")
        return None

    def _writable_queue(self, what: str) -> int | None:
        q = self._selected(what)
        if q is not None and self.device.vqs[q].ready:
            self._guest_error(f"{what} for queue {q} while it is enabled: ignored (spec 4.2.2.2)")
            return None
        return q

    # -- hooks: registers of both interfaces ---------------------------------------------------------------
    def _on_deviceid_read(self, value: int) -> int:
        return self.device.device_id

    def _on_queuenummax_read(self, value: int) -> int:
        sel = self.regs["QueueSel"]
        return self.device.vqs[sel].num_max if sel < len(self.queues) else 0

    def _on_queuenum_write(self, old: int, new: int) -> None:
        q = self._writable_queue("QueueNum")
        if q is not None:
            self.queues[q].num = new
            if "virtio_mmio_queue_write" in self.tracer.enabled:
                self.tracer.emit("virtio_mmio_queue_write", dev=self.name, queue=q, value=new,
                                 max_size=self.device.vqs[q].num_max)

    def _on_queuenotify_write(self, old: int, new: int) -> None:
        if new < len(self.queues):
            self.device.queue_notify(new)
        else:
            self._guest_error(f"QueueNotify for queue {new}, which does not exist")

    def _on_interruptstatus_read(self, value: int) -> int:
        return self.device.isr

    def _on_interruptack_write(self, old: int, new: int) -> None:
        self.device.ack_interrupt(new)

    def _on_status_read(self, value: int) -> int:
        return self.device.status

    def _on_status_write(self, old: int, new: int) -> None:
        features = self.driver_features[0] | self.driver_features[1] << 32
        self.device.set_status(new, features)
        if new & 0xFF == 0:
            self.regs["QueueSel"] = 0

    # -- hooks: Version 2 ----------------------------------------------------------------------------------
    def _on_devicefeatures_read(self, value: int) -> int:
        sel = self.regs["DeviceFeaturesSel"]
        return self.device.offered_features() >> (32 * sel) & _ALL_ONES if sel < 2 else 0

    def _on_driverfeatures_write(self, old: int, new: int) -> None:
        sel = self.regs["DriverFeaturesSel"]
        if self.device.status & Status.FEATURES_OK:
            self._guest_error("DriverFeatures written after FEATURES_OK: ignored (spec 3.1.1)")
        elif sel < 2:
            self.driver_features[sel] = new
        elif new:
            self._guest_error(f"DriverFeatures bits {new:#x} at selector {sel}: no such features")

    def _on_queueready_read(self, value: int) -> int:
        sel = self.regs["QueueSel"]
        return int(self.device.vqs[sel].ready) if sel < len(self.queues) else 0

    def _on_queueready_write(self, old: int, new: int) -> None:
        q = self._selected("QueueReady")
        if q is None:
            return
        vq = self.device.vqs[q]
        if not new:
            self.device.reset_queue(vq)
        elif vq.ready:
            self._guest_error(f"QueueReady = 1 for queue {q}, which is enabled already: ignored")
        else:
            r = self.queues[q]
            self.device.enable_queue(vq, r.num, RingAddrs(r.desc, r.driver, r.device))

    def _set_half(self, what: str, field: str, high: bool, value: int) -> None:
        q = self._writable_queue(what)
        if q is not None:
            r = self.queues[q]
            old = getattr(r, field)
            new = (old & _ALL_ONES) | value << 32 if high else (old & ~_ALL_ONES) | value
            setattr(r, field, new)

    def _on_queuedesclow_write(self, old: int, new: int) -> None:
        self._set_half("QueueDescLow", "desc", False, new)

    def _on_queuedeschigh_write(self, old: int, new: int) -> None:
        self._set_half("QueueDescHigh", "desc", True, new)

    def _on_queuedriverlow_write(self, old: int, new: int) -> None:
        self._set_half("QueueDriverLow", "driver", False, new)

    def _on_queuedriverhigh_write(self, old: int, new: int) -> None:
        self._set_half("QueueDriverHigh", "driver", True, new)

    def _on_queuedevicelow_write(self, old: int, new: int) -> None:
        self._set_half("QueueDeviceLow", "device", False, new)

    def _on_queuedevicehigh_write(self, old: int, new: int) -> None:
        self._set_half("QueueDeviceHigh", "device", True, new)

    def _on_queuereset_read(self, value: int) -> int:
        return 0

    def _on_queuereset_write(self, old: int, new: int) -> None:
        q = self._selected("QueueReset")
        if q is None or new != 1:
            return
        if not self.device.guest_features & F_RING_RESET:
            self._guest_error("QueueReset without VIRTIO_F_RING_RESET negotiated: ignored")
            return
        self.device.reset_queue(self.device.vqs[q])

    def _on_configgeneration_read(self, value: int) -> int:
        return self.device.generation

    # -- hooks: Version 1 (legacy) -------------------------------------------------------------------------
    def _on_hostfeatures_read(self, value: int) -> int:
        return self.device.offered_features() & _ALL_ONES if self.regs["HostFeaturesSel"] == 0 else 0

    def _on_guestfeatures_write(self, old: int, new: int) -> None:
        if self.regs["GuestFeaturesSel"] == 0:
            self.device.set_legacy_features(new)
        else:
            self._guest_error("GuestFeatures with GuestFeaturesSel != 0 in legacy mode: ignored")

    def _on_guestpagesize_write(self, old: int, new: int) -> None:
        if new & (new - 1):
            self._guest_error(f"GuestPageSize {new:#x} is not a power of 2")
        self.page_shift = (new & -new).bit_length() - 1 if new else 0
        if "virtio_mmio_guest_page" in self.tracer.enabled:
            self.tracer.emit("virtio_mmio_guest_page", dev=self.name, size=new, shift=self.page_shift)

    def _on_queuealign_write(self, old: int, new: int) -> None:
        q = self._writable_queue("QueueAlign")
        if q is not None:
            self.queues[q].align = new

    def _on_queuepfn_read(self, value: int) -> int:
        sel = self.regs["QueueSel"]
        return self.queues[sel].pfn if sel < len(self.queues) and self.device.vqs[sel].ready else 0

    def _on_queuepfn_write(self, old: int, new: int) -> None:
        q = self._selected("QueuePFN")
        if q is None:
            return
        r, vq = self.queues[q], self.device.vqs[q]
        if new == 0:
            r.pfn = 0
            self.device.reset_queue(vq)
            return
        if vq.ready:
            self._guest_error(f"QueuePFN for queue {q}, which is in use: re-enabled with new rings")
        r.pfn = new
        align_ok = r.align > 0 and not r.align & (r.align - 1)
        addrs = legacy_layout(new << self.page_shift, r.num, r.align) if align_ok else None
        self.device.enable_queue(vq, r.num, addrs, None if align_ok else RingFault.MISALIGNED)
