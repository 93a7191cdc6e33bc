"""virtio devices on the virtio-mmio transport (OASIS virtio v1.2).

Modules, one per part of the spec:

* `constants` -- status bits, feature bits, device IDs (2.1, chapter 6, chapter 5);
* `ring` -- split virtqueues, device side, shared by every device (2.7);
* `config` -- device configuration space as declared fields (2.5);
* `device` -- `VirtioDevice`, the transport-independent device core (status, features, notifications,
  the error state; chapters 2 and 3);
* `mmio` -- `VirtioMmio`, the virtio-mmio transport, modern (Version 2) and legacy (Version 1) (4.2);
* `console` -- `VirtioConsole`, QEMU's virtio-serial-device with a virtconsole on port 0 (5.3);
* `testdev` -- `ChrTestdev`, QEMU's chr-testdev backend (kvm-unit-tests' exit protocol);
* `events` -- the package's trace events;
* `iommu` -- `VirtioIommu`, virtio-iommu (5.13) and its page-table-sharing extension (docs/virtio-iommu.md).

The package is pure: guest memory is any object with `read_bytes` / `write_bytes` (a `devmodel.bus.Bus`,
or an IOMMU in front of one); the interrupt is a callable. docs/virtio.md describes the design.
"""
from .config import ConfigField, ConfigSpace
from .console import VirtioConsole
from .constants import Status
from .device import VirtioDevice
from .mmio import MMIO_SIZE, VirtioMmio
from .ring import Chain, DmaMemory, RingFault, Virtqueue
from .testdev import ChrTestdev, qemu_exit_status

__all__ = ["ConfigField", "ConfigSpace", "VirtioConsole", "Status", "VirtioDevice", "MMIO_SIZE", "VirtioMmio",
           "Chain", "DmaMemory", "RingFault", "Virtqueue", "ChrTestdev", "qemu_exit_status"]
