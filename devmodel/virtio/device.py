"""The transport-independent part of a virtio device (virtio v1.2 chapters 2 and 3): device status, feature
negotiation, interrupt status, configuration generation, the virtqueues and the error state.

This is QEMU's `VirtIODevice` (hw/virtio/virtio.c) split from its transport: a transport (`VirtioMmio`)
forwards the driver's register accesses here; a device type (`VirtioConsole`, later virtio-iommu) subclasses
`VirtioDevice` and implements the public hooks:

* `handle_queue(vq)` -- an available buffer notification for `vq` the device may act on;
* `reset_device()`, `status_changed(old, new)`, `validate_features(features) -> bool`,
  `config_written(names)` -- optional.

It calls `notify(vq)` after pushing used buffers, `config.set(...)` to change its configuration (which bumps
the generation and sends a configuration change notification) and `error(reason)` on a driver error.

Rules implemented (section numbers of the spec):
* 2.1: status starts at 0; the device owns DEVICE_NEEDS_RESET (the driver cannot set or clear it); a driver
  clearing other bits is a guest error that is logged and accepted (QEMU accepts it too).
* 2.1.2: no buffers consumed and no used buffer notifications before DRIVER_OK on a modern device; on an
  error the device sets DEVICE_NEEDS_RESET and, if DRIVER_OK is set, sends a configuration change
  notification. Like QEMU's `virtio_error`, the device is then "broken" (its queues are halted) until reset.
* 2.2.2 / 3.1.1: FEATURES_OK is refused (the bit stays clear) unless the driver's features are a subset of the
  offered ones, include VIRTIO_F_VERSION_1 (chapter 6: a modern device may refuse to work without it; Linux's
  virtio_mmio.c refuses version-2 devices that do not offer it) and pass `validate_features`; features cannot
  change after FEATURES_OK.
* 3.1.2 legacy: features take effect when written, the device works before DRIVER_OK, there is no
  DEVICE_NEEDS_RESET (its error state only halts the queues).
* 2.4: reset clears status, features, interrupt status and every queue.

Configuration change notifications set InterruptStatus bit 1 only (spec 4.2.2.1: bits that do not
represent an event must be zero); QEMU's `virtio_notify_config` sets bits 0 and 1.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .config import ConfigSpace
from .constants import (F_VERSION_1, INT_CONFIG, INT_VRING, LEGACY_ONLY_FEATURES, RING_FEATURES, Status,
                        feature_names)
from .ring import DmaMemory, RingAddrs, RingFault, Virtqueue

__all__ = ["VirtioDevice", "Log"]

Log = Callable[[str, str], None]     # (category, message); categories as QEMU -d: guest_errors, unimp


class VirtioDevice:
    """Base class of virtio device types. `queue_sizes[i]` is virtqueue i's QueueNumMax."""

    device_id = 0
    device_feature_names: dict[int, str] = {}

    def __init__(self, memory: DmaMemory, *, queue_sizes: Sequence[int], features: int = 0,
                 config: ConfigSpace | None = None, ring_features: int = RING_FEATURES, name: str = "virtio",
                 tracer: Tracer = NULL_TRACER, log: Log | None = None):
        self.memory = memory
        self.name = name
        self.tracer = tracer
        self.log = log
        self.host_features = features | ring_features
        self.config = config if config is not None else ConfigSpace(())
        self.config.on_change = self.config_changed
        if self.config.on_write is None:
            self.config.on_write = self.config_written
        self.vqs = [Virtqueue(i, memory, n, on_error=self._ring_error, tracer=tracer, dev=name)
                    for i, n in enumerate(queue_sizes)]
        self.legacy = False                  # set by the transport (virtio-mmio Version 1)
        self.irq_changed: Callable[[], None] | None = None     # set by the transport
        self.status = 0
        self.guest_features = 0
        self.isr = 0
        self.generation = 0
        self.broken = False
        self.errors: Counter[str] = Counter()        # driver errors, by reason
        self.stats: Counter[str] = Counter()         # everything else worth counting

    # -- what the transport calls -----------------------------------------------------------------------
    def offered_features(self) -> int:
        """Features the transport presents: legacy ones without VERSION_1, modern ones without the
        legacy-only bits (spec 6.3) and with VERSION_1 (QEMU virtio_mmio_pre_plugged)."""
        if self.legacy:
            return self.host_features & ~F_VERSION_1
        return (self.host_features | F_VERSION_1) & ~LEGACY_ONLY_FEATURES

    def set_legacy_features(self, value: int) -> None:
        """Legacy GuestFeatures write: features take effect at once, unoffered bits are dropped (QEMU)."""
        offered = self.offered_features()
        if value & ~offered:
            self.guest_error(f"driver accepted features {value & ~offered:#x} the device did not offer")
        self._commit_features(value & offered, True)

    def set_status(self, value: int, driver_features: int = 0) -> None:
        """Driver write of the status field; `driver_features` are the modern transport's staged
        DriverFeatures, committed when FEATURES_OK is newly set."""
        old = self.status
        value &= 0xFF
        if value == 0:
            self._trace_status(old, 0, 0)
            self.reset()
            return
        if value & ~old & Status.DEVICE_NEEDS_RESET:
            self.guest_error("driver set DEVICE_NEEDS_RESET (a device-owned bit): ignored")
        value = (value & ~Status.DEVICE_NEEDS_RESET) | (old & Status.DEVICE_NEEDS_RESET)
        if old & ~value:
            self.guest_error(f"driver cleared status bits {old & ~value:#x} (spec 2.1.1: MUST NOT)")
        refused = 0
        if not self.legacy and value & ~old & Status.FEATURES_OK and not self._negotiate(driver_features):
            refused = int(Status.FEATURES_OK)
            value &= ~Status.FEATURES_OK
        value = int(value)
        self.status = value
        self._trace_status(old, value, refused)
        self.status_changed(old, value)

    def reset(self) -> None:
        """Device reset (spec 2.4): status, features, interrupt status and queues back to their initial state."""
        self.status = 0
        self.guest_features = 0
        self.broken = False
        for vq in self.vqs:
            vq.reset()
            vq.features = 0
        self.set_isr(0)
        if "virtio_reset" in self.tracer.enabled:
            self.tracer.emit("virtio_reset", dev=self.name)
        self.reset_device()

    def queue_notify(self, index: int) -> bool:
        """Available buffer notification for queue `index` (the transport checked the index exists)."""
        vq = self.vqs[index]
        handled = vq.ready and self.may_consume()
        if "virtio_queue_notify" in self.tracer.enabled:
            self.tracer.emit("virtio_queue_notify", dev=self.name, queue=index, handled=int(handled))
        if not handled:
            self.stats["notify_ignored"] += 1
            return False
        self.handle_queue(vq)
        return True

    def ack_interrupt(self, mask: int) -> None:
        self.set_isr(self.isr & ~mask)

    def reset_queue(self, vq: Virtqueue) -> None:
        """Release one queue (QueueReady = 0, QueuePFN = 0, QueueReset): it stays halted if the device is broken."""
        vq.reset()
        vq.halted = self.broken

    def enable_queue(self, vq: Virtqueue, num: int, addrs: RingAddrs | None,
                     fault: RingFault | None = None) -> bool:
        """Enable `vq` with the driver's configuration, or enter the error state with the fault found (by
        the transport, or by the queue's own checks)."""
        if fault is None and addrs is not None:
            fault = vq.enable(num, addrs)
        if fault is not None:
            self.error(fault.value, vq.index)
            return False
        vq.halted = self.broken
        return True

    # -- what device types call -------------------------------------------------------------------------
    def may_consume(self) -> bool:
        """Buffers may be consumed: not broken, and DRIVER_OK on a modern device (spec 2.1.2, 3.1.2)."""
        return not self.broken and (self.legacy or bool(self.status & Status.DRIVER_OK))

    def notify(self, vq: Virtqueue) -> bool:
        """Send a used buffer notification for `vq` unless suppressed (2.7.7) or not allowed (2.1.2)."""
        if not self.may_consume() or not vq.should_notify():
            vq.stats["notify_suppressed"] += 1
            return False
        if "virtio_notify" in self.tracer.enabled:
            self.tracer.emit("virtio_notify", dev=self.name, queue=vq.index)
        self.set_isr(self.isr | INT_VRING)
        return True

    def config_changed(self) -> None:
        """Configuration space changed: new generation, and a notification once DRIVER_OK is set."""
        self.generation = (self.generation + 1) & 0xFFFF_FFFF
        if not self.status & Status.DRIVER_OK:
            return
        if "virtio_notify_config" in self.tracer.enabled:
            self.tracer.emit("virtio_notify_config", dev=self.name, generation=self.generation)
        self.set_isr(self.isr | INT_CONFIG)

    def error(self, reason: str, queue: int | None = None) -> None:
        """The driver broke a rule the device cannot work around: enter the error state (spec 2.1.2)."""
        self.errors[reason] += 1
        if "virtio_error" in self.tracer.enabled:
            self.tracer.emit("virtio_error", dev=self.name, queue=queue, reason=reason)
        self.guest_error(f"queue {queue}: {reason}" if queue is not None else reason)
        self.broken = True
        for vq in self.vqs:
            vq.halted = True
        if not self.legacy and not self.status & Status.DEVICE_NEEDS_RESET:
            self.status = int(self.status | Status.DEVICE_NEEDS_RESET)
            self.config_changed()

    def guest_error(self, msg: str) -> None:
        if self.log is not None:
            self.log("guest_errors", f"{self.name}: {msg}")

    def set_isr(self, value: int) -> None:
        if value != self.isr:
            self.isr = value
            if self.irq_changed is not None:
                self.irq_changed()

    # -- hooks for device types -------------------------------------------------------------------------
    def handle_queue(self, vq: Virtqueue) -> None:
        """Process what the driver made available on `vq` (default: nothing)."""

    def reset_device(self) -> None:
        """Device-type state back to its reset value."""

    def status_changed(self, old: int, new: int) -> None:
        """The status field changed from `old` to `new` (not called for a reset)."""

    def validate_features(self, features: int) -> bool:
        """Device-type check of a feature set the driver wants to accept (VIRTIO_F_VERSION_1 and the subset
        rule are checked already)."""
        return True

    def config_written(self, names: tuple[str, ...]) -> None:
        """The driver wrote the named (writable) configuration fields."""

    # -- internals --------------------------------------------------------------------------------------
    def _negotiate(self, features: int) -> bool:
        offered = self.offered_features()
        ok = not features & ~offered and bool(features & F_VERSION_1) and self.validate_features(features)
        if not ok:
            self.guest_error(f"FEATURES_OK refused for features {features:#x} (offered {offered:#x})")
        self._commit_features(features if ok else 0, ok)
        return ok

    def _commit_features(self, features: int, accepted: bool) -> None:
        self.guest_features = features
        for vq in self.vqs:
            vq.features = features
        if "virtio_set_features" in self.tracer.enabled:
            self.tracer.emit("virtio_set_features", dev=self.name, features=features, accepted=int(accepted))

    def _ring_error(self, vq: Virtqueue, fault: RingFault) -> None:
        self.error(fault.value, vq.index)

    def _trace_status(self, old: int, val: int, refused: int) -> None:
        if "virtio_set_status" in self.tracer.enabled:
            self.tracer.emit("virtio_set_status", dev=self.name, old=old, val=val, refused=refused)

    def describe_features(self, features: int) -> list[str]:
        return feature_names(features, self.device_feature_names)
