"""virtio-mmio transport (virtio v1.2 section 4.2): both register interfaces, the status field and feature
negotiation (2.1, 2.2, 3.1), interrupts, configuration space and generation, empty transports, bad accesses."""
from __future__ import annotations

import pytest

from devmodel.regs import Access
from devmodel.virtio import Status, VirtioConsole, VirtioDevice, VirtioMmio
from devmodel.virtio.config import ConfigField, ConfigSpace
from devmodel.virtio.constants import (F_ANY_LAYOUT, F_EVENT_IDX, F_INDIRECT_DESC, F_NOTIFY_ON_EMPTY,
                                       F_RING_RESET, F_VERSION_1, INT_CONFIG, INT_VRING)
from devmodel.virtio.mmio import LEGACY_REGS, MAGIC_VALUE, MODERN_REGS, VENDOR_ID_QEMU

from .driver import (CONFIG_GENERATION, DEVICE_FEATURES, DEVICE_FEATURES_SEL, DEVICE_ID, DRIVER_FEATURES,
                     GUEST_PAGE_SIZE, INTERRUPT_ACK, INTERRUPT_STATUS, MAGIC, PAGE, QUEUE_ALIGN, QUEUE_DESC_LOW,
                     QUEUE_NOTIFY, QUEUE_NUM, QUEUE_NUM_MAX, QUEUE_PFN, QUEUE_READY, QUEUE_RESET, QUEUE_SEL,
                     SHM_BASE_HIGH, SHM_BASE_LOW, SHM_LEN_HIGH, SHM_LEN_LOW, SHM_SEL, STATUS, VENDOR_ID, VERSION,
                     Guest, MmioDriver, make_rig)

LINUX_MMIO_OFFSETS = {       # include/uapi/linux/virtio_mmio.h
    "MagicValue": 0x000, "Version": 0x004, "DeviceID": 0x008, "VendorID": 0x00c, "DeviceFeatures": 0x010,
    "DeviceFeaturesSel": 0x014, "DriverFeatures": 0x020, "DriverFeaturesSel": 0x024, "QueueSel": 0x030,
    "QueueNumMax": 0x034, "QueueNum": 0x038, "QueueReady": 0x044, "QueueNotify": 0x050,
    "InterruptStatus": 0x060, "InterruptACK": 0x064, "Status": 0x070, "QueueDescLow": 0x080,
    "QueueDescHigh": 0x084, "QueueDriverLow": 0x090, "QueueDriverHigh": 0x094, "QueueDeviceLow": 0x0a0,
    "QueueDeviceHigh": 0x0a4, "SHMSel": 0x0ac, "SHMLenLow": 0x0b0, "SHMLenHigh": 0x0b4, "SHMBaseLow": 0x0b8,
    "SHMBaseHigh": 0x0bc, "QueueReset": 0x0c0, "ConfigGeneration": 0x0fc,
    # legacy (#ifndef VIRTIO_MMIO_NO_LEGACY)
    "HostFeatures": 0x010, "HostFeaturesSel": 0x014, "GuestFeatures": 0x020, "GuestFeaturesSel": 0x024,
    "GuestPageSize": 0x028, "QueueAlign": 0x03c, "QueuePFN": 0x040,
}


def test_register_offsets_are_linuxs():
    for table in (MODERN_REGS, LEGACY_REGS):
        for reg in table:
            assert reg.offset == LINUX_MMIO_OFFSETS[reg.name], reg.name
    assert {r.name for r in MODERN_REGS} - {"HostFeatures"} >= {"QueueReady", "QueueReset", "ConfigGeneration"}
    assert not {"QueueReady", "ConfigGeneration", "SHMSel"} & {r.name for r in LEGACY_REGS}


def test_directions_are_the_spec_tables():
    ro = {"MagicValue", "Version", "DeviceID", "VendorID", "DeviceFeatures", "HostFeatures", "QueueNumMax",
          "InterruptStatus", "SHMLenLow", "SHMLenHigh", "SHMBaseLow", "SHMBaseHigh", "ConfigGeneration"}
    rw = {"QueueReady", "Status", "QueueReset", "QueuePFN"}
    for reg in MODERN_REGS + LEGACY_REGS:
        want = Access.RO if reg.name in ro else Access.RW if reg.name in rw else Access.WO
        assert reg.access is want, reg.name


# -- identification ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy,version", [(True, 1), (False, 2)])
def test_identification(legacy, version):
    t = VirtioMmio(VirtioConsole(Guest().bus), legacy=legacy)
    assert [t.read(o, 4) for o in (MAGIC, VERSION, DEVICE_ID, VENDOR_ID)] == [MAGIC_VALUE, version, 3,
                                                                               VENDOR_ID_QEMU]


@pytest.mark.parametrize("legacy,version", [(True, 1), (False, 2)])
def test_empty_transport_reads_like_qemus(legacy, version):
    t = VirtioMmio(None, legacy=legacy)
    assert [t.read(o, 4) for o in (MAGIC, VERSION, DEVICE_ID, VENDOR_ID)] == [MAGIC_VALUE, version, 0,
                                                                               VENDOR_ID_QEMU]
    for off, v in ((STATUS, 0xF), (QUEUE_SEL, 0), (QUEUE_NUM, 8), (QUEUE_NOTIFY, 0), (0x100, 1)):
        t.write(off, v, 4)
    assert all(t.read(o, 4) == 0 for o in (STATUS, QUEUE_NUM_MAX, DEVICE_FEATURES, INTERRUPT_STATUS,
                                           CONFIG_GENERATION, SHM_LEN_LOW, 0x100, 0x1FC))


# -- features -------------------------------------------------------------------------------------------------
def test_modern_features_show_version1_and_hide_legacy_bits(modern):
    d = modern.drv
    f = d.device_features()
    assert f & F_VERSION_1 and f & F_RING_RESET and f & F_INDIRECT_DESC and f & F_EVENT_IDX
    assert not f & (F_NOTIFY_ON_EMPTY | F_ANY_LAYOUT)
    d.w(DEVICE_FEATURES_SEL, 2)
    assert d.r(DEVICE_FEATURES) == 0                       # bits 64..95: none


def test_legacy_features_are_32_bits_with_the_legacy_ones(legacy):
    d = legacy.drv
    d.w(DEVICE_FEATURES_SEL, 0)
    lo = d.r(DEVICE_FEATURES)
    assert lo & F_NOTIFY_ON_EMPTY and lo & F_ANY_LAYOUT
    d.w(DEVICE_FEATURES_SEL, 1)
    assert d.r(DEVICE_FEATURES) == 0                       # VERSION_1 is not offered to a legacy driver


def test_feature_negotiation_and_features_ok(modern):
    d = modern.drv
    assert d.init(F_VERSION_1 | F_EVENT_IDX) == F_VERSION_1 | F_EVENT_IDX
    assert d.status() == Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK
    dev = modern.console
    assert dev.guest_features == F_VERSION_1 | F_EVENT_IDX and all(q.features == dev.guest_features for q in dev.vqs)
    d.w(0x024, 0)
    d.w(DRIVER_FEATURES, F_INDIRECT_DESC)                  # after FEATURES_OK: ignored (3.1.1)
    d.add_status(Status.FEATURES_OK)
    assert dev.guest_features == F_VERSION_1 | F_EVENT_IDX
    [neg] = modern.rig.events("virtio_set_features")
    assert (neg["features"], neg["accepted"]) == (F_VERSION_1 | F_EVENT_IDX, 1)


class PickyDevice(VirtioDevice):
    device_id = 0x42

    def __init__(self, memory, tracer, log):
        super().__init__(memory, queue_sizes=[8], features=0b11, tracer=tracer, log=log, name="picky")

    def validate_features(self, features):
        return bool(features & 0b10) or not features & 0b01      # feature 0 needs feature 1


def test_validate_features_hook_can_refuse():
    rig = make_rig(PickyDevice)
    assert rig.driver.init(F_VERSION_1 | 0b01) == 0
    assert rig.driver.init(F_VERSION_1 | 0b11) == F_VERSION_1 | 0b11


def test_legacy_features_take_effect_when_written(legacy):
    d = legacy.drv
    d.probe()
    d.write_features(F_EVENT_IDX | (1 << 5))               # bit 5 is not offered: dropped
    assert legacy.console.guest_features == F_EVENT_IDX
    assert any("did not offer" in msg for _, msg in legacy.rig.logs)


# -- status ---------------------------------------------------------------------------------------------------
def test_status_zero_resets_the_device(console):
    rx, tx = console.up()
    console.drv.w(QUEUE_SEL, 1)
    tx.add([b"x"])
    tx.kick()
    assert console.drv.r(INTERRUPT_STATUS) == INT_VRING and console.t.irq_level == 1
    console.drv.w(STATUS, 0)
    dev = console.console
    assert dev.status == 0 and dev.guest_features == 0 and dev.isr == 0 and console.t.irq_level == 0
    assert not any(q.ready for q in dev.vqs) and console.t.regs["QueueSel"] == 0
    assert console.rig.irqs[-2:] == [1, 0] and console.rig.events("virtio_reset")


def test_device_needs_reset_belongs_to_the_device(modern):
    d = modern.drv
    d.init()
    d.w(STATUS, d.status() | Status.DEVICE_NEEDS_RESET)
    assert not d.status() & Status.DEVICE_NEEDS_RESET
    modern.console.error("test")
    d.w(STATUS, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK)   # cannot clear it either
    assert d.status() & Status.DEVICE_NEEDS_RESET


def test_clearing_status_bits_is_logged(modern):
    d = modern.drv
    d.init()
    d.w(STATUS, Status.ACKNOWLEDGE)
    assert d.status() == Status.ACKNOWLEDGE
    assert any("cleared status bits" in msg for _, msg in modern.rig.logs)


def test_modern_device_consumes_nothing_before_driver_ok(modern):
    d = modern.drv
    d.init()
    d.setup_queue(0)
    tx = d.setup_queue(1)
    tx.add([b"3q"])
    tx.kick()
    assert modern.out == b"" and modern.rig.events("virtio_queue_notify")[-1]["handled"] == 0
    d.driver_ok()
    tx.kick()
    assert modern.out == b"3q" and modern.testdev.exit_status == 7


def test_legacy_device_works_before_driver_ok(legacy):
    """kvm-unit-tests never writes the status (spec 3.1.2 allows it on the legacy interface)."""
    d = legacy.drv
    d.probe()
    d.setup_queue(0, 128)
    tx = d.setup_queue(1, 128)
    tx.add([b"hi"])
    tx.kick()
    assert legacy.out == b"hi" and d.status() == 0


# -- queues ---------------------------------------------------------------------------------------------------
def test_queue_num_max_and_missing_queues(console):
    d = console.drv
    for q, want in ((0, 1024), (63, 1024), (64, 0), (0xFFFF_FFFF, 0)):
        d.w(QUEUE_SEL, q)
        assert d.r(QUEUE_NUM_MAX) == want


def test_modern_queue_ready_and_release(modern):
    d = modern.drv
    d.init()
    q = d.setup_queue(1, 8)
    d.w(QUEUE_SEL, 1)
    assert d.r(QUEUE_READY) == 1
    d.w(QUEUE_NUM, 4)                                       # ignored while ready
    d.w(QUEUE_DESC_LOW, 0)
    assert modern.console.vqs[1].num == 8 and sum("while it is enabled" in m for _, m in modern.rig.logs) == 2
    d.w(QUEUE_READY, 0)
    assert d.r(QUEUE_READY) == 0 and not modern.console.vqs[1].ready
    d.w(QUEUE_READY, 1)                                     # re-enable: indices start again
    assert d.r(QUEUE_READY) == 1 and modern.console.vqs[1].last_avail_idx == 0
    assert q.index == 1


def test_queue_reset_needs_ring_reset(modern):
    d = modern.drv
    d.init(F_VERSION_1)
    d.setup_queue(0, 8)
    d.w(QUEUE_RESET, 1)
    assert modern.console.vqs[0].ready and d.r(QUEUE_RESET) == 0
    rig2 = type(modern)(legacy=False)
    d2 = rig2.drv
    d2.init(F_VERSION_1 | F_RING_RESET)
    rx = d2.setup_queue(0, 8)
    rx.add([], [4])
    rig2.console.vqs[0].pop()
    d2.w(QUEUE_SEL, 0)
    d2.w(QUEUE_RESET, 1)
    vq = rig2.console.vqs[0]
    assert d2.r(QUEUE_RESET) == 0 and d2.r(QUEUE_READY) == 0 and vq.inflight == 0 and vq.last_avail_idx == 0


def test_legacy_queue_pfn_layout_and_release(legacy):
    d = legacy.drv
    g = legacy.rig.guest
    d.probe()
    base = g.alloc(3 * PAGE, PAGE)
    d.w(QUEUE_SEL, 1)
    d.w(QUEUE_NUM, 128)
    d.w(QUEUE_ALIGN, PAGE)
    d.w(QUEUE_PFN, base // PAGE)
    vq = legacy.console.vqs[1]
    assert d.r(QUEUE_PFN) == base // PAGE
    assert (vq.addrs.desc, vq.addrs.avail, vq.addrs.used) == (base, base + 2048, base + PAGE)
    d.w(QUEUE_PFN, 0)
    assert d.r(QUEUE_PFN) == 0 and not vq.ready


def test_legacy_guest_page_size(legacy):
    d = legacy.drv
    for size, shift in ((4096, 12), (65536, 16), (0x3000, 12), (0, 0)):
        d.w(GUEST_PAGE_SIZE, size)
        assert legacy.t.page_shift == shift
    assert [r["shift"] for r in legacy.rig.events("virtio_mmio_guest_page")] == [12, 16, 12, 0]


def test_notify_for_a_missing_queue_is_ignored(modern):
    modern.up()
    modern.drv.w(QUEUE_NOTIFY, 64)
    assert any("does not exist" in m for _, m in modern.rig.logs)


# -- interrupts -----------------------------------------------------------------------------------------------
def test_interrupt_status_ack_and_irq_line(console):
    rx, tx = console.up()
    tx.add([b"a"])
    tx.kick()
    assert console.drv.r(INTERRUPT_STATUS) == INT_VRING and console.rig.irqs == [1]
    console.drv.w(INTERRUPT_ACK, INT_CONFIG)               # acknowledging another bit leaves it set
    assert console.drv.r(INTERRUPT_STATUS) == INT_VRING
    assert console.drv.ack() == INT_VRING and console.rig.irqs == [1, 0]
    assert [r["level"] for r in console.rig.events("virtio_mmio_setting_irq")] == [1, 0]


def test_configuration_change_notification_and_generation(modern):
    dev = modern.console
    d = modern.drv
    d.init()
    gen = d.r(CONFIG_GENERATION)
    dev.config.set("cols", 80)
    assert d.r(CONFIG_GENERATION) != gen and dev.isr == 0   # no notification before DRIVER_OK
    d.driver_ok()
    gen = d.r(CONFIG_GENERATION)
    dev.config.set("rows", 25)
    assert d.r(CONFIG_GENERATION) != gen and d.r(INTERRUPT_STATUS) == INT_CONFIG
    dev.config.set("rows", 25)                              # no change, no new generation
    assert [r["generation"] for r in modern.rig.events("virtio_notify_config")] == [d.r(CONFIG_GENERATION)]


# -- configuration space and access rules ---------------------------------------------------------------------
def test_config_space_accesses(console):
    d = console.drv
    assert d.config(4, 4) == 31 and d.config(4, 1) == 31 and d.config(5, 1) == 0 and d.config(0, 2) == 0
    assert d.config(12, 1) == 0xFF and d.config(10, 4) == 0xFFFF_0000    # past the 12 bytes: 0xff
    assert d.config(0x100 - 4, 4) == 0xFFFF_FFFF
    d.set_config(4, 99, 4)                                  # max_nr_ports is read-only to the driver
    assert d.config(4, 4) == 31
    assert d.r(0x100, 8) == 31 << 32                         # a 64-bit access is two 32-bit ones


def test_config_space_declaration_rejects_overlaps():
    with pytest.raises(ValueError):
        ConfigSpace([ConfigField("a", 0, 4), ConfigField("b", 2, 2)])
    with pytest.raises(ValueError):
        ConfigSpace([ConfigField("a", 0, 3)])


@pytest.mark.parametrize("kind,offset,size,why", [
    ("read", DEVICE_ID, 1, "not a 32-bit aligned access"),
    ("read", DEVICE_ID + 2, 4, "not a 32-bit aligned access"),
    ("read", 0x0F0, 4, "no register here"),
    ("read", QUEUE_NOTIFY, 4, "QueueNotify is write-only"),
    ("write", MAGIC, 4, "MagicValue is read-only"),
    ("write", 0x100, 8 + 1, "configuration space takes 1, 2 or 4 bytes"),
])
def test_bad_accesses_are_raz_wi_and_reported(modern, kind, offset, size, why):
    d = modern.drv
    d.init()
    if kind == "read":
        assert d.r(offset, size) == 0
    else:
        d.w(offset, 0xFFFF_FFFF, size)
        assert d.r(MAGIC) == MAGIC_VALUE
    [bad] = modern.rig.events("virtio_mmio_bad_access")
    assert (bad["kind"], bad["offset"], bad["size"], bad["why"]) == (kind, offset, size, why)
    assert modern.t.bad_accesses == 1 and modern.console.status == d.status()


@pytest.mark.parametrize("legacy,offset", [(True, QUEUE_READY), (True, CONFIG_GENERATION), (False, QUEUE_PFN),
                                           (False, GUEST_PAGE_SIZE), (False, QUEUE_ALIGN)])
def test_other_interfaces_registers_are_absent(legacy, offset):
    rig = make_rig(lambda m, tr, log: VirtioConsole(m, tracer=tr, log=log), legacy=legacy)
    rig.transport.write(offset, 0x1234, 4)
    assert rig.transport.read(offset, 4) == 0
    assert [r["why"] for r in rig.events("virtio_mmio_bad_access")] == ["no register here"] * 2


def test_shared_memory_registers_say_no_region(modern):
    d = modern.drv
    d.w(SHM_SEL, 0)
    assert [d.r(o) for o in (SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH)] == [0xFFFF_FFFF] * 4


def test_mmio_reads_and_writes_are_traced(modern):
    modern.drv.r(MAGIC)
    modern.drv.w(QUEUE_SEL, 3)
    [rd] = modern.rig.events("virtio_mmio_read")
    [wr] = modern.rig.events("virtio_mmio_write")
    assert (rd["offset"], rd["value"], wr["offset"], wr["value"]) == (MAGIC, MAGIC_VALUE, QUEUE_SEL, 3)


def test_transport_power_on_reset(legacy):
    d = legacy.drv
    d.probe()
    d.setup_queue(0, 16)
    legacy.t.reset()
    assert legacy.t.page_shift == 0 and not legacy.console.vqs[0].ready and d.r(QUEUE_PFN) == 0


def test_driver_helper_probe_rejects_empty_slots():
    assert MmioDriver(VirtioMmio(None), Guest()).probe() == 0
