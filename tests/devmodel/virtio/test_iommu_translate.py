"""The device's own translation of emulated endpoints (virtio v1.2 5.13.6: "virtual IOMMU managing emulated
and paravirtualized devices"), in the order QEMU's `virtio_iommu_translate` checks, with the fault reports of
5.13.6.9 -- and a virtio console whose DMA goes through it (`EndpointMemory`)."""
from __future__ import annotations

import pytest

from devmodel.virtio import VirtioConsole, VirtioMmio
from devmodel.virtio.iommu import EndpointMemory, FaultReason, TranslateFault

from .driver import RAM_BASE, MmioDriver
from .iommu_driver import EP, EP2, MSI_BASE, S_OK, IommuRig, attach, detach, map_, unmap

PAGE = 0x1000


@pytest.fixture
def r() -> IommuRig:
    return IommuRig(boot_bypass=False).up()


@pytest.mark.parametrize("setup, endpoint, iova, write, reason, flags", [
    ([], 0x77, 0x1000, False, FaultReason.UNKNOWN, 0x101),                  # no such endpoint
    ([], EP2, 0x1000, True, FaultReason.DOMAIN, 0x102),                     # unattached, bypass = 0
    ([attach(1, EP2)], EP2, 0x1000, False, FaultReason.MAPPING, 0x101),     # not mapped
    ([attach(1, EP2), map_(1, 0, PAGE - 1, RAM_BASE, 1)], EP2, 0x10, True, FaultReason.MAPPING, 0x102),
    ([attach(1, EP2), map_(1, 0, PAGE - 1, RAM_BASE, 2)], EP2, 0x10, False, FaultReason.MAPPING, 0x101),
])
def test_faults_are_reported_with_reason_flags_endpoint_address(r, setup, endpoint, iova, write, reason, flags):
    assert [r.status(s) for s in setup] == [S_OK] * len(setup)
    out = r.dev.translate(endpoint, iova, write=write)
    assert isinstance(out, TranslateFault) and (out.reason, out.flags) == (reason, flags)
    assert r.faults() == [(int(reason), flags, endpoint, iova)]
    ev = r.events("virtio_iommu_report_fault")[-1]
    assert (ev["reason"], ev["flags"], ev["endpoint"], ev["address"], ev["queued"]) == (reason, flags, endpoint,
                                                                                          iova, 0)


def test_exec_flag_and_silent_translation(r):
    r.dev.report_fault(EP, FaultReason.MAPPING, address=0x4000, exec_=True)
    assert r.faults() == [(2, 0x104, EP, 0x4000)]
    assert isinstance(r.dev.translate(EP2, 0, report=False), TranslateFault) and r.faults() == []


def test_order_msi_window_before_domain(r):
    assert r.dev.translate(EP, MSI_BASE + 0x40, write=True) == MSI_BASE + 0x40   # unattached, still 1:1
    assert r.status(attach(1, EP)) == S_OK
    assert r.dev.translate(EP, MSI_BASE + 0x40, write=True) == MSI_BASE + 0x40


def test_detach_cuts_the_endpoint_off_at_once(r):
    assert r.status(attach(1, EP2)) == S_OK and r.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_OK
    assert r.dev.translate(EP2, 0x80) == RAM_BASE + 0x80
    assert r.status(detach(1, EP2)) == S_OK
    assert r.dev.translate(EP2, 0x80).reason == FaultReason.DOMAIN
    ev = r.events("virtio_iommu_translate_out")[0]
    assert (ev["endpoint"], ev["iova"], ev["pa"]) == (EP2, 0x80, RAM_BASE + 0x80)


def test_a_virtio_console_behind_the_iommu():
    """The console's rings and buffers are reached through its endpoint: mapped 1:1 over the driver's memory
    it works; once the guest unmaps that memory its DMA faults, the console enters its error state and the
    IOMMU reports the fault."""
    r = IommuRig().up()
    out = bytearray()
    console = VirtioConsole(EndpointMemory(r.dev, EP2), out.extend)
    transport = VirtioMmio(console, legacy=False)
    drv = MmioDriver(transport, r.guest)
    window = (r.guest.next + PAGE - 1) & ~(PAGE - 1), 0x10_0000
    assert r.status(attach(1, EP2)) == S_OK
    assert r.status(map_(1, window[0], window[0] + window[1] - 1, window[0])) == S_OK
    r.guest.next = window[0]
    assert drv.init(1 << 32)
    rx, tx = drv.setup_queue(0, 8), drv.setup_queue(1, 8)
    drv.driver_ok()
    tx.add([b"hello"])
    tx.kick()
    assert bytes(out) == b"hello" and [u.len for u in tx.used()] == [0]
    assert r.status(unmap(1, window[0], window[0] + window[1] - 1)) == S_OK
    tx.add([b"lost"])
    tx.kick()
    assert bytes(out) == b"hello" and console.broken
    assert r.faults()[0][:3] == (FaultReason.MAPPING, 0x101, EP2)
