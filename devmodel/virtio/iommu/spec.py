"""Numbers of the virtio-iommu device as released in OASIS virtio v1.2 cs01, section 5.13 "IOMMU Device"
(oasis-tcs/virtio-spec `device-types/iommu/description.tex`): feature bits (5.13.3), request types and
status codes (5.13.6), request and mapping flags (5.13.6.3, 5.13.6.5), probe property types (5.13.6.8) and
fault reasons and flags (5.13.6.9). Checked against Linux `include/uapi/linux/virtio_iommu.h`, which also
defines VIRTIO_IOMMU_FAULT_F_EXEC (bit 2), a flag the spec text does not list.

`Reject(status, why)` is how the request handlers and the validators of this package refuse a request: one
place (the device's request loop) turns it into the status the driver reads.
"""
from __future__ import annotations

from enum import IntEnum

from ..constants import bit

__all__ = ["F_INPUT_RANGE", "F_DOMAIN_RANGE", "F_MAP_UNMAP", "F_BYPASS", "F_PROBE", "F_MMIO", "F_BYPASS_CONFIG",
           "ReqType", "IommuStatus", "ATTACH_F_BYPASS", "MAP_F_READ", "MAP_F_WRITE", "MAP_F_MMIO",
           "PROBE_T_NONE", "PROBE_T_RESV_MEM", "PROBE_T_MASK", "RESV_MEM_T_RESERVED", "RESV_MEM_T_MSI",
           "FaultReason", "FAULT_F_READ", "FAULT_F_WRITE", "FAULT_F_EXEC", "FAULT_F_ADDRESS", "FEATURE_NAMES",
           "REQUESTQ", "EVENTQ", "Reject"]

# Feature bits (5.13.3)
F_INPUT_RANGE = bit(0)
F_DOMAIN_RANGE = bit(1)
F_MAP_UNMAP = bit(2)
F_BYPASS = bit(3)            # superseded by BYPASS_CONFIG: new devices SHOULD NOT offer it (5.13.3.2)
F_PROBE = bit(4)
F_MMIO = bit(5)
F_BYPASS_CONFIG = bit(6)

FEATURE_NAMES = {F_INPUT_RANGE: "IOMMU_F_INPUT_RANGE", F_DOMAIN_RANGE: "IOMMU_F_DOMAIN_RANGE",
                 F_MAP_UNMAP: "IOMMU_F_MAP_UNMAP", F_BYPASS: "IOMMU_F_BYPASS", F_PROBE: "IOMMU_F_PROBE",
                 F_MMIO: "IOMMU_F_MMIO", F_BYPASS_CONFIG: "IOMMU_F_BYPASS_CONFIG"}

REQUESTQ, EVENTQ = 0, 1      # 5.13.2


class ReqType(IntEnum):
    """struct virtio_iommu_req_head.type (5.13.6); 6 and 7 are the page-table extension's (pgtable.py)."""
    ATTACH = 1
    DETACH = 2
    MAP = 3
    UNMAP = 4
    PROBE = 5
    ATTACH_TABLE = 6
    INVALIDATE = 7


class IommuStatus(IntEnum):
    """struct virtio_iommu_req_tail.status (5.13.6), VIRTIO_IOMMU_S_*."""
    OK = 0          # all good
    IOERR = 1       # virtio communication error
    UNSUPP = 2      # unsupported request
    DEVERR = 3      # internal device error
    INVAL = 4       # invalid parameters
    RANGE = 5       # out-of-range parameters
    NOENT = 6       # entry not found
    FAULT = 7       # bad address
    NOMEM = 8       # insufficient resources


ATTACH_F_BYPASS = bit(0)     # 5.13.6.3

MAP_F_READ = bit(0)          # 5.13.6.5
MAP_F_WRITE = bit(1)
MAP_F_MMIO = bit(2)          # a memory type, available with F_MMIO only

PROBE_T_NONE = 0             # the "empty property" that ends the list (5.13.6.7)
PROBE_T_RESV_MEM = 1         # 5.13.6.8.1
PROBE_T_MASK = 0xFFF         # the 12-bit type field of struct virtio_iommu_probe_property
RESV_MEM_T_RESERVED = 0
RESV_MEM_T_MSI = 1


class FaultReason(IntEnum):
    """struct virtio_iommu_fault.reason (5.13.6.9)."""
    UNKNOWN = 0
    DOMAIN = 1
    MAPPING = 2


FAULT_F_READ = bit(0)
FAULT_F_WRITE = bit(1)
FAULT_F_EXEC = bit(2)        # Linux UAPI only (not in the 1.2 text); Linux's fault handler prints it
FAULT_F_ADDRESS = bit(8)


class Reject(Exception):
    """A request refused with `status`; `why` is the model's explanation (traced and logged)."""

    def __init__(self, status: IommuStatus, why: str):
        super().__init__(f"{status.name}: {why}")
        self.status = status
        self.why = why
