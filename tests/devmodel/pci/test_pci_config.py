"""devmodel/pci: configuration space masks, BAR sizing and decode, ECAM decode, absent functions and bad
accesses. The expected values are QEMU 7.2's (its ECAM read through the monitor for the two functions, and
hw/pci/pci.c's masks); docs/DESIGN.md "PCIe host"."""
import random

import pytest

from devmodel.pci import Bar, ConfigSpace, GpexRoot, PciHost, PciTestdev, ecam_decode
from devmodel.pci.config import COMMAND_WMASK, STATUS_W1C, bar_mapping


def ecam(dev: int, reg: int, fn: int = 0, bus: int = 0) -> int:
    return bus << 20 | dev << 15 | fn << 12 | reg


@pytest.fixture
def host():
    h = PciHost()
    assert h.add(PciTestdev()) == 8                        # 00:01.0, as QEMU places the first -device
    return h


def test_ecam_decode():
    assert ecam_decode(0) == (0, 0, 0, 0)
    assert ecam_decode(ecam(1, 0x3C, fn=5, bus=2)) == (2, 1, 5, 0x3C)
    assert ecam_decode(0x0FFF_FFFF) == (255, 31, 7, 0xFFF)


def test_headers_as_qemu_7_2_reads_them(host):
    """Dwords 0x00..0x3c of 00:00.0 and 00:01.0 as `xp` on QEMU 7.2's ECAM shows them (no -kernel)."""
    root = [host.config_read(ecam(0, r), 4) for r in range(0, 0x40, 4)]
    dev = [host.config_read(ecam(1, r), 4) for r in range(0, 0x40, 4)]
    assert root == [0x0008_1B36, 0, 0x0600_0000, 0, 0, 0, 0, 0, 0, 0, 0, 0x1100_1AF4, 0, 0, 0, 0]
    assert dev == [0x0005_1B36, 0, 0x00FF_0000, 0, 0, 1, 0, 0, 0, 0, 0, 0x1100_1AF4, 0, 0, 0, 0]
    assert host.config_read(ecam(1, 0x3D), 1) == 0                # no interrupt pin


@pytest.mark.parametrize("where", [ecam(2, 0), ecam(0, 0, fn=1), ecam(0, 0, bus=1), ecam(31, 0, fn=7, bus=255)])
def test_absent_functions_read_all_ones_and_ignore_writes(host, where):
    for size in (1, 2, 4):
        assert host.config_read(where, size) == (1 << 8 * size) - 1
    host.config_write(where, 0, 4)
    assert host.config_read(where, 4) == 0xFFFF_FFFF


def test_extended_space_of_a_conventional_function_reads_all_ones(host):
    assert host.config_read(ecam(1, 0x100), 4) == 0xFFFF_FFFF
    host.config_write(ecam(1, 0xFFC), 0, 4)
    assert host.config_read(ecam(1, 0xFFC), 4) == 0xFFFF_FFFF and host.config_read(ecam(1, 0xFF), 1) == 0


def test_read_only_fields_keep_their_values(host):
    for reg in (0x00, 0x08, 0x0C, 0x2C, 0x30, 0x34, 0x3C):
        host.config_write(ecam(1, reg), 0xFFFF_FFFF, 4)
    assert host.config_read(ecam(1, 0), 4) == 0x0005_1B36
    assert host.config_read(ecam(1, 8), 4) == 0x00FF_0000
    assert host.config_read(ecam(1, 0x0C), 4) == 0x0000_00FF      # cache line size RW; latency, header, BIST RO
    assert host.config_read(ecam(1, 0x2C), 4) == 0x1100_1AF4
    assert host.config_read(ecam(1, 0x30), 4) == 0                # no expansion ROM
    assert host.config_read(ecam(1, 0x3C), 4) == 0x0000_00FF      # interrupt line RW, pin 0


def test_command_mask_and_status_rw1c():
    cfg = ConfigSpace(0x1B36, 0x0005, 0xFF00)
    cfg.write(4, 0xFFFF, 2)
    assert cfg.read(4, 2) == COMMAND_WMASK == 0x0507              # IO MEM MASTER SERR INTX_DISABLE
    cfg.write(4, 0x0143, 2)                                       # kvm-unit-tests' SERR | PARITY | MEM | IO
    assert cfg.read(4, 2) == 0x0103
    cfg.data[6:8] = (0xF910).to_bytes(2, "little")               # errors latched, + a read-only bit (CAP_LIST)
    cfg.write(6, 0x0100, 2)                                       # clears only the bit written as 1
    assert cfg.read(6, 2) == 0xF810
    cfg.write(4, 0xFFFF_0000, 4)                                  # command untouched, all of STATUS_W1C cleared
    assert cfg.read(6, 2) == 0xF810 & ~STATUS_W1C and cfg.read(4, 2) == 0


def test_device_specific_bytes_are_read_write():
    cfg = GpexRoot().config
    cfg.write(0x40, 0x1122_3344, 4)
    cfg.write(0xFE, 0xABCD, 2)
    assert cfg.read(0x40, 4) == 0x1122_3344 and cfg.read(0xFE, 2) == 0xABCD and cfg.read(0x42, 1) == 0x22


def test_bar_sizing_reads_back_the_size_mask(host):
    """PCI 3.0 6.2.5.1: all-ones written, size = ~(value & mask) + 1; the type bits stay."""
    for i in range(6):
        host.config_write(ecam(1, 0x10 + 4 * i), 0xFFFF_FFFF, 4)
    sized = [host.config_read(ecam(1, 0x10 + 4 * i), 4) for i in range(6)]
    assert sized == [0xFFFF_F000, 0xFFFF_FF01, 0, 0, 0, 0]        # 4 KiB memory, 256-byte I/O, unimplemented
    assert (~(sized[0] & ~0xF) & 0xFFFF_FFFF) + 1 == 0x1000 and (~(sized[1] & ~0x3) & 0xFFFF_FFFF) + 1 == 0x100
    host.config_write(ecam(1, 0x12), 0xFFFF, 2)                   # a 16-bit write to the BAR's upper half
    host.config_write(ecam(1, 0x10), 0x1234_5678, 4)
    assert host.config_read(ecam(1, 0x10), 4) == 0x1234_5000


def test_64bit_bar_sizing_spans_two_registers():
    cfg = ConfigSpace(0x1B36, 0x0005, 0xFF00)
    cfg.add_bar(Bar(2, 1 << 32, is64=True, prefetch=True))
    cfg.write(0x18, 0xFFFF_FFFF, 4)
    cfg.write(0x1C, 0xFFFF_FFFF, 4)
    assert (cfg.read(0x18, 4), cfg.read(0x1C, 4)) == (0x0000_000C, 0xFFFF_FFFF)
    cfg.write(0x18, 0, 4)
    cfg.write(0x1C, 0x80, 4)
    cfg.write(4, 2, 2)
    assert cfg.bar_address(2) == 0x80_0000_0000
    with pytest.raises(ValueError):
        cfg.add_bar(Bar(3, 0x1000))                              # the upper half of BAR2
    with pytest.raises(ValueError):
        cfg.add_bar(Bar(5, 0x1000, is64=True))                   # no register after BAR5


def test_bar_decode_follows_command_and_rejects_wrapping_windows():
    io, mem = Bar(1, 0x100, io=True), Bar(0, 0x1000)
    assert bar_mapping(io, 0x1, 0x1) == 0                         # port 0 decodes (virt allows address 0)
    assert bar_mapping(io, 0x1, 0x2) is None                      # COMMAND.IO clear
    assert bar_mapping(mem, 0x1000_0000, 0x1) is None             # COMMAND.MEMORY clear
    assert bar_mapping(mem, 0x1000_0123, 0x2) == 0x1000_0000
    assert bar_mapping(mem, 0xFFFF_F000, 0x2) is None             # reaches 0xffffffff: QEMU leaves it unmapped
    assert bar_mapping(Bar(0, 0x1000, is64=True), 0xFFFF_F000, 0x2) == 0xFFFF_F000
    assert bar_mapping(Bar(0, 0x1000, is64=True), (1 << 64) - 0x1000, 0x2) is None   # its last byte is ~0


def test_bars_route_only_while_decoded(host):
    host.config_write(ecam(1, 0x10), 0x1000_0000, 4)
    host.config_write(ecam(1, 0x14), 0, 4)
    assert host.mem_read(0x1000_0000, 4) == 0xFFFF_FFFF           # memory decode off: master abort
    host.config_write(ecam(1, 4), 0x3, 2)
    assert host.claim(0x1000_0FFF, io=False)[1:] == (0, 0xFFF) and host.claim(0x1000_1000, io=False) is None
    assert host.claim(0xFF, io=True)[1:] == (1, 0xFF) and host.claim(0x100, io=True) is None
    assert host.mem_read(0x1000_0000, 4) == 0                     # the testdev: no test selected reads 0
    host.config_write(ecam(1, 4), 0x1, 2)
    assert host.mem_read(0x1000_0000, 1) == 0xFF and host.io_read(0, 1) == 0


def test_hostile_config_traffic_never_raises(host):
    rng = random.Random(14)
    for _ in range(3000):
        size = rng.choice((1, 2, 4))
        off = rng.randrange(0, 1 << 28) if rng.random() < 0.5 else ecam(rng.randrange(3), rng.randrange(0x1000))
        off &= ~(size - 1)
        if rng.random() < 0.5:
            host.config_write(off, rng.getrandbits(32), size)
        else:
            assert 0 <= host.config_read(off, size) < 1 << 8 * size
        addr = rng.choice((rng.getrandbits(32), rng.randrange(0x1000_0000, 0x1000_2000), rng.randrange(0x200)))
        host.mem_write(addr, rng.getrandbits(8 * size), size)
        host.io_write(addr & 0xFFFF, rng.getrandbits(8 * size), size)
        assert 0 <= host.mem_read(addr, size) < 1 << 8 * size
        assert 0 <= host.io_read(addr & 0xFFFF, size) < 1 << 8 * size
    assert host.config_read(ecam(1, 0), 4) == 0x0005_1B36 and host.config_read(0, 4) == 0x0008_1B36


def test_functions_take_the_next_free_slot():
    h = PciHost()
    assert [h.add(PciTestdev()) for _ in range(3)] == [8, 16, 24]
    with pytest.raises(ValueError):
        h.add(PciTestdev(), devfn=8)
    for _ in range(28):
        h.add(PciTestdev())
    with pytest.raises(ValueError):
        h.add(PciTestdev())


def test_overlapping_bars_the_one_mapped_last_answers():
    """QEMU 7.2 (pci_update_mappings, memory_region_add_subregion_common): a BAR whose decoded address changes
    is put in front of its equals; an unchanged rewrite does not move it (guest_fw pci_overlap.c: same under
    QEMU, tests/harness/test_pci_board.py)."""
    h = PciHost()
    a, b = PciTestdev(), PciTestdev()
    da, db = h.add(a), h.add(b)
    for dev, base in ((da, 0x1000_0000), (db, 0x1000_0000)):
        h.config_write(dev << 12 | 0x10, base, 4)
        h.config_write(dev << 12 | 0x04, 0x2, 2)
    assert h.claim(0x1000_0004, False)[0] is b                  # mapped last
    h.config_write(da << 12 | 0x10, 0x1000_0000, 4)            # the same address again: not re-mapped
    assert h.claim(0x1000_0004, False)[0] is b
    h.config_write(da << 12 | 0x04, 0x0, 2)
    h.config_write(da << 12 | 0x04, 0x2, 2)                     # decode off and on: mapped anew
    assert h.claim(0x1000_0004, False)[0] is a
    h.config_write(db << 12 | 0x10, 0x1000_2000, 4)
    h.config_write(db << 12 | 0x10, 0x1000_0000, 4)
    assert h.claim(0x1000_0004, False)[0] is b
