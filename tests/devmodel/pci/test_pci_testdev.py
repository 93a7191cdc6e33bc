"""devmodel/pci/testdev.py: QEMU's pci-testdev register protocol (hw/misc/pci-testdev.c), driven as
kvm-unit-tests' lib/pci-testdev.c drives it, and its corner cases."""
import pytest

from devmodel.pci import PciTestdev
from devmodel.pci.testdev import DATAMATCH, NOMATCH, TEST_NAMES

MEM, IO = 0, 1


def header(dev: PciTestdev, bar: int) -> dict:
    rd = lambda off, n: dev.bar_read(bar, off, n)               # noqa: E731
    name = bytearray()
    while (c := rd(0x10 + len(name), 1)) and len(name) < 64:
        name.append(c)
    return {"test": rd(0, 1), "width": rd(1, 1), "offset": rd(4, 4), "data": rd(8, 1), "count": rd(12, 4),
            "name": name.decode()}


def kut_one(dev: PciTestdev, bar: int, number: int) -> bool:
    """lib/pci-testdev.c pci_testdev_one: select, check, 16 writes of `data` at `offset`, count 0 or 16."""
    dev.bar_write(bar, 0, number, 1)
    h = header(dev, bar)
    if h["count"] != 0 or h["width"] not in (1, 2, 4):
        return False
    for _ in range(16):
        dev.bar_write(bar, h["offset"], h["data"], h["width"])
    count = dev.bar_read(bar, 12, 4)
    return count in (0, 16)


@pytest.mark.parametrize("bar", [MEM, IO])
def test_kvm_unit_tests_protocol_passes_three_tests_per_bar(bar):
    dev = PciTestdev()
    assert [kut_one(dev, bar, n) for n in range(4)] == [True, True, True, False]   # the 4th selects nothing


def test_headers_names_offsets_and_data():
    dev = PciTestdev()
    got = []
    for bar in (MEM, IO):
        for n in range(3):
            dev.bar_write(bar, 0, n, 1)
            got.append(header(dev, bar))
    assert [h["name"] for h in got] == list(TEST_NAMES) == [
        "mmio-no-eventfd", "mmio-wildcard-eventfd", "mmio-datamatch-eventfd",
        "portio-no-eventfd", "portio-wildcard-eventfd", "portio-datamatch-eventfd"]
    assert [h["offset"] for h in got] == [2048, 2049, 2050, 131, 132, 133]
    assert [h["data"] for h in got] == [DATAMATCH, NOMATCH, DATAMATCH] * 2
    assert [h["test"] for h in got] == [0, 1, 2, 3, 4, 5] and {h["width"] for h in got} == {1}


def test_no_eventfd_counts_and_eventfd_tests_are_taken_by_the_ioeventfd():
    """Under TCG QEMU signals a matching ioeventfd instead of calling the device: counts 16, 0, 0."""
    dev = PciTestdev()
    counts = []
    for n in range(3):
        dev.bar_write(MEM, 0, n, 1)
        off, data = dev.bar_read(MEM, 4, 4), dev.bar_read(MEM, 8, 1)
        for _ in range(16):
            dev.bar_write(MEM, off, data, 1)
        counts.append(dev.bar_read(MEM, 12, 4))
    assert counts == [16, 0, 0] and dev.signalled[:3] == [0, 16, 16]


def test_datamatch_ignores_other_data_and_wildcard_counts_wider_writes():
    dev = PciTestdev()
    dev.bar_write(IO, 0, 2, 1)                        # portio-datamatch: data 0xFA at 133
    dev.bar_write(IO, 133, 0x12, 1)                   # wrong data: neither the eventfd nor the count
    assert dev.bar_read(IO, 12, 4) == 0 and dev.signalled[5] == 0
    dev.bar_write(MEM, 0, 1, 1)                       # mmio-wildcard at 2049
    dev.bar_write(MEM, 2049, 0x3412, 2)               # 2 bytes: not the 1-byte eventfd; byte 0 counts
    dev.bar_write(MEM, 2048, 0x1234, 2)               # byte 1 lands on 2049: counts too
    assert dev.bar_read(MEM, 12, 4) == 2 and dev.signalled[1] == 0


def test_selecting_resets_the_count_and_deselecting_reads_zero():
    dev = PciTestdev()
    dev.bar_write(MEM, 0, 0, 1)
    dev.bar_write(MEM, 2048, 0, 1)                    # no-eventfd matches data too (only wildcard does not)
    dev.bar_write(MEM, 2048, DATAMATCH, 1)
    assert dev.bar_read(MEM, 12, 4) == 1
    dev.bar_write(MEM, 0, 0, 1)
    assert dev.bar_read(MEM, 12, 4) == 0
    dev.bar_write(MEM, 0, 0xFF, 4)                    # >= 3: no test; every byte reads 0, writes are ignored
    assert dev.current is None and dev.bar_read(MEM, 0, 4) == 0 and dev.bar_read(MEM, 16, 1) == 0
    dev.bar_write(MEM, 2048, 0, 1)
    assert dev.bar_read(IO, 0, 4) == 0


def test_reads_past_the_header_and_other_bars():
    dev = PciTestdev()
    dev.bar_write(MEM, 0, 0, 1)
    n = 16 + len("mmio-no-eventfd") + 1               # header + name + NUL
    assert dev.bar_read(MEM, n - 2, 1) == ord("d") and dev.bar_read(MEM, n - 1, 1) == 0
    assert dev.bar_read(MEM, n, 4) == 0 and dev.bar_read(MEM, 4000, 4) == 0
    assert dev.bar_read(2, 0, 4) == 0xFFFF_FFFF       # no BAR2 region
    dev.bar_write(5, 0, 0, 4)
    assert dev.bar_read(MEM, 0, 4) == 0x0000_0100     # test 0, width 1
