"""A hostile virtio-iommu driver: every class of malformed request or ring gives the architectural answer
(a status, a buffer returned unwritten, or the device's error state), never a Python exception, and leaves
every other domain -- and every other VM -- as it was (virtio v1.2 5.13.6, 2.1.2, 2.7)."""
from __future__ import annotations

import pytest

from devmodel.bus import BusError
from devmodel.virtio import Status
from devmodel.virtio.iommu import EndpointMemory
from devmodel.virtio.iommu.device import MAX_REPLY
from devmodel.virtio.iommu.pgtable import INVAL_S_DOMAIN
from devmodel.virtio.ring import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE

from .driver import RAM_BASE, RAM_SIZE
from .iommu_driver import (EP, EP2, FAULT_SIZE, S_FAULT, S_INVAL, S_IOERR, S_NOENT, S_OK, S_RANGE, IommuRig,
                           attach, attach_pgt_arm, invalidate, map_, probe, unmap)
from .test_iommu_pgtable import TCR, TableRig

OUTSIDE = 0x1000
PAGE = 0x1000


@pytest.fixture
def r() -> IommuRig:
    rig = IommuRig().up()
    assert rig.status(attach(1, EP)) == S_OK and rig.status(map_(1, 0x10_0000, 0x10_FFFF, RAM_BASE)) == S_OK
    return rig


def untouched(rig: IommuRig) -> None:
    assert rig.mappings(1) == [(0x10_0000, 0x10_FFFF, RAM_BASE, 3)] and rig.dev.attached[EP] == 1


def chain(rig: IommuRig, segs: list[tuple[int, int, int]]) -> tuple[int, int]:
    """Publish a raw chain of (addr, len, flags) descriptors, kick; the last used element (head, len)."""
    q = rig.reqq
    for i, (a, n, f) in enumerate(segs):
        last = i == len(segs) - 1
        q.put_desc(i, a, n, f | (0 if last else VIRTQ_DESC_F_NEXT), 0 if last else i + 1)
    q.publish(0)
    q.kick()
    return q.used_elem(q.used_idx() - 1)


def broken(rig: IommuRig, reason: str) -> None:
    assert rig.dev.broken and rig.drv.status() & Status.DEVICE_NEEDS_RESET
    assert any(reason in k for k in rig.dev.errors)


def test_request_buffer_outside_ram(r):
    chain(r, [(OUTSIDE, 20, 0), (r.guest.alloc(4, 16), 4, VIRTQ_DESC_F_WRITE)])
    broken(r, "buffer outside guest memory")
    untouched(r)


def test_tail_outside_ram(r):
    chain(r, [(r.guest.buffer(unmap(1, 0x10_0000, 0x10_FFFF)), 28, 0), (OUTSIDE, 4, VIRTQ_DESC_F_WRITE)])
    broken(r, "buffer outside guest memory")
    assert r.mappings(1) == []                            # the request was served; only its reply was lost


def test_looping_chain(r):
    a = r.guest.buffer(attach(2, EP2))
    r.reqq.put_desc(0, a, 20, VIRTQ_DESC_F_NEXT, 1)
    r.reqq.put_desc(1, a, 20, VIRTQ_DESC_F_NEXT, 0)
    r.reqq.publish(0)
    r.reqq.kick()
    broken(r, "loops")
    assert 2 not in r.dev.domains
    untouched(r)


def test_reset_after_an_error_brings_the_device_back(r):
    chain(r, [(OUTSIDE, 20, 0), (r.guest.alloc(4, 16), 4, VIRTQ_DESC_F_WRITE)])
    r.drv.w(0x070, 0)
    assert not r.dev.broken and r.dev.domains == {}
    r.up()
    assert r.status(attach(1, EP)) == S_OK


@pytest.mark.parametrize("readable, writable", [
    (attach(2, EP2), 0),                      # no device-writable part at all: the tail is missing
    (attach(2, EP2), 3),                      # too small for the tail
    (b"", 4),                                 # no head
    (bytes((0xEE, 0, 0, 0)) + bytes(20), 4),  # unknown type
    (attach(2, EP2), MAX_REPLY + 1),          # a device-writable part the device will not fill
])
def test_unparseable_requests_are_returned_unwritten(r, readable, writable):
    assert r.request(readable, writable).len == 0
    assert 2 not in r.dev.domains and not r.dev.broken
    untouched(r)


def test_device_readable_buffer_where_the_device_must_write(r):
    # the whole request, tail included, device-readable: nothing for the device to write into
    used = r.reqq.used_idx()
    assert chain(r, [(r.guest.buffer(attach(2, EP2) + bytes(4)), 24, 0)]) == (0, 0)
    assert r.reqq.used_idx() == used + 1 and 2 not in r.dev.domains


@pytest.mark.parametrize("req", [attach(2, EP2)[:19], map_(1, 0, PAGE - 1, RAM_BASE)[:35], unmap(1, 0, 1)[:10],
                                 probe(EP)[:8]])
def test_requests_too_short_for_their_type_get_ioerr(r, req):
    writable = r.dev.probe_size + 4 if req[0] == 5 else 4
    assert r.status(req, writable) == S_IOERR
    untouched(r)


def test_misplaced_split_of_a_probe(r):
    # properties and tail device-readable, a 4-byte writable part: the properties field is empty -> INVAL
    assert r.status(probe(EP) + bytes(512), 4) == S_INVAL


@pytest.mark.parametrize("req, status", [
    (attach(1, 0xDEAD), S_NOENT), (map_(9, 0, PAGE - 1, RAM_BASE), S_NOENT), (unmap(9, 0, 2**64 - 1), S_NOENT),
    (map_(1, 0x10_8000, 0x11_7FFF, RAM_BASE), S_INVAL),                 # overlaps the mapping
    (map_(1, 2**64 - PAGE, 2**64 + PAGE - 1 & (2**64 - 1), RAM_BASE), S_INVAL),   # wraps: end < start
    (map_(1, 0, PAGE - 1, 2**64 - PAGE), S_FAULT),                      # beyond the guest's memory
    (map_(1, 0, 2 * PAGE - 1, RAM_BASE + RAM_SIZE - PAGE), S_FAULT),    # runs off the end of RAM
    (unmap(1, 0x10_0000, 0x10_7FFF), S_RANGE),                          # would split the mapping
])
def test_hostile_parameters_leave_the_domain_alone(r, req, status):
    assert r.status(req) == status
    untouched(r)


def test_bad_event_buffers_are_returned_and_the_fault_waits(r):
    q = r.evq                                                # up() posted four good buffers
    q.add([bytes(FAULT_SIZE)])                               # device-readable: cannot carry a report
    q.add(in_sizes=[FAULT_SIZE - 1])                         # too small for struct virtio_iommu_fault
    q.add(in_sizes=[FAULT_SIZE])
    for i in range(5):
        assert r.dev.translate(EP, 0x9000_0000 + i * PAGE).reason == 2
    assert [u.len for u in q.used()] == [FAULT_SIZE] * 4 + [0, 0, FAULT_SIZE]
    assert r.dev.errors["bad_event_buffer"] == 2 and not r.dev.broken and not r.dev.pending_events


def test_fault_reports_wait_for_buffers_and_are_bounded():
    rig = IommuRig(max_pending_events=3).up(event_buffers=0)
    for i in range(5):
        rig.dev.report_fault(EP, 2, address=i * PAGE, write=True)
    assert len(rig.dev.pending_events) == 3 and rig.dev.stats["events_dropped"] == 2
    for _ in range(4):
        rig.evq.add(in_sizes=[FAULT_SIZE])
    rig.evq.kick()
    assert [f[3] for f in rig.faults()] == [0, PAGE, 2 * PAGE]
    assert [e["queued"] for e in rig.events("virtio_iommu_report_fault")] == [1, 1, 1]
    assert len(rig.events("virtio_iommu_fault_dropped")) == 2


def test_faults_before_driver_ok_wait():
    rig = IommuRig()
    rig.drv.init()
    rig.reqq, rig.evq = rig.drv.setup_queue(0, 64), rig.drv.setup_queue(1, 16)
    rig.dev.report_fault(EP2, 1, address=0x1234)             # before DRIVER_OK: no buffer may be used
    rig.evq.add(in_sizes=[FAULT_SIZE])
    rig.evq.kick()
    assert rig.evq.used() == [] and len(rig.dev.pending_events) == 1
    rig.drv.driver_ok()
    assert rig.faults() == [(1, 0x100, EP2, 0x1234)]                   # F_ADDRESS only
    rig.dev.report_fault(EP2, 1)
    rig.drv.w(0x070, 0)                                      # a device reset drops what still waits
    assert not rig.dev.pending_events


def test_attach_table_pointing_at_host_memory():
    t = TableRig().up()
    assert t.status(attach_pgt_arm(1, EP, 1, TCR, 1 << 48)) == S_INVAL                   # beyond 48 bits
    assert t.status(attach_pgt_arm(1, EP, 1, TCR, RAM_BASE + RAM_SIZE)) == S_FAULT        # past the VM's RAM
    assert t.dev.domains == {}


def test_another_vms_domains_are_out_of_reach():
    """Two VMs, each with its own device, RAM and backend: the domain IDs one guest uses mean nothing to the
    other's device (NOENT), and nothing one guest sends reaches the other's backend."""
    a, b = TableRig().up(), TableRig().up()
    assert a.guest.bus is not b.guest.bus
    assert a.attach_pgt() == S_OK and a.status(attach(2, EP2)) == S_OK
    assert a.status(map_(2, 0, PAGE - 1, RAM_BASE)) == S_OK
    a.backend.calls.clear()
    assert b.status(invalidate(1, INVAL_S_DOMAIN)) == S_NOENT
    assert b.status(unmap(2, 0, PAGE - 1)) == S_NOENT
    assert b.status(map_(2, 0, PAGE - 1, RAM_BASE)) == S_NOENT
    assert a.mappings(2) == [(0, PAGE - 1, RAM_BASE, 3)] and a.backend.calls == [] and b.backend.calls == []


def test_emulated_dma_fault_is_a_bus_error_and_a_report(r):
    mem = EndpointMemory(r.dev, EP)
    mem.write_bytes(0x10_0FF0, b"x" * 0x20)              # inside the mapping, across a page boundary
    assert r.guest.bus.read_bytes(RAM_BASE + 0xFF0, 0x20) == b"x" * 0x20
    with pytest.raises(BusError):
        mem.write_bytes(0x10_FFF0, b"y" * 0x20)          # runs off the end of the mapping
    assert r.guest.bus.read_bytes(RAM_BASE + 0xFFF0, 0x10) == bytes(0x10)   # nothing written
    assert r.faults()[-1] == (2, 0x102, EP, 0x11_0000)
