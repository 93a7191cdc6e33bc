"""A virtio-iommu driver in Python for the device tests, the way Linux's drivers/iommu/virtio-iommu.c talks
to the device: each request is one buffer split in two descriptors, the device-readable request and the
device-writable tail (for PROBE: probe_size bytes of properties and the tail); event buffers of
`struct virtio_iommu_fault` size wait on the eventq.

Requests are packed here with `struct`, from the spec's C declarations (virtio v1.2 5.13.6 and the
page-table RFC's), independently of the device's layouts, so a wrong offset cannot pass on both sides.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from devmodel.virtio.constants import F_VERSION_1
from devmodel.virtio.iommu import Endpoint, ResvMem, VirtioIommu

from .driver import RAM_BASE, RAM_SIZE, Guest, Rig, Used, make_rig

T_ATTACH, T_DETACH, T_MAP, T_UNMAP, T_PROBE, T_ATTACH_TABLE, T_INVALIDATE = 1, 2, 3, 4, 5, 6, 7
S_OK, S_IOERR, S_UNSUPP, S_DEVERR, S_INVAL, S_RANGE, S_NOENT, S_FAULT, S_NOMEM = range(9)
MSI_BASE, MSI_SIZE = 0x0800_0000, 0x10_0000       # Linux's software MSI window (MSI_IOVA_BASE/LENGTH)
EP, EP2, EP3 = 0x8, 0x10, 0x18
FAULT_SIZE = 24


def attach(domain: int, endpoint: int, flags: int = 0, reserved: bytes = bytes(4)) -> bytes:
    return struct.pack("<B3xIII", T_ATTACH, domain, endpoint, flags) + reserved


def detach(domain: int, endpoint: int, reserved: bytes = bytes(8)) -> bytes:
    return struct.pack("<B3xII", T_DETACH, domain, endpoint) + reserved


def map_(domain: int, virt_start: int, virt_end: int, phys: int, flags: int = 3) -> bytes:
    return struct.pack("<B3xIQQQI", T_MAP, domain, virt_start, virt_end, phys, flags)


def unmap(domain: int, virt_start: int, virt_end: int, reserved: bytes = bytes(4)) -> bytes:
    return struct.pack("<B3xIQQ", T_UNMAP, domain, virt_start, virt_end) + reserved


def probe(endpoint: int) -> bytes:
    return struct.pack("<B3xI", T_PROBE, endpoint) + bytes(64)


def attach_pgt_arm(domain: int, endpoint: int, asid: int, tcr: int, ttbr0: int, ttbr1: int = 0, mair: int = 0,
                   fmt: int = 1, reserved: bytes = bytes(28)) -> bytes:
    """struct virtio_iommu_req_attach_pgt_arm (80 bytes with its tail)."""
    return struct.pack("<B3xIIHHQQQQ", T_ATTACH_TABLE, domain, endpoint, fmt, asid, tcr, ttbr0, ttbr1,
                       mair) + reserved


def attach_pst_arm(domain: int, endpoint: int, s1contextptr: int, s1cdmax: int = 0, s1fmt: int = 0,
                   s1dss: int = 0, fmt: int = 2, reserved: bytes = bytes(48)) -> bytes:
    return struct.pack("<B3xIIHBBQI", T_ATTACH_TABLE, domain, endpoint, fmt, s1fmt, s1dss, s1contextptr,
                       s1cdmax) + reserved


def invalidate(domain: int, scope: int, flags: int = 0, pasid: int = 0, asid: int = 0, virt_start: int = 0,
               nr_pages: int = 0, granule: int = 0, reserved: bytes = bytes(19)) -> bytes:
    return struct.pack("<B3xHHIIQQQB", T_INVALIDATE, scope, flags, domain, pasid, asid, virt_start, nr_pages,
                       granule) + reserved


def parse_properties(data: bytes) -> list[tuple[int, bytes]]:
    """(type, value) of each property up to the NONE terminator, as Linux's viommu_probe_endpoint walks."""
    out, cur = [], 0
    while cur + 4 <= len(data):
        ptype, length = struct.unpack_from("<HH", data, cur)
        if ptype & 0xFFF == 0:
            break
        out.append((ptype & 0xFFF, data[cur + 4:cur + 4 + length]))
        cur += 4 + length
    return out


def parse_fault(data: bytes) -> tuple[int, int, int, int]:
    """(reason, flags, endpoint, address) of a struct virtio_iommu_fault."""
    reason, flags, endpoint, address = struct.unpack("<B3xIIxxxxQ", data)
    return reason, flags, endpoint, address


@dataclass
class Reply:
    len: int
    data: bytes

    @property
    def status(self) -> int | None:
        """The tail's status, None when the device returned the buffer unwritten (used length 0)."""
        return self.data[-4] if self.len else None


class IommuRig:
    """A VirtioIommu on a Version 2 transport with guest RAM, and a driver for it."""

    def __init__(self, endpoints=None, *, legacy: bool = False, **device_kw):
        if endpoints is None:
            endpoints = [Endpoint(EP, (ResvMem(1, MSI_BASE, MSI_BASE + MSI_SIZE - 1),)), Endpoint(EP2),
                         Endpoint(EP3)]
        device_kw.setdefault("phys_ranges", [(RAM_BASE, RAM_SIZE)])
        self.rig: Rig = make_rig(lambda mem, tracer, log: VirtioIommu(mem, endpoints, tracer=tracer, log=log,
                                                                      **device_kw), legacy=legacy)
        self.dev: VirtioIommu = self.rig.device
        self.drv = self.rig.driver
        self.guest: Guest = self.rig.guest
        self.reqq = self.evq = None
        self.features = 0

    def up(self, wanted: int | None = None, event_buffers: int = 4):
        """Linux's viommu_probe: features, both queues, DRIVER_OK, event buffers (viommu_fill_evtq)."""
        self.features = self.drv.init(wanted if wanted is None else wanted | F_VERSION_1)
        self.reqq, self.evq = self.drv.setup_queue(0, 64), self.drv.setup_queue(1, 16)
        self.drv.driver_ok()
        for _ in range(event_buffers):
            self.evq.add(in_sizes=[FAULT_SIZE])
        self.evq.kick()
        return self

    def request(self, readable: bytes, writable: int = 4) -> Reply:
        self.reqq.add([readable] if readable else [], [writable] if writable else [])
        self.reqq.kick()
        used = self.reqq.used()
        assert len(used) == 1, used
        return Reply(used[0].len, used[0].data)

    def status(self, readable: bytes, writable: int = 4) -> int | None:
        return self.request(readable, writable).status

    def probe(self, endpoint: int) -> Reply:
        return self.request(probe(endpoint), self.dev.probe_size + 4)

    def faults(self) -> list[tuple[int, int, int, int]]:
        """Fault reports the device published, each buffer given back (Linux viommu_event_handler)."""
        out = []
        for u in self.evq.used():
            assert u.len == FAULT_SIZE
            out.append(parse_fault(u.data))
            self.evq.add(in_sizes=[FAULT_SIZE])
        if out:
            self.evq.kick()
        return out

    def events(self, *names: str):
        return self.rig.events(*names)

    def mappings(self, domain: int) -> list[tuple[int, int, int, int]]:
        return [(m.start, m.end, m.phys, m.flags) for m in self.dev.domains[domain].mappings]


def used_of(u: Used) -> Reply:
    return Reply(u.len, u.data)
