"""DMA test device (devmodel/dmatest.py): register map, READ64/WRITE64/COPY through an SMMU, faults."""
from __future__ import annotations

from devmodel.bus import Bus
from devmodel.dmatest import (CMD_COPY, CMD_READ64, CMD_WRITE64, DMATEST_BASE, DMATEST_ID, MAX_LEN,
                              STATUS_BADCMD, STATUS_BUSERR, STATUS_DONE, STATUS_FAULT, DmaTestDevice)
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.device import SMMUv3
from devmodel.smmuv3.fault import EventType

RAM = 0x4000_0000
ID, STATUS, SID, SSID, IOVA, LEN, CMD, DATA, DST, FAULT_TYPE, COUNT, FAULT_ADDR, ATTR = (
    0x00, 0x04, 0x08, 0x0C, 0x10, 0x18, 0x1C, 0x20, 0x28, 0x30, 0x34, 0x38, 0x40)
PCIE_CTRL, PRI_STATUS, PRI_ALLOC, STAG, PRG_INDEX, ATC_ENTRIES, ATC_INVS = 0x44, 0x48, 0x4C, 0x50, 0x54, 0x58, 0x5C


def machine(sid: int = 3):
    bus = Bus()
    bus.add_ram(RAM, 0x100_0000)
    smmu = SMMUv3(bus)
    bus.add_device(0x0905_0000, 0x20000, smmu)
    dev = DmaTestDevice(bus, smmu.translate, sid=sid)
    bus.add_device(DMATEST_BASE, 0x1000, dev)
    return bus, smmu, dev


def enable_with_table(bus: Bus, smmu: SMMUv3) -> None:
    smmu.write(0x80, RAM, 8)
    smmu.write(0x88, 6, 4)
    smmu.write(0xA0, (RAM + 0x10_0000) | 4, 8)
    smmu.write(0x2C, 2, 4)
    smmu.write(0x20, 0b101, 4)


def test_register_map_and_reset() -> None:
    bus, smmu, dev = machine(sid=7)
    assert bus.read32(DMATEST_BASE + ID) == DMATEST_ID
    assert bus.read32(DMATEST_BASE + SID) == 7 and bus.read32(DMATEST_BASE + STATUS) == 0
    bus.write64(DMATEST_BASE + IOVA, 0x1234_5678_9ABC)
    assert bus.read32(DMATEST_BASE + IOVA + 4) == 0x1234
    bus.write32(DMATEST_BASE + ID, 0)                          # RO
    bus.write32(DMATEST_BASE + STATUS, 0xF)
    assert bus.read32(DMATEST_BASE + ID) == DMATEST_ID and bus.read32(DMATEST_BASE + STATUS) == 0
    assert dev.read(0x3, 4) == 0 and dev.read(0x800, 4) == 0   # misaligned / unallocated: RAZ
    dev.write(0x800, 1, 4)


def test_write_read_copy_through_disabled_smmu_bypass() -> None:
    bus, smmu, dev = machine()
    d = DMATEST_BASE
    bus.write64(d + IOVA, RAM + 0x1000)
    bus.write64(d + DATA, 0x1122_3344_5566_7788)
    bus.write32(d + CMD, CMD_WRITE64)
    assert bus.read32(d + STATUS) == STATUS_DONE and bus.read64(RAM + 0x1000) == 0x1122_3344_5566_7788
    bus.write64(d + DATA, 0)
    bus.write32(d + CMD, CMD_READ64)
    assert bus.read64(d + DATA) == 0x1122_3344_5566_7788
    bus.write_bytes(RAM + 0x2FF0, bytes(range(40)))            # crosses a 4 KiB boundary
    bus.write64(d + IOVA, RAM + 0x2FF0)
    bus.write64(d + DST, RAM + 0x5000)
    bus.write32(d + LEN, 40)
    bus.write32(d + CMD, CMD_COPY)
    assert bus.read_bytes(RAM + 0x5000, 40) == bytes(range(40)) and bus.read32(d + COUNT) == 3


def test_fault_reports_event_type_and_address() -> None:
    bus, smmu, dev = machine(sid=5)
    enable_with_table(bus, smmu)                               # STE 5 is all zero: C_BAD_STE
    d = DMATEST_BASE
    bus.write64(d + IOVA, 0xABC000)
    bus.write32(d + CMD, CMD_READ64)
    assert bus.read32(d + STATUS) == STATUS_FAULT
    assert bus.read32(d + FAULT_TYPE) == EventType.C_BAD_STE and bus.read64(d + FAULT_ADDR) == 0xABC000
    assert [(e.name, e.sid) for e in smmu.events] == [("C_BAD_STE", 5)]
    bus.write_bytes(RAM + 5 * 64, S.encode(S.Ste(v=1, config=S.CONFIG_BYPASS)))
    # (an invalid STE is never cached, so no CFGI_STE is needed before the fixed STE is used)
    bus.write64(d + IOVA, RAM + 0x1000)
    bus.write32(d + CMD, CMD_READ64)
    assert bus.read32(d + STATUS) == STATUS_DONE and bus.read32(d + FAULT_TYPE) == 0


def test_substream_and_attributes_are_passed() -> None:
    seen = []

    def translate(sid, ssid, addr, write=False, exec_=False, priv=False):
        seen.append((sid, ssid, addr, write, exec_, priv))
        from devmodel.smmuv3.config import TransResult
        return TransResult(RAM + (addr & 0xFFF), 7, 4096)

    bus = Bus()
    bus.add_ram(RAM, 0x10_0000)
    dev = DmaTestDevice(bus, translate, sid=9)
    dev.write(SSID, (1 << 31) | 0x42, 4)
    dev.write(ATTR, 0b11, 4)
    dev.write(IOVA, 0x7008, 8)
    dev.write(CMD, CMD_READ64, 4)
    dev.write(CMD, CMD_WRITE64, 4)
    assert seen == [(9, 0x42, 0x7008, False, True, True), (9, 0x42, 0x7008, True, False, True)]


def test_bad_commands_and_bus_errors_never_raise() -> None:
    bus, smmu, dev = machine()
    d = DMATEST_BASE
    bus.write32(d + CMD, 99)
    assert bus.read32(d + STATUS) == STATUS_BADCMD
    bus.write32(d + LEN, MAX_LEN + 1)
    bus.write32(d + CMD, CMD_COPY)
    assert bus.read32(d + STATUS) == STATUS_BADCMD
    bus.write64(d + IOVA, 0x7_0000_0000)                       # bypass to unmapped PA
    bus.write32(d + CMD, CMD_READ64)
    assert bus.read32(d + STATUS) == STATUS_BUSERR and bus.read64(d + FAULT_ADDR) == 0x7_0000_0000
    bus.write64(d + IOVA, 2**64 - 4)                           # wraps the address space
    bus.write32(d + CMD, CMD_WRITE64)
    assert bus.read32(d + STATUS) == STATUS_BUSERR


def test_pcie_registers_reset_and_access() -> None:
    bus, smmu, dev = machine()
    d = DMATEST_BASE
    assert [bus.read32(d + o) for o in (PCIE_CTRL, PRI_STATUS, PRI_ALLOC, STAG, PRG_INDEX, ATC_ENTRIES, ATC_INVS)] \
        == [0, 0, 0, 0, 0, 0, 0]
    bus.write32(d + PCIE_CTRL, 0xFFFF_FFFF)                    # PRI_RESET reads 0, other bits RES0
    assert bus.read32(d + PCIE_CTRL) == 0b011
    for o in (PRI_STATUS, STAG, PRG_INDEX, ATC_ENTRIES, ATC_INVS):
        bus.write32(d + o, 0xFFFF_FFFF)
        assert bus.read32(d + o) == 0
    bus.write32(d + PRI_ALLOC, 32)
    assert bus.read32(d + PRI_ALLOC) == 32
    bus.write32(d + PCIE_CTRL, 0)
    assert bus.read32(d + PRI_STATUS) == 1 << 8                # PRI disabled, nothing outstanding: Stopped
    assert smmu.endpoints == {3: dev}                          # registered for its StreamID
    bus.write32(d + SID, 4)
    assert smmu.endpoints == {4: dev}


def test_ats_without_an_iommu_port_is_an_ats_error() -> None:
    from devmodel.smmuv3.config import TransResult
    bus = Bus()
    bus.add_ram(RAM, 0x10_0000)
    dev = DmaTestDevice(bus, lambda *a, **k: TransResult(RAM, 7, 4096), sid=1)
    assert dev.iommu is None
    dev.write(PCIE_CTRL, 1, 4)
    dev.write(CMD, CMD_READ64, 4)
    assert dev.read(STATUS, 4) == 1 << 6                       # ATS_ERR
