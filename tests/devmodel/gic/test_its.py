"""GICv3 ITS (devmodel/gic/its.py, its_cmd.py, its_tables.py) against IHI 0069 chapter 5 and 12.19: registers,
the command queue and every command with its errors, the Device/Collection tables (flat and two-level), ITTs,
MSIs through GITS_TRANSLATER and per-requester doorbells, isolation between ITS instances."""
import pytest

from devmodel.bus import Bus
from devmodel.gic import GicV3
from devmodel.gic.its import GITS_TRANSLATER, Its
from devmodel.gic.its_cmd import LAYOUTS, decode, encode, error_code, Reason
from devmodel.gic.its_tables import DTE, ITE, TableDesc
from devmodel.trace import ListSink, Tracer

from .helpers import check_consistent

RAM = 0x4000_0000
CMDQ, DEVT, COLLT, PROP, PEND, ITT = (RAM + o for o in (0, 0x10000, 0x20000, 0x30000, 0x40000, 0x80000))
CTLR, TYPER, CBASER, CWRITER, CREADR, BASER = 0x0, 0x8, 0x80, 0x88, 0x90, 0x100


class System:
    """A GICv3 + ITS over its own RAM, LPIs enabled on every PE, the ITS tables set up and the ITS on."""

    def __init__(self, cpus=2, ram=RAM, device_baser=None, enable=True, bus=None, **its_kw):
        self.ram = ram
        self.bus = Bus() if bus is None else bus
        self.bus.add_ram(ram, 0x20_0000)
        self.sink = ListSink()
        self.gic = GicV3(cpus, dma=self.bus, tracer=Tracer("gicv3_its_*", [self.sink]))
        self.its = Its(self.gic, **its_kw)
        g = self.gic
        g.distributor.write(0, 2, 4)
        for c in range(cpus):
            icc = g.cpu_interface(c)
            icc.write_sysreg("ICC_PMR_EL1", 0xFF)
            icc.write_sysreg("ICC_IGRPEN1_EL1", 1)
            rd = g.redistributor(c)
            rd.write(0x70, self.a(PROP) | 13, 8)
            rd.write(0x78, self.a(PEND) + c * 0x10000, 8)
            rd.write(0, 1, 4)
        for n in range(64):
            self.bus.write(self.a(PROP) + n, 0xA3, 1)
        self.n = 0
        its = self.its
        its.write(BASER, device_baser if device_baser is not None else 1 << 63 | 2 << 8 | self.a(DEVT), 8)
        its.write(BASER + 8, 1 << 63 | 2 << 8 | self.a(COLLT), 8)
        its.write(CBASER, 1 << 63 | self.a(CMDQ) | 15, 8)
        if enable:
            its.write(CTLR, 1, 4)

    def a(self, addr):
        return addr - RAM + self.ram

    def cmd(self, name, **fields):
        self.bus.write_bytes(self.a(CMDQ) + 32 * (self.n % 2048), encode(name, **fields))
        self.n += 1
        self.its.write(CWRITER, 32 * (self.n % 2048), 8)
        return self.its.read(CREADR, 8)

    def ack(self, cpu):
        return self.gic.cpu_interface(cpu).read_sysreg("ICC_IAR1_EL1")

    def eoi(self, cpu, intid):
        self.gic.cpu_interface(cpu).write_sysreg("ICC_EOIR1_EL1", intid)

    def map(self, dev=1, ev=0, intid=8192, icid=0, cpu=0, size=4):
        self.cmd("MAPD", deviceid=dev, size=size, itt_addr=self.a(ITT) + (dev & 0xFF) * 0x100, v=1)
        self.cmd("MAPC", icid=icid, rdbase=cpu << 16, v=1)
        self.cmd("MAPTI", deviceid=dev, eventid=ev, pintid=intid, icid=icid)

    def errors(self):
        return [(e.cmd, e.code) for e in self.its.errors]


# -- commands: layouts (as Linux's its_encode_* helpers place the fields) --------------------------------------
def test_command_layouts_place_fields_where_linux_encodes_them():
    raw = int.from_bytes(encode("MAPTI", deviceid=0xDEAD_BEEF, eventid=0x1234_5678, pintid=0x2345, icid=0xABCD),
                         "little")
    dw = [(raw >> (64 * i)) & (1 << 64) - 1 for i in range(4)]
    assert dw[0] == 0xDEAD_BEEF_0000_000A and dw[1] == 0x0000_2345_1234_5678 and dw[2] == 0xABCD and dw[3] == 0
    raw = int.from_bytes(encode("MAPD", deviceid=7, size=0x1F, itt_addr=0xF_FFFF_FFFF_FF00, v=1), "little")
    assert (raw >> 64) & 0x1F == 0x1F and (raw >> 128) == 1 << 63 | 0xF_FFFF_FFFF_FF00
    raw = int.from_bytes(encode("MOVALL", rdbase=1 << 16, rdbase2=3 << 16), "little")
    assert raw >> 128 == (3 << 16) << 64 | 1 << 16
    cmd = decode(encode("INT", deviceid=5, eventid=9))
    assert (cmd.name, cmd["deviceid"], cmd["eventid"]) == ("INT", 5, 9)
    assert decode(bytes([0x29]) + bytes(31)).name == "UNKNOWN"      # VMAPP (GICv4)
    assert set(LAYOUTS) == {"MAPD", "MAPC", "MAPTI", "MAPI", "MOVI", "DISCARD", "INT", "CLEAR", "INV", "INVALL",
                            "SYNC", "MOVALL"}
    assert error_code(0x08, Reason.DEVICE_OOR) == 0x010801
    assert error_code(0x0F, Reason.UNMAPPED_INTERRUPT) == 0x010F07 and error_code(0x04, Reason.ID_OOR) == 0x010505


def test_table_descriptors_from_baser():
    t = TableDesc.from_baser(1 << 63 | 7 << 48 | 2 << 8 | 0x0000_1234_5678_0000 | 0xF << 12 | 3)
    assert (t.valid, t.indirect, t.page_size, t.entry_size, t.pages) == (True, False, 0x10000, 8, 4)
    assert t.base == 0x000F_1234_5678_0000 and t.entries == 4 * 0x10000 // 8     # 64K pages: PA[51:48] at [15:12]
    t = TableDesc.from_baser(1 << 63 | 1 << 62 | 7 << 48 | 0 << 8 | 0x4000_1000)
    assert (t.page_size, t.base, t.entries) == (0x1000, 0x4000_1000, 512 * 512)
    assert TableDesc.from_baser(0).entries == 0


# -- registers (IHI 0069 12.19) --------------------------------------------------------------------------------
def test_register_reset_values_as_qemu():
    s = System(enable=False)
    its = Its(GicV3(1, dma=s.bus))
    assert its.read(CTLR, 4) == 1 << 31 and its.read(0x4, 4) == 0x43B
    assert its.read(TYPER, 8) == 0x1F_0001_EFB1
    assert its.read(BASER, 8) == 0x0107_0000_0000_0200 and its.read(BASER + 8, 8) == 0x0407_0000_0000_0200
    assert all(its.read(BASER + 8 * n, 8) == 0 for n in range(2, 8))
    assert (its.read(0xFFE8, 4) >> 4) & 0xF == 3 and its.read(0xFFE0, 4) == 0x94


def test_baser_and_cbaser_are_read_only_while_enabled_and_cbaser_resets_the_queue():
    s = System()
    its = s.its
    before = (its.read(BASER, 8), its.read(CBASER, 8))
    its.write(BASER, 0, 8)
    its.write(CBASER, 0, 8)
    assert (its.read(BASER, 8), its.read(CBASER, 8)) == before
    s.cmd("SYNC", rdbase=0)
    assert its.read(CREADR, 8) == 32
    its.write(CTLR, 0, 4)
    its.write(BASER + 0x4, 0xFFFF_FFFF, 4)                           # Type and Entry_Size are read-only
    assert its.read(BASER, 8) >> 48 & 0x71F == 0x107
    its.write(CBASER, 1 << 63 | s.a(CMDQ) | 15, 8)
    assert its.read(CREADR, 8) == 0 and its.read(CWRITER, 8) == 0
    its.write(CBASER, 0xFFFF_FFFF_FFFF_FFFF, 8)
    assert its.read(CBASER, 8) == 0xB8EF_FFFF_FFFF_FCFF               # RES0 bits masked


# -- commands and MSIs -----------------------------------------------------------------------------------------
def test_mapd_mapc_mapti_then_an_msi_is_an_lpi_at_the_collections_pe():
    s = System()
    s.map(dev=2, ev=20, intid=8195, icid=3, cpu=1)
    assert s.its.read(CREADR, 8) == 3 * 32 and s.its.errors == type(s.its.errors)()
    assert s.its.msi(2, 20) and s.gic.irq_pending(1) and not s.gic.irq_pending(0)
    assert s.ack(1) == 8195
    s.eoi(1, 8195)
    s.its.doorbell(2).write(GITS_TRANSLATER - 0x10000, 20, 4)        # the same MSI through the doorbell
    assert s.ack(1) == 8195
    assert [r.event for r in s.sink.records if r.event.startswith("gicv3_its_cmd")] == \
        ["gicv3_its_cmd_mapd", "gicv3_its_cmd_mapc", "gicv3_its_cmd_mapti"]
    assert [(r["devid"], r["eventid"], r["intid"], r["cpu"]) for r in s.sink.of("gicv3_its_lpi")] == \
        [(2, 20, 8195, 1)] * 2
    dte = DTE.unpack(s.bus.read(s.a(DEVT) + 2 * 8, 8))
    assert dte == {"valid": 1, "size": 4, "itt_addr": s.a(ITT) + 0x200}
    ite = ITE.unpack(int.from_bytes(s.bus.read_bytes(s.a(ITT) + 0x200 + 20 * 12, 12), "little"))
    assert (ite["valid"], ite["inttype"], ite["intid"], ite["icid"]) == (1, 1, 8195, 3)


def test_int_clear_inv_invall_discard_mapi():
    s = System()
    s.map(dev=1, ev=3, intid=8200)
    s.cmd("INT", deviceid=1, eventid=3)
    assert s.gic.redistributor(0).lpi_pending(8200)
    s.cmd("CLEAR", deviceid=1, eventid=3)
    assert not s.gic.redistributor(0).lpi_pending(8200) and not s.gic.irq_pending(0)
    s.cmd("INT", deviceid=1, eventid=3)
    s.bus.write(s.a(PROP) + 8, 0xA2, 1)                              # disable LPI 8200 in the property table
    assert s.gic.irq_pending(0)                                      # its configuration is cached ...
    s.cmd("INV", deviceid=1, eventid=3)
    assert not s.gic.irq_pending(0)                                  # ... until INV
    s.bus.write(s.a(PROP) + 8, 0x13, 1)
    s.cmd("INVALL", icid=0)
    assert s.gic.irq_pending(0) and s.gic.hppi(0).prio == 0x10
    s.cmd("DISCARD", deviceid=1, eventid=3)
    assert not s.gic.irq_pending(0) and not s.its.msi(1, 3)
    s.cmd("MAPI", deviceid=1, eventid=3, icid=0)                     # EventID 3 is not an LPI INTID
    assert s.errors() == [("MAPI", 0x010B06)]
    s.cmd("MAPD", deviceid=1, size=15, itt_addr=s.a(ITT), v=1)
    s.cmd("MAPI", deviceid=1, eventid=8201, icid=0)
    assert s.its.msi(1, 8201) and s.ack(0) == 8201


def test_movi_and_movall_move_pending_lpis_between_redistributors():
    s = System()
    s.map(dev=1, ev=0, intid=8192, icid=0, cpu=0)
    s.cmd("MAPC", icid=1, rdbase=1 << 16, v=1)
    s.cmd("INT", deviceid=1, eventid=0)
    s.cmd("MOVI", deviceid=1, eventid=0, icid=1)
    assert not s.gic.irq_pending(0) and s.gic.irq_pending(1)
    assert s.its.msi(1, 0) and s.gic.redistributor(1).lpi_pending(8192)   # new mapping used
    s.cmd("MOVALL", rdbase=1 << 16, rdbase2=0)
    assert s.gic.irq_pending(0) and not s.gic.irq_pending(1) and s.ack(0) == 8192
    check_consistent(s.gic)


def test_command_errors_are_recorded_with_their_codes_and_the_queue_goes_on():
    s = System()
    s.map(dev=1, ev=0, intid=8192, icid=0)
    bad = [("MAPD", dict(deviceid=1 << 16, size=3, itt_addr=0, v=1), 0x010801),   # DeviceID > 16 bits
           ("MAPD", dict(deviceid=2, size=16, itt_addr=0, v=1), 0x010802),        # 17 EventID bits
           ("MAPC", dict(icid=1, rdbase=5 << 16, v=1), 0x010902),                 # no PE 5
           ("MAPTI", dict(deviceid=9, eventid=0, pintid=8192, icid=0), 0x010A04),  # unmapped device
           ("MAPTI", dict(deviceid=1, eventid=32, pintid=8192, icid=0), 0x010A05),  # size 4: 32 events
           ("MAPTI", dict(deviceid=1, eventid=1, pintid=100, icid=0), 0x010A06),
           ("INT", dict(deviceid=1, eventid=1), 0x010307),                          # unmapped interrupt
           ("CLEAR", dict(deviceid=1, eventid=2), 0x010507),
           ("INV", dict(deviceid=1, eventid=2), 0x010C07),
           ("DISCARD", dict(deviceid=1, eventid=2), 0x010F07),
           ("INVALL", dict(icid=7), 0x010D09),                                      # unmapped collection
           ("MOVI", dict(deviceid=1, eventid=0, icid=7), 0x010109),
           ("MOVI", dict(deviceid=1, eventid=5), 0x010107),
           ("MOVALL", dict(rdbase=0, rdbase2=9 << 16), 0x010E01)]
    for name, fields, _ in bad:
        s.cmd(name, **fields)
    assert s.errors() == [(name, code) for name, _, code in bad]
    assert s.its.read(CREADR, 8) == (3 + len(bad)) * 32 and not s.its.read(CREADR, 8) & 1
    assert [r["code"] for r in s.sink.of("gicv3_its_cmd_error")] == [code for _, _, code in bad]
    s.bus.write_bytes(s.a(CMDQ) + 32 * s.n, bytes([0x29]) + bytes(31))   # VMAPP: a GICv4 command
    s.bus.write_bytes(s.a(CMDQ) + 32 * (s.n + 1), bytes([0x77]) + bytes(31))
    s.n += 2
    s.its.write(CWRITER, 32 * s.n, 8)
    assert s.errors()[-2:] == [("opcode 0x29", None), ("opcode 0x77", None)]
    assert s.its.msi(1, 0)                                           # earlier mappings unaffected


def test_a_command_queue_in_no_memory_stalls_until_retry():
    s = System()
    its = s.its
    its.write(CTLR, 0, 4)
    its.write(CBASER, 1 << 63 | 0x9000_0000 | 0, 8)                  # 4 KiB queue where nothing is mapped
    its.write(CTLR, 1, 4)
    its.write(CWRITER, 64, 8)
    assert its.read(CREADR, 8) == 1 and its.state()["stalled"]       # Stalled, nothing executed
    its.write(CWRITER, 64, 8)
    assert its.read(CREADR, 8) == 1                                  # still stalled without Retry
    its.write(CWRITER, 64 | 1, 8)
    assert its.read(CREADR, 8) == 1 and its.stats["stalls"] == 2      # retried, and stalled again
    assert [r["reason"] for r in s.sink.of("gicv3_its_cmdq_stall")] == ["unmapped"] * 2
    its.write(CTLR, 0, 4)
    its.write(CBASER, 1 << 63 | s.a(CMDQ) | 0, 8)
    its.write(CTLR, 1, 4)
    its.write(CWRITER, 0x1000, 8)                                    # beyond the queue: ignored
    assert its.stats["queue_offset_out_of_range"] == 1


def test_queue_wraps_around():
    s = System()
    its = s.its
    its.write(CTLR, 0, 4)
    its.write(CBASER, 1 << 63 | s.a(CMDQ), 8)                        # one page: 128 commands
    its.write(CTLR, 1, 4)
    s.n = 0
    for i in range(130):
        s.bus.write_bytes(s.a(CMDQ) + 32 * (i % 128), encode("SYNC", rdbase=0))
        its.write(CWRITER, 32 * ((i + 1) % 128), 8)
    assert its.read(CREADR, 8) == 64 and its.stats["SYNC"] == 130


def test_two_level_device_table():
    s = System(device_baser=1 << 63 | 1 << 62 | 2 << 8 | (RAM + 0x10000))
    l2 = s.a(RAM + 0x70000)
    s.bus.write(s.a(DEVT) + 8, 1 << 63 | l2, 8)                      # level 1 entry 1: DeviceIDs 8192-16383
    s.map(dev=8200, ev=1, intid=8193)
    assert s.errors() == [] and DTE.unpack(s.bus.read(l2 + 8 * 8, 8))["valid"] == 1
    assert not s.its.state()["stalled"]
    s.cmd("MAPD", deviceid=5, size=3, itt_addr=s.a(ITT), v=1)       # level 1 entry 0 not valid
    assert s.errors() == [("MAPD", 0x010801)]
    assert s.its.msi(8200, 1) and not s.its.msi(5, 1) and s.ack(0) == 8193


# -- MSIs from the bus side: DeviceIDs, isolation --------------------------------------------------------------
def test_msis_that_translate_to_nothing_are_dropped_and_counted_never_raised():
    s = System()
    s.map(dev=1, ev=0, intid=8192)
    for dev, ev in ((0xFFFF_FFFF, 0), (1 << 16, 0), (2, 0), (1, 1), (1, 1 << 31)):
        assert not s.its.msi(dev, ev)
    s.cmd("MAPC", icid=0, v=0)                                       # unmapped collection
    assert not s.its.msi(1, 0)
    reasons = [r["reason"] for r in s.sink.of("gicv3_its_translation_error")]
    assert reasons == ["device_oor", "device_oor", "unmapped_device", "unmapped_interrupt", "id_oor",
                       "unmapped_collection"]
    s.its.write(CTLR, 0, 4)
    assert not s.its.msi(1, 0) and s.its.stats["msis_dropped"] == 7
    s.its.doorbell(1).write(0x44, 0, 4)                              # not TRANSLATER: counted
    assert s.its.doorbell(1).read(0x40, 4) == 0 and s.its.bad.counts["gits_translation_write"] == 1


def test_cpu_writes_to_translater_carry_the_configured_device_id():
    s = System()
    s.map(dev=0, ev=4, intid=8194)
    s.its.write(GITS_TRANSLATER, 4, 4)                               # QEMU: CPU requester ID 0
    assert s.ack(0) == 8194
    s.eoi(0, 8194)
    quiet = System(cpu_device_id=None)
    quiet.map(dev=0, ev=4, intid=8194)
    quiet.its.write(GITS_TRANSLATER, 4, 2)
    assert not quiet.gic.irq_pending(0)


def test_each_vm_has_its_own_its_and_tables():
    a = System(ram=0x4000_0000)
    b = System(ram=0x8000_0000)
    a.map(dev=1, ev=0, intid=8192)
    b_before = bytes(b.bus.read_bytes(0x8000_0000, 0x10_0000))
    assert a.its.msi(1, 0) and a.gic.irq_pending(0)
    assert not b.its.msi(1, 0) and not b.gic.irq_pending(0)
    # a's guest points its tables at b's addresses: it reads only its own address space (no memory there)
    a.its.write(CTLR, 0, 4)
    a.its.write(BASER, 1 << 63 | 2 << 8 | 0x8001_0000, 8)
    a.its.write(CTLR, 1, 4)
    a.cmd("MAPD", deviceid=3, size=3, itt_addr=0x8008_0000, v=1)
    assert not a.its.msi(3, 0)
    assert bytes(b.bus.read_bytes(0x8000_0000, 0x10_0000)) == b_before
    assert b.gic.state()["cpus"][0]["lpis_pending"] == []
