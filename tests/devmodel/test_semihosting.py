"""Semihosting (devmodel/semihosting.py): operations of "Semihosting for AArch32 and AArch64" chapter 6."""
import struct

from devmodel.bus import Bus
from devmodel.semihosting import ADP_STOPPED_APPLICATION_EXIT, Semihosting, SysOp


def setup():
    bus = Bus()
    bus.add_ram(0x4000_0000, 0x10000)
    out, log = [], []
    sh = Semihosting(lambda data, stream: out.append((stream, data)), clock=lambda: 2_500_000_000,
                     log=lambda c, m: log.append((c, m)))
    return bus, sh, out, log


def test_numbers():
    assert SysOp.SYS_WRITEC == 3 and SysOp.SYS_WRITE0 == 4 and SysOp.SYS_EXIT == 0x18
    assert SysOp.SYS_EXIT_EXTENDED == 0x20 and ADP_STOPPED_APPLICATION_EXIT == 0x20026


def test_writec_write0_write():
    bus, sh, out, _ = setup()
    bus.write_bytes(0x4000_0000, b"Az\0")
    assert sh.call(3, 0x4000_0000, bus).ret == 0xDEADBEEF      # X0 "corrupted": QEMU's common_semi_dead_cb
    sh.call(4, 0x4000_0000, bus)
    h = bus.write_bytes(0x4000_0100, b":tt\0")
    bus.write_bytes(0x4000_0200, struct.pack("<3Q", 0x4000_0100, 8, 3))    # append mode -> stderr
    handle = sh.call(1, 0x4000_0200, bus).ret
    bus.write_bytes(0x4000_0300, struct.pack("<3Q", handle, 0x4000_0000, 2))
    assert sh.call(5, 0x4000_0300, bus).ret == 0
    assert out == [(1, b"A"), (1, b"Az"), (2, b"Az")]


def test_exit_and_exit_extended_status():
    bus, sh, _, log = setup()
    bus.write_bytes(0x4000_0000, struct.pack("<2Q", ADP_STOPPED_APPLICATION_EXIT, 7))
    r = sh.call(0x18, 0x4000_0000, bus)
    assert r.ret is None and r.exit_status == 7
    assert sh.call(0x20, 0x4000_0000, bus).exit_status == 7
    bus.write_bytes(0x4000_0000, struct.pack("<2Q", 0x20023, 0))      # RunTimeErrorUnknown -> 1
    assert sh.call(0x18, 0x4000_0000, bus).exit_status == 1
    assert log and log[0][0] == "guest_errors"


def test_clock_is_virtual_and_errors_are_values():
    bus, sh, _, log = setup()
    assert sh.call(0x10, 0, bus).ret == 250                   # centiseconds of 2.5e9 ticks at 1 GHz
    assert sh.call(0x31, 0, bus).ret == 1_000_000_000
    assert sh.call(0x30, 0x4000_0010, bus).ret == 0
    assert bus.read64(0x4000_0010) == 2_500_000_000
    assert sh.call(4, 0x1000, bus).ret == 0xDEADBEEF          # pointer outside RAM: no output, no exception
    assert sh.call(0x12, 0, bus).ret == -1                    # SYS_SYSTEM refused (not allowed)
    assert [c for c, _ in log] == ["guest_errors", "unimp"]
    bus.write_bytes(0x4000_0000, struct.pack("<3Q", 0x4000_0100, 0, 3))
    bus.write_bytes(0x4000_0100, b"foo")
    assert sh.call(1, 0x4000_0000, bus).ret == -1 and sh.call(0x13, 0, bus).ret == 2   # ENOENT
