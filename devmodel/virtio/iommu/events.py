"""Trace events of the virtio-iommu device. Names follow QEMU's hw/virtio/trace-events where QEMU has the
event (`virtio_iommu_attach`, `virtio_iommu_map`, `virtio_iommu_unmap`, `virtio_iommu_unmap_done`,
`virtio_iommu_get_domain`, `virtio_iommu_put_domain`, `virtio_iommu_fill_resv_property`,
`virtio_iommu_translate_out`, `virtio_iommu_report_fault`, `virtio_iommu_set_config`,
`virtio_iommu_device_reset`, `virtio_iommu_system_reset`); the others are this model's. Request events carry
the status the driver gets (its name) and, when refused, the reason."""
from __future__ import annotations

from ...trace import define

__all__: list[str] = []

define("virtio_iommu_attach", ("dev", "domain", "endpoint", "flags", "status", "why"), "ATTACH request")
define("virtio_iommu_detach", ("dev", "domain", "endpoint", "status", "why"), "DETACH request")
define("virtio_iommu_map", ("dev", "domain", "virt_start", "virt_end", "phys_start", "flags", "status", "why"),
       "MAP request")
define("virtio_iommu_unmap", ("dev", "domain", "virt_start", "virt_end", "status", "why"), "UNMAP request")
define("virtio_iommu_unmap_done", ("dev", "domain", "virt_start", "virt_end"), "one mapping removed by an UNMAP")
define("virtio_iommu_probe", ("dev", "endpoint", "status", "why"), "PROBE request")
define("virtio_iommu_fill_resv_property", ("dev", "endpoint", "subtype", "start", "end"),
       "RESV_MEM property written into a PROBE reply")
define("virtio_iommu_attach_table", ("dev", "domain", "endpoint", "format", "status", "why"),
       "ATTACH_TABLE request (page-table extension)")
define("virtio_iommu_invalidate", ("dev", "domain", "scope", "flags", "pasid", "id", "virt_start", "nr_pages",
                                   "granule", "status", "why"),
       "INVALIDATE request (page-table extension; id: the ASID)")
define("virtio_iommu_bad_request", ("dev", "type", "status", "why"),
       "request the device cannot parse: status None = returned unwritten with used length 0 (no tail, no "
       "head, unrecognized type, too big); IOERR = device-readable part too short for its type")
define("virtio_iommu_get_domain", ("dev", "domain", "kind"), "domain created (kind: map, bypass, table)")
define("virtio_iommu_put_domain", ("dev", "domain"), "domain ceased to exist (its last endpoint left)")
define("virtio_iommu_translate_out", ("dev", "endpoint", "iova", "pa"), "emulated endpoint access translated")
define("virtio_iommu_report_fault", ("dev", "reason", "flags", "endpoint", "address", "queued"),
       "fault report written to the event queue (queued=1: waiting for an event buffer)")
define("virtio_iommu_fault_dropped", ("dev", "reason", "endpoint", "why"),
       "fault report lost: too many waiting, or the driver's event buffer is unusable")
define("virtio_iommu_set_config", ("dev", "bypass", "accepted"), "driver wrote config field bypass")
define("virtio_iommu_device_reset", ("dev",), "device reset: every endpoint detached, every domain gone")
define("virtio_iommu_system_reset", ("dev", "bypass"), "system reset: bypass back to its boot value")
