"""Trace events of the virtio package, declared in one place as QEMU keeps them in hw/virtio/trace-events and
hw/char/trace-events. Names follow QEMU's where one exists (`virtio_mmio_read`, `virtqueue_pop`,
`virtio_notify`, `virtio_set_status`, `virtio_serial_handle_control_message`, ...); `virtio_mmio_write` is
QEMU's `virtio_mmio_write_offset`. `dev` is the device or transport name in every event."""
from __future__ import annotations

from ..trace import define

__all__: list[str] = []

# transport (devmodel/virtio/mmio.py)
define("virtio_mmio_read", ("dev", "offset", "size", "value"), "guest read of a virtio-mmio register or config")
define("virtio_mmio_write", ("dev", "offset", "size", "value"), "guest write to a virtio-mmio register or config")
define("virtio_mmio_bad_access", ("dev", "kind", "offset", "size", "why"),
       "access the spec forbids (wrong size, write-only/read-only direction, other interface's register, "
       "no register): RAZ/WI")
define("virtio_mmio_guest_page", ("dev", "size", "shift"), "legacy GuestPageSize written")
define("virtio_mmio_queue_write", ("dev", "queue", "value", "max_size"), "QueueNum written")
define("virtio_mmio_setting_irq", ("dev", "level"), "interrupt line level changed (level = InterruptStatus != 0)")

# device core (devmodel/virtio/device.py)
define("virtio_set_status", ("dev", "old", "val", "refused"),
       "driver wrote the device status (refused: status bits the device did not take, e.g. FEATURES_OK)")
define("virtio_set_features", ("dev", "features", "accepted"), "driver features committed or refused")
define("virtio_reset", ("dev",), "device reset (status 0)")
define("virtio_queue_notify", ("dev", "queue", "handled"),
       "available buffer notification (handled=0: ignored: queue not ready, device broken, or DRIVER_OK "
       "not yet set on a modern device)")
define("virtio_notify", ("dev", "queue"), "used buffer notification sent (InterruptStatus bit 0)")
define("virtio_notify_config", ("dev", "generation"), "configuration change notification (InterruptStatus bit 1)")
define("virtio_error", ("dev", "queue", "reason"),
       "driver error found in a ring: device broken until reset (DEVICE_NEEDS_RESET on modern devices)")

# split virtqueue (devmodel/virtio/ring.py)
define("virtqueue_pop", ("dev", "queue", "head", "out_num", "in_num", "readable", "writable"),
       "a descriptor chain taken from the available ring (out = device-readable, in = device-writable)")
define("virtqueue_fill", ("dev", "queue", "head", "len", "idx"), "used ring entry written; idx = new used idx")
define("virtqueue_drop", ("dev", "queue", "head", "reason"),
       "a well-formed chain the device will not process, returned with used length 0")

# console (devmodel/virtio/console.py) and chr-testdev (devmodel/virtio/testdev.py)
define("virtio_serial_handle_control_message", ("dev", "event", "value", "port"),
       "control message from the driver (control transmitq)")
define("virtio_serial_send_control_event", ("dev", "port", "event", "value", "sent"),
       "control message to the driver (sent=0: queued until the driver posts a control receiveq buffer)")
define("virtio_console_flush_buf", ("dev", "port", "len"), "bytes the guest wrote to a port, to its backend")
define("virtio_console_chr_read", ("dev", "port", "len", "written"), "backend bytes offered to the guest")
define("virtio_console_emerg_write", ("dev", "ch"), "byte written to emerg_wr (VIRTIO_CONSOLE_F_EMERG_WRITE)")
define("chr_testdev_exit", ("code", "status"),
       "testdev received '<code>q': QEMU exits with status (code << 1) | 1")
define("chr_testdev_wedged", ("buffered",),
       "testdev buffer full without a complete command: QEMU spins here forever; later bytes are ignored")
