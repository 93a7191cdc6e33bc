"""virtio-iommu (OASIS virtio v1.2 section 5.13, device ID 23) and its page-table-sharing extension.

Modules, one per part of the device:

* `spec` -- the numbers of the released device: features, request types, status codes, flags, fault reasons;
* `layouts` -- the byte layouts of the configuration, requests, probe properties and fault record;
* `mappings` -- a domain's mappings and the UNMAP split rule;
* `pgtable` -- the page-table-sharing extension (an RFC layout, not in the spec): ATTACH_TABLE, INVALIDATE,
  the table-format probe properties, `TableFormat`, and their validation as SMMUv3 CDs/STEs;
* `backend` -- `IommuBackend`, what the device asks of the VMM (shadowing into a host IOMMU, or nothing);
* `device` -- `VirtioIommu`, the device (request and event queues, state, own translation), `EndpointMemory`;
* `events` -- its trace events.

Pure like the rest of devmodel: guest memory is a `DmaMemory`, the VMM side a backend object.
docs/virtio-iommu.md describes the design.
"""
from .backend import IommuBackend
from .device import (Domain, DomainKind, Endpoint, EndpointMemory, ResvMem, TranslateFault, VirtioIommu)
from .pgtable import Invalidation, PageTable, PasidTable, TableFormat
from .spec import FaultReason, IommuStatus, ReqType

__all__ = ["IommuBackend", "Domain", "DomainKind", "Endpoint", "EndpointMemory", "ResvMem", "TranslateFault",
           "VirtioIommu", "Invalidation", "PageTable", "PasidTable", "TableFormat", "FaultReason", "IommuStatus",
           "ReqType"]
