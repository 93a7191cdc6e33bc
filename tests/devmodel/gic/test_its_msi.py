"""MSIs as bus writes that carry their requester ID (devmodel/bus.py `write_from`) into an ITS: the SMMU's own
MSIs (untranslated, with the board's DeviceID for the SMMU) and the DMA test device's completion MSI (a DMA
write translated by the SMMU for its StreamID, then sent with the StreamID as DeviceID)."""
import pytest

from devmodel.bus import Bus, BusError
from devmodel.dmatest import CMD_WRITE64, DMATEST_BASE, MSI_BUSERR, MSI_FAULT, MSI_SENT, MSI_STALLED, DmaTestDevice
from devmodel.smmuv3 import commands as C
from devmodel.gic.its import GITS_TRANSLATER, ITS_SIZE
from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.device import SMMUv3
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.trace import Tracer

from .test_its import System

RAM = 0x4000_0000                                            # the SMMU's tables, queues and the DMA's buffer
STRTAB, CMDQ, EVTQ, CDTAB, TABLES = (RAM + o for o in (0, 0x10_0000, 0x20_0000, 0x30_0000, 0x60_0000))
# SMMU register offsets (IHI 0070 6.3, Linux ARM_SMMU_*)
CR0, CR2, IRQ_CTRL, STRTAB_BASE, STRTAB_BASE_CFG, CMDQ_BASE, EVTQ_BASE = 0x20, 0x2C, 0x50, 0x80, 0x88, 0x90, 0xA0
EVTQ_IRQ_CFG0, EVTQ_IRQ_CFG1 = 0xB0, 0xB8
ITS_BASE = 0x0808_0000
DOORBELL = ITS_BASE + GITS_TRANSLATER
ITS_RAM = 0x8000_0000
SMMU_DEVID = 0x1000
MSI_ADDR, MSI_DATA, MSI_CTRL, MSI_COUNT, MSI_STATUS = 0x60, 0x68, 0x6C, 0x70, 0x74
IOVA, DATA, CMD, STATUS = 0x10, 0x20, 0x1C, 0x04


class Plain:
    def __init__(self):
        self.writes = []

    def read(self, offset, size):
        return 0

    def write(self, offset, value, size):
        self.writes.append((None, offset, value, size))


class TakesRequester(Plain):
    def write_from(self, offset, value, size, requester):
        self.writes.append((requester, offset, value, size))


def test_write_from_gives_the_requester_to_devices_that_take_it_and_a_plain_write_elsewhere():
    bus = Bus()
    ram = bus.add_ram(0x1000, 0x1000)
    plain, rec = Plain(), TakesRequester()
    bus.add_device(0x4000, 0x100, plain)
    bus.add_device(0x8000, 0x100, rec)
    bus.write_from(7, 0x8040, 0x1234, 4)
    bus.write_from(None, 0x8040, 5, 4)                       # no requester: a plain write
    bus.write_from(7, 0x4010, 6, 4)                          # a device that takes no requester ID
    bus.write_from(9, 0x1010, 0xAABBCCDD, 4)                 # RAM
    assert rec.writes == [(7, 0x40, 0x1234, 4), (None, 0x40, 5, 4)] and plain.writes == [(None, 0x10, 6, 4)]
    assert bytes(ram.buf[0x10:0x14]) == bytes.fromhex("ddccbbaa")
    with pytest.raises(BusError):
        bus.write_from(7, 0x20_0000, 1, 4)


def its_system(tracer_pattern="*"):
    s = System(ram=ITS_RAM)
    s.sink.records.clear()
    s.gic.tracer = s.its.tracer = Tracer(tracer_pattern, [s.sink])
    s.bus.add_device(ITS_BASE, ITS_SIZE, s.its, "its")
    return s


def test_a_bus_masters_translater_write_is_an_msi_of_its_requester_id_and_others_are_dropped():
    s = its_system()
    s.map(dev=0x21, ev=3, intid=8200)
    s.bus.write_from(0x21, DOORBELL, 3, 4)
    assert s.ack(0) == 8200
    s.eoi(0, 8200)
    s.bus.write_from(0x22, DOORBELL, 3, 4)                   # the same event from a device never mapped
    s.bus.write_from(0x21, DOORBELL, 7, 4)                   # an event the device has no mapping for
    s.bus.write_from(0x21, DOORBELL, 0xFFFF, 2)              # beyond its ITT (size 4: 32 events)
    assert not s.gic.irq_pending(0) and not s.gic.irq_pending(1)
    assert [(r["devid"], r["eventid"], r["reason"]) for r in s.sink.of("gicv3_its_translation_error")] == [
        (0x22, 3, "unmapped_device"), (0x21, 7, "unmapped_interrupt"), (0x21, 0xFFFF, "id_oor")]
    assert s.its.stats["msis"] == 1 and s.its.stats["msis_dropped"] == 3
    s.bus.write_from(0x21, ITS_BASE + 0x0, 0, 4)             # not the doorbell: a register write (GITS_CTLR)
    assert not s.its.enabled


def smmu_on(s, msi_requester=SMMU_DEVID, features=SmmuFeatures()):
    """An SMMUv3 on the ITS's bus, programmed as Linux does (linear stream table, CMDQ, EVTQ, SMMUEN)."""
    s.bus.add_ram(RAM, 0x100_0000)
    smmu = SMMUv3(s.bus, features, tracer=Tracer("*", [s.sink]), msi_requester=msi_requester)
    for off, value, size in ((STRTAB_BASE, STRTAB, 8), (STRTAB_BASE_CFG, 8, 4), (CMDQ_BASE, CMDQ | 4, 8),
                             (EVTQ_BASE, EVTQ | 4, 8), (CR2, 0b110, 4), (CR0, 0b1100, 4), (CR0, 0b1101, 4)):
        smmu.write(off, value, size)
    s.prod = 0
    return smmu


def test_the_smmus_own_msis_reach_the_its_untranslated_with_the_smmus_device_id():
    s = its_system()
    s.map(dev=SMMU_DEVID, ev=1, intid=8193, cpu=1)
    smmu = smmu_on(s)
    smmu.write(EVTQ_IRQ_CFG0, DOORBELL, 8)
    smmu.write(EVTQ_IRQ_CFG1, 1, 4)
    smmu.write(IRQ_CTRL, 0b100, 4)                           # EVTQ_IRQEN
    assert smmu.translate(5, None, 0x1000, write=False).type.name == "C_BAD_STE"     # STE 5 is invalid
    assert s.ack(1) == 8193
    assert [(r["devid"], r["eventid"], r["intid"]) for r in s.sink.of("gicv3_its_lpi")] == [(SMMU_DEVID, 1, 8193)]
    # an SMMU the board gives no DeviceID: its MSI is a CPU-like write (QEMU: requester ID 0), not the SMMU's
    t = its_system()
    t.map(dev=SMMU_DEVID, ev=1, intid=8193)
    plain = smmu_on(t, msi_requester=None)
    plain.write(EVTQ_IRQ_CFG0, DOORBELL, 8)
    plain.write(EVTQ_IRQ_CFG1, 1, 4)
    plain.write(IRQ_CTRL, 0b100, 4)
    plain.translate(5, None, 0x1000, write=False)
    assert not t.gic.irq_pending(0)
    assert [(r["devid"], r["reason"]) for r in t.sink.of("gicv3_its_translation_error")] == [(0, "unmapped_device")]


def dmatest(s, smmu, sid=0x21):
    dev = DmaTestDevice(s.bus, smmu.translate, sid=sid, tracer=smmu.tracer)
    s.bus.add_device(DMATEST_BASE, 0x1000, dev)
    return dev


def s1_stream(s, sid, *, map_doorbell, stall=0):
    """STE `sid`: stage 1 through one CD whose tables map RAM+0x10_0000 and, with `map_doorbell`, IOVA
    0x0100_0000 to the ITS's doorbell page (what Linux's MSI cookie does for a DMA domain)."""
    pt = PageTableBuilder(s.bus, PageAllocator(s.bus, TABLES, 0x10_0000), granule=4096, stage=1, ias=48)
    s.pt = pt
    pt.map(RAM + 0x10_0000, RAM + 0x10_0000, 0x1000, PERM_R | PERM_W)
    if map_doorbell:
        pt.map(0x0100_0000, DOORBELL & ~0xFFF, 0x1000, PERM_R | PERM_W)
    s.bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, t0sz=16, tg0=0, ips=5, epd1=1, asid=1,
                                            s=stall, ttb0=pt.ttb)))
    s.bus.write_bytes(STRTAB + sid * 64, S.encode(S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB)))


def msi_bench(*, map_doorbell, stall=0):
    """ITS (event 9 of DeviceID 0x21 -> LPI 8201), SMMU (stall model 0 when `stall`), the DMA test device with
    StreamID 0x21 on stage 1."""
    s = its_system()
    smmu = smmu_on(s, features=SmmuFeatures(stall_model=0) if stall else SmmuFeatures())
    s.map(dev=0x21, ev=9, intid=8201)
    dev = dmatest(s, smmu)
    s1_stream(s, 0x21, map_doorbell=map_doorbell, stall=stall)
    return s, smmu, dev


def test_the_dma_devices_msi_is_translated_by_the_smmu_and_reaches_the_its_with_its_stream_id():
    s, smmu, dev = msi_bench(map_doorbell=True)
    d = DMATEST_BASE
    s.bus.write64(d + MSI_ADDR, 0x0100_0000 | (DOORBELL & 0xFFF) | 3)       # bits [1:0] are ignored
    s.bus.write32(d + MSI_DATA, 9)
    s.bus.write32(d + MSI_CTRL, 1)
    assert s.bus.read64(d + MSI_ADDR) == 0x0100_0000 | (DOORBELL & 0xFFF)
    s.bus.write64(d + IOVA, RAM + 0x10_0000)
    s.bus.write64(d + DATA, 0x55)
    s.bus.write32(d + CMD, CMD_WRITE64)
    assert s.bus.read32(d + STATUS) == 1 and s.bus.read32(d + MSI_STATUS) == MSI_SENT
    assert s.bus.read32(d + MSI_COUNT) == 1 and s.ack(0) == 8201
    assert [(r["requester"], r["iova"], r["pa"], r["data"], r["outcome"]) for r in s.sink.of("msi_write")] == [
        (0x21, 0x0100_0040, DOORBELL, 9, "sent")]
    assert [r["devid"] for r in s.sink.of("gicv3_its_lpi")] == [0x21]


def test_an_msi_to_an_unmapped_doorbell_iova_faults_in_the_smmu_and_is_lost():
    s, smmu, dev = msi_bench(map_doorbell=False)
    d = DMATEST_BASE
    s.bus.write64(d + MSI_ADDR, DOORBELL)               # the doorbell's PA, but the IOVA is not mapped
    s.bus.write32(d + MSI_DATA, 9)
    assert dev.send_msi() == MSI_FAULT and not s.gic.irq_pending(0)
    ev = smmu.events[-1]
    assert (ev.name, ev.sid, ev.input_addr, ev.rnw) == ("F_TRANSLATION", 0x21, DOORBELL, 0)
    # bypass (SMMU off): the write reaches the PA; nothing there -> BUSERR; the doorbell -> the MSI
    smmu.write(CR0, 0, 4)
    s.bus.write64(d + MSI_ADDR, 0x0F00_0000)
    assert dev.send_msi() == MSI_BUSERR
    s.bus.write64(d + MSI_ADDR, DOORBELL)
    assert dev.send_msi() == MSI_SENT and s.ack(0) == 8201
    assert [r["outcome"] for r in s.sink.of("msi_write")] == ["fault", "buserr", "sent"]


def test_a_stalled_msi_is_sent_when_cmd_resume_retries_it_and_lost_when_aborted():
    s, smmu, dev = msi_bench(map_doorbell=False, stall=1)
    d = DMATEST_BASE
    s.bus.write64(d + MSI_ADDR, 0x0100_0040)
    s.bus.write32(d + MSI_DATA, 9)
    assert dev.send_msi() == MSI_STALLED and not s.gic.irq_pending(0)
    ev = smmu.events[-1]
    assert (ev.name, ev.stall, ev.input_addr) == ("F_TRANSLATION", 1, 0x0100_0040)
    s.pt.map(0x0100_0000, DOORBELL & ~0xFFF, 0x1000, PERM_R | PERM_W)      # software fixes the mapping ...
    submit(s, smmu, C.encode("RESUME", sid=0x21, stag=ev.stag, resp=1))     # ... and retries
    assert s.bus.read32(d + MSI_STATUS) == MSI_SENT and s.ack(0) == 8201
    s.pt.unmap(0x0100_0000, 0x1000)
    submit(s, smmu, C.encode("CMD_SYNC"))
    submit(s, smmu, C.encode("TLBI_NH_ALL", vmid=0))
    assert dev.send_msi() == MSI_STALLED
    submit(s, smmu, C.encode("RESUME", sid=0x21, stag=smmu.events[-1].stag, resp=2))   # abort
    assert s.bus.read32(d + MSI_STATUS) == MSI_FAULT and not s.gic.irq_pending(0)
    assert [r["outcome"] for r in s.sink.of("msi_write")] == ["stalled", "sent", "stalled", "fault"]


def submit(s, smmu, raw):
    """One command at CMDQ_PROD (a 16-entry queue) and the PROD write that publishes it."""
    s.bus.write_bytes(CMDQ + 16 * (s.prod % 16), raw)
    s.prod = (s.prod + 1) % 32
    smmu.write(0x98, s.prod, 4)                              # CMDQ_PROD
