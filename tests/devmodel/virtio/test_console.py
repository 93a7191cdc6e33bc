"""virtio console (virtio v1.2 section 5.3) as QEMU 7.2's virtio-serial-device + virtconsole: identity,
configuration, queues, port 0 data in both directions, emergency write, the multiport control protocol, and
kvm-unit-tests' chr-testdev sequence register by register."""
from __future__ import annotations

from devmodel.virtio import ChrTestdev, VirtioConsole, VirtioMmio
from devmodel.virtio.console import (CONSOLE_CONFIG, CONSOLE_PORT, CONTROL_LAYOUT, DEVICE_ADD, DEVICE_READY,
                                     PORT_NAME, PORT_OPEN, PORT_READY, VIRTIO_CONSOLE_F_EMERG_WRITE,
                                     VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_F_SIZE, port_queues)
from devmodel.virtio.constants import F_VERSION_1, VIRTIO_ID_CONSOLE

from .conftest import ConsoleRig
from .driver import (DEVICE_ID, GUEST_PAGE_SIZE, MAGIC, QUEUE_ALIGN, QUEUE_NOTIFY, QUEUE_NUM, QUEUE_NUM_MAX,
                     QUEUE_PFN, QUEUE_SEL, Guest, make_rig)

ALL = 2**64 - 1
NO_MULTIPORT = ALL & ~VIRTIO_CONSOLE_F_MULTIPORT


def control(pid: int, event: int, value: int) -> bytes:
    return CONTROL_LAYOUT.to_bytes(CONTROL_LAYOUT.pack(id=pid, event=event, value=value))


def decode(buf: bytes) -> tuple[int, int, int, bytes]:
    m = CONTROL_LAYOUT.unpack(CONTROL_LAYOUT.from_bytes(buf[:8]))
    return m["id"], m["event"], m["value"], buf[8:]


def test_identity_features_and_config():
    con = VirtioConsole(Guest().bus)
    assert con.device_id == VIRTIO_ID_CONSOLE == 3
    assert con.host_features & VIRTIO_CONSOLE_F_MULTIPORT and con.host_features & VIRTIO_CONSOLE_F_EMERG_WRITE
    assert not con.host_features & VIRTIO_CONSOLE_F_SIZE
    assert (con.config["cols"], con.config["rows"], con.config["max_nr_ports"], con.config.size) == (0, 0, 31, 12)
    assert [f.offset for f in CONSOLE_CONFIG] == [0, 2, 4, 8]      # struct virtio_console_config
    assert len(con.vqs) == 64 and {q.num_max for q in con.vqs} == {1024}
    assert port_queues(0) == (0, 1) and port_queues(1) == (4, 5) and port_queues(30) == (62, 63)
    small = VirtioConsole(Guest().bus, max_ports=1, emergency_write=False)
    assert len(small.vqs) == 4 and small.config.size == 8
    assert not small.host_features & (VIRTIO_CONSOLE_F_MULTIPORT | VIRTIO_CONSOLE_F_EMERG_WRITE)


def test_port0_output_reaches_the_backend(console):
    rx, tx = console.up()
    tx.add([b"hello, ", b"world"])
    tx.add([b"!"])
    tx.kick()
    assert console.out == b"hello, world!"
    assert [u.len for u in tx.used()] == [0, 0]
    flushed = console.rig.events("virtio_console_flush_buf")
    assert [(r["port"], r["len"]) for r in flushed] == [(0, 12), (0, 1)]
    [n] = console.rig.events("virtio_notify")
    assert n["queue"] == 1


def test_transmitq_of_a_port_that_does_not_exist_is_discarded(modern):
    d = modern.drv
    d.init()
    q = d.setup_queue(5)                                     # port 1's transmitq
    d.driver_ok()
    q.add([b"nobody"])
    q.kick()
    assert modern.out == b"" and q.used()[0].len == 0


def test_input_waits_for_the_guest_to_open_the_port(modern):
    d = modern.drv
    con = modern.console
    assert d.init(NO_MULTIPORT)
    rx, tx = d.setup_queue(0), d.setup_queue(1)
    rx.add([], [4])
    rx.add([], [4])
    assert con.write_to_guest(b"early") == 0                # DRIVER_OK not set yet
    d.driver_ok()                                            # without MULTIPORT, DRIVER_OK opens port 0
    assert con.ports[0].guest_connected
    assert con.write_to_guest(b"abcdefghij") == 8           # what the posted buffers hold
    assert [u.data for u in rx.used()] == [b"abcd", b"efgh"]
    assert con.write_to_guest(b"more") == 0                  # no buffer left
    [full, empty] = modern.rig.events("virtio_console_chr_read")      # (none while the port was closed)
    assert (full["len"], full["written"], empty["written"]) == (10, 8, 0)


def test_emergency_write(console):
    d = console.drv
    d.probe()                                                # no feature negotiation needed (5.3.5.1)
    d.set_config(8, ord("E"), 4)
    d.set_config(8, 0, 4)                                    # zero: nothing to write
    d.set_config(8, 0x1_00, 4)                               # non-zero field, low byte 0: a NUL byte
    d.set_config(0, 80, 2)                                   # other fields: no emergency write
    assert console.out == b"E\x00"
    assert [r["ch"] for r in console.rig.events("virtio_console_emerg_write")] == [0x45, 0]


def test_emergency_write_not_offered():
    out = bytearray()
    rig = make_rig(lambda m, tr, log: VirtioConsole(m, out.extend, emergency_write=False, tracer=tr, log=log))
    rig.driver.set_config(8, ord("E"), 4)
    assert out == b"" and rig.driver.config(8, 4) == 0xFFFF_FFFF


class Multiport:
    """A driver that negotiated MULTIPORT: control queues 2 (receiveq) and 3 (transmitq) set up."""

    def __init__(self, c: ConsoleRig, buffers: int = 4):
        self.c = c
        d = c.drv
        assert d.init(F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT) & VIRTIO_CONSOLE_F_MULTIPORT
        self.rx, self.tx = d.setup_queue(0), d.setup_queue(1)
        self.crx, self.ctx = d.setup_queue(2), d.setup_queue(3)
        d.driver_ok()
        for _ in range(buffers):
            self.crx.add([], [32])
        self.crx.kick()

    def send(self, *msgs: bytes) -> list[tuple[int, int, int, bytes]]:
        for m in msgs:
            self.ctx.add([m])
        self.ctx.kick()
        assert all(u.len == 0 for u in self.ctx.used())
        return [decode(u.data) for u in self.crx.used()]


def test_multiport_bring_up_follows_the_spec_protocol(modern):
    mp = Multiport(modern)
    assert mp.send(control(0xFFFF_FFFF, DEVICE_READY, 1)) == [(0, DEVICE_ADD, 1, b"")]
    assert mp.send(control(0, PORT_READY, 1)) == [(0, CONSOLE_PORT, 1, b""), (0, PORT_OPEN, 1, b"")]
    con = modern.console
    assert not con.ports[0].guest_connected
    mp.send(control(0, PORT_OPEN, 1))
    assert con.ports[0].guest_connected
    mp.rx.add([], [8])
    assert con.write_to_guest(b"to guest") == 8
    msgs = [(r["event"], r["port"]) for r in modern.rig.events("virtio_serial_handle_control_message")]
    assert msgs == [(DEVICE_READY, 0xFFFF_FFFF), (PORT_READY, 0), (PORT_OPEN, 0)]


def test_named_port_gets_its_name_without_nul():
    c = ConsoleRig(legacy=False, port_name="org.qemu.console.0")
    mp = Multiport(c)
    mp.send(control(0, DEVICE_READY, 1))
    replies = mp.send(control(0, PORT_READY, 1))
    assert (0, PORT_NAME, 1, b"org.qemu.console.0") in replies


def test_control_messages_wait_for_receive_buffers(modern):
    mp = Multiport(modern, buffers=0)
    assert mp.send(control(0, DEVICE_READY, 1)) == []
    [ev] = modern.rig.events("virtio_serial_send_control_event")
    assert (ev["event"], ev["sent"]) == (DEVICE_ADD, 0) and len(modern.console.pending_control) == 1
    mp.crx.add([], [32])
    mp.crx.kick()
    assert [decode(u.data)[:3] for u in mp.crx.used()] == [(0, DEVICE_ADD, 1)]


def test_bad_control_messages_are_counted_not_fatal(modern):
    mp = Multiport(modern)
    mp.crx.add([], [4])                                       # too small for any message (after the 4 posted)
    assert mp.send(control(7, PORT_READY, 1), b"short") == []
    con = modern.console
    assert con.errors["unknown_port"] == 1 and con.errors["short_control"] == 1 and not con.broken
    mp.send(control(0, DEVICE_READY, 0), control(0, PORT_READY, 0))    # driver failures: logged only
    assert sum("failed to add" in m for _, m in modern.rig.logs) == 2


def test_status_without_driver_ok_closes_the_guest_side(modern):
    modern.up(NO_MULTIPORT)
    assert modern.console.ports[0].guest_connected
    modern.drv.w(0x070, 0x3)
    assert not modern.console.ports[0].guest_connected


def test_kvm_unit_tests_chr_testdev_sequence():
    """lib/virtio-mmio.c + lib/chr-testdev.c, register by register: probe (magic, DeviceID), GuestPageSize,
    queues 0 and 1 with QueueNum 128 / QueueAlign 4096 / QueuePFN, no status writes, then "%dq" on the
    transmitq and a poll of the used ring."""
    guest = Guest()
    codes = []
    testdev = ChrTestdev(on_exit=codes.append)
    t = VirtioMmio(VirtioConsole(guest.bus, testdev.write))          # legacy: QEMU's default
    assert t.read(MAGIC, 4) == 0x74726976 and t.read(DEVICE_ID, 4) == 3
    t.write(GUEST_PAGE_SIZE, 4096, 4)
    rings = []
    for index in (0, 1):
        pages = guest.alloc(2 * 4096)
        t.write(QUEUE_SEL, index, 4)
        assert t.read(QUEUE_NUM_MAX, 4) >= 128 and t.read(QUEUE_PFN, 4) == 0
        t.write(QUEUE_NUM, 128, 4)
        t.write(QUEUE_ALIGN, 4096, 4)
        t.write(QUEUE_PFN, pages >> 12, 4)
        rings.append(pages)
    desc, avail, used = rings[1], rings[1] + 128 * 16, rings[1] + 4096          # vring_init
    buf = guest.buffer(b"2q")
    guest.bus.write_bytes(desc, buf.to_bytes(8, "little") + (2).to_bytes(4, "little") + bytes(4))
    guest.w16(avail + 4, 0)
    guest.w16(avail + 2, 1)
    t.write(QUEUE_NOTIFY, 1, 4)
    assert guest.r16(used + 2) == 1 and guest.r32(used + 4) == 0              # virtqueue_get_buf
    assert codes == [2] and testdev.exit_status == 5
