"""Numbers of the virtio specification (OASIS virtio v1.2, cs01) shared by the transport, the rings and the
devices: device status bits (section 2.1), device-independent feature bits (chapter 6 "Reserved Feature
Bits" and 6.3 "Legacy Interface: Reserved Feature Bits"), device IDs (chapter 5) and the virtio-mmio
interrupt bits (section 4.2.2, InterruptStatus).
"""
from __future__ import annotations

from enum import IntFlag

__all__ = ["Status", "F_NOTIFY_ON_EMPTY", "F_ANY_LAYOUT", "F_INDIRECT_DESC", "F_EVENT_IDX", "F_VERSION_1",
           "F_ACCESS_PLATFORM", "F_RING_PACKED", "F_IN_ORDER", "F_ORDER_PLATFORM", "F_SR_IOV",
           "F_NOTIFICATION_DATA", "F_NOTIF_CONFIG_DATA", "F_RING_RESET", "LEGACY_ONLY_FEATURES",
           "RING_FEATURES", "VIRTIO_ID_CONSOLE", "VIRTIO_ID_IOMMU", "INT_VRING", "INT_CONFIG",
           "VIRTQUEUE_MAX_SIZE", "bit", "feature_names"]


class Status(IntFlag):
    """Device status field (spec 2.1), in the order a driver sets the bits."""
    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


def bit(n: int) -> int:
    return 1 << n


# Device-independent feature bits (spec chapter 6). Bits 24 and 27 exist only on the legacy interface (6.3).
F_NOTIFY_ON_EMPTY = bit(24)
F_ANY_LAYOUT = bit(27)
F_INDIRECT_DESC = bit(28)          # VIRTIO_F_INDIRECT_DESC (VIRTIO_RING_F_INDIRECT_DESC in Linux/QEMU)
F_EVENT_IDX = bit(29)              # VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX)
F_VERSION_1 = bit(32)
F_ACCESS_PLATFORM = bit(33)
F_RING_PACKED = bit(34)
F_IN_ORDER = bit(35)
F_ORDER_PLATFORM = bit(36)
F_SR_IOV = bit(37)
F_NOTIFICATION_DATA = bit(38)
F_NOTIF_CONFIG_DATA = bit(39)
F_RING_RESET = bit(40)

LEGACY_ONLY_FEATURES = F_NOTIFY_ON_EMPTY | F_ANY_LAYOUT
# What QEMU 7.2 offers on every virtio device by default (DEFINE_VIRTIO_COMMON_FEATURES in
# include/hw/virtio/virtio.h: indirect_desc, event_idx, notify_on_empty, any_layout and queue_reset on), as
# its virtio-mmio DeviceFeatures show (tests/devmodel/virtio/test_qemu_oracle.py).
RING_FEATURES = F_INDIRECT_DESC | F_EVENT_IDX | F_NOTIFY_ON_EMPTY | F_ANY_LAYOUT | F_RING_RESET

VIRTIO_ID_CONSOLE = 3              # spec 5.3.1
VIRTIO_ID_IOMMU = 23               # spec 5.13.1

INT_VRING = 1                      # InterruptStatus bit 0: Used Buffer Notification
INT_CONFIG = 2                     # InterruptStatus bit 1: Configuration Change Notification

VIRTQUEUE_MAX_SIZE = 32768         # spec 2.7: the maximum Queue Size of a split virtqueue

_NAMES = {F_NOTIFY_ON_EMPTY: "NOTIFY_ON_EMPTY", F_ANY_LAYOUT: "ANY_LAYOUT", F_INDIRECT_DESC: "INDIRECT_DESC",
          F_EVENT_IDX: "EVENT_IDX", F_VERSION_1: "VERSION_1", F_ACCESS_PLATFORM: "ACCESS_PLATFORM",
          F_RING_PACKED: "RING_PACKED", F_IN_ORDER: "IN_ORDER", F_ORDER_PLATFORM: "ORDER_PLATFORM",
          F_SR_IOV: "SR_IOV", F_NOTIFICATION_DATA: "NOTIFICATION_DATA", F_NOTIF_CONFIG_DATA: "NOTIF_CONFIG_DATA",
          F_RING_RESET: "RING_RESET"}


def feature_names(features: int, device_bits: dict[int, str] | None = None) -> list[str]:
    """Names of the set bits (device-type bits from `device_bits`, else "bit<n>"), lowest first."""
    names = []
    for n in range(64):
        if features >> n & 1:
            names.append((device_bits or {}).get(bit(n)) or _NAMES.get(bit(n)) or f"bit{n}")
    return names
