"""Byte layouts of the virtio-iommu structures (virtio v1.2 5.13.4 and 5.13.6), declared once as
`devmodel.fields` layouts with records generated from them.

Every structure is packed and little-endian. A request layout covers the device-readable part only: the
whole `struct virtio_iommu_req_*` without its trailing `struct virtio_iommu_req_tail` (the tail is the last
4 bytes of the device-writable part, where Linux's `viommu_get_req_errno()` reads it); the PROBE layout
stops before `properties[]`. Offsets checked against Linux `include/uapi/linux/virtio_iommu.h` and QEMU
`include/standard-headers/linux/virtio_iommu.h`.

Not modelled: the v1.2 `struct virtio_iommu_fault` is the only fault format (5.13.6.9 allows a device to
fall back to older formats for small buffers; there are none older).
"""
from __future__ import annotations

import functools
from typing import Any, Iterable

from ...fields import Field, Layout, record_decoder, record_type
from ..config import ConfigField
from .spec import PROBE_T_RESV_MEM

__all__ = ["byte_layout", "record", "decode", "property_layout", "TAIL_SIZE", "CONFIG_FIELDS",
           "CONFIG_SIZE", "ATTACH_LAYOUT", "DETACH_LAYOUT", "MAP_LAYOUT", "UNMAP_LAYOUT", "PROBE_LAYOUT",
           "RESV_MEM_LAYOUT", "FAULT_LAYOUT", "AttachReq", "DetachReq", "MapReq", "UnmapReq",
           "ProbeReq", "FaultRecord", "property_bytes", "resv_mem_property", "tail"]


def byte_layout(name: str, size: int, fields: Iterable[tuple[str, int, int]]) -> Layout:
    """A layout of `size` bytes from (NAME, byte offset, byte size) triples."""
    return Layout(name, 8 * size, (Field(n, 8 * off, 8 * nbytes) for n, off, nbytes in fields))


def record(name: str, layout: Layout) -> type:
    """The record type of `layout` (devmodel.fields.record_type: one int attribute per field, lower-case, in
    order, plus `raw`); `decode` fills one from bytes."""
    return record_type(name, layout, module=__name__)


@functools.lru_cache(maxsize=None)
def _decoder(cls: type, layout: Layout) -> Any:
    return record_decoder(cls, layout)


def decode(cls: type, layout: Layout, data: bytes) -> Any:
    """The `record` of `layout` in `data` (exactly `layout.nbytes` bytes)."""
    return _decoder(cls, layout)(layout.from_bytes(data))


TAIL_SIZE = 4                   # struct virtio_iommu_req_tail {u8 status; u8 reserved[3];}
_HEAD = (("TYPE", 0, 1), ("HEAD_RESERVED", 1, 3))     # struct virtio_iommu_req_head

# struct virtio_iommu_config (5.13.4); `bypass` is the only field a driver may write
CONFIG_FIELDS = (ConfigField("page_size_mask", 0, 8), ConfigField("input_start", 8, 8),
                 ConfigField("input_end", 16, 8), ConfigField("domain_start", 24, 4),
                 ConfigField("domain_end", 28, 4), ConfigField("probe_size", 32, 4),
                 ConfigField("bypass", 36, 1, writable=True, doc="0 or 1 (VIRTIO_IOMMU_F_BYPASS_CONFIG)"))
CONFIG_SIZE = 40                # bypass is followed by u8 reserved[3]

ATTACH_LAYOUT = byte_layout("virtio_iommu_req_attach", 20, _HEAD + (
    ("DOMAIN", 4, 4), ("ENDPOINT", 8, 4), ("FLAGS", 12, 4), ("RESERVED", 16, 4)))
DETACH_LAYOUT = byte_layout("virtio_iommu_req_detach", 20, _HEAD + (
    ("DOMAIN", 4, 4), ("ENDPOINT", 8, 4), ("RESERVED", 12, 8)))
MAP_LAYOUT = byte_layout("virtio_iommu_req_map", 36, _HEAD + (
    ("DOMAIN", 4, 4), ("VIRT_START", 8, 8), ("VIRT_END", 16, 8), ("PHYS_START", 24, 8), ("FLAGS", 32, 4)))
UNMAP_LAYOUT = byte_layout("virtio_iommu_req_unmap", 28, _HEAD + (
    ("DOMAIN", 4, 4), ("VIRT_START", 8, 8), ("VIRT_END", 16, 8), ("RESERVED", 24, 4)))
PROBE_LAYOUT = byte_layout("virtio_iommu_req_probe", 72, _HEAD + (("ENDPOINT", 4, 4), ("RESERVED", 8, 64)))


def property_layout(name: str, size: int, fields: Iterable[tuple[str, int, int]]) -> Layout:
    """A probe property of `size` bytes: the header `struct virtio_iommu_probe_property` (le16 {type : 12;
    reserved : 4}, written as one 16-bit PROP_TYPE with the reserved bits 0; le16 length) then `fields`."""
    return byte_layout(name, size, (("PROP_TYPE", 0, 2), ("LENGTH", 2, 2), *fields))


RESV_MEM_LAYOUT = property_layout("virtio_iommu_probe_resv_mem", 24, (
    ("SUBTYPE", 4, 1), ("RESERVED", 5, 3), ("START", 8, 8), ("END", 16, 8)))

FAULT_LAYOUT = byte_layout("virtio_iommu_fault", 24, (
    ("REASON", 0, 1), ("RESERVED", 1, 3), ("FLAGS", 4, 4), ("ENDPOINT", 8, 4), ("RESERVED1", 12, 4),
    ("ADDRESS", 16, 8)))

AttachReq = record("AttachReq", ATTACH_LAYOUT)
DetachReq = record("DetachReq", DETACH_LAYOUT)
MapReq = record("MapReq", MAP_LAYOUT)
UnmapReq = record("UnmapReq", UNMAP_LAYOUT)
ProbeReq = record("ProbeReq", PROBE_LAYOUT)
FaultRecord = record("FaultRecord", FAULT_LAYOUT)


def property_bytes(ptype: int, layout: Layout, **values: int) -> bytes:
    """One probe property of a `property_layout`: the header's type and length (the size without the
    header, 5.13.6.7) are filled in here, the reserved bits of the header stay zero."""
    return layout.to_bytes(layout.pack(values, prop_type=ptype, length=layout.nbytes - 4))


def resv_mem_property(subtype: int, start: int, end: int) -> bytes:
    """A RESV_MEM property (5.13.6.8.1): reserved virtual addresses [start; end] of `subtype`."""
    return property_bytes(PROBE_T_RESV_MEM, RESV_MEM_LAYOUT, subtype=subtype, start=start, end=end)


def tail(status: int) -> bytes:
    """struct virtio_iommu_req_tail with `status` and zeroed reserved bytes (5.13.6.2: SHOULD be zero)."""
    return bytes((status, 0, 0, 0))
