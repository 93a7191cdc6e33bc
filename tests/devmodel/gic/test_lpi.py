"""LPIs at the GICv3 redistributors (devmodel/gic/lpi.py, gicv3_redist.py) against IHI 0069 5.1: the property
and pending tables in memory, GICR_CTLR.EnableLPIs, GICR_PROPBASER / GICR_PENDBASER."""
import pytest

from devmodel.bus import Bus
from devmodel.gic import GicV3
from devmodel.gic.lpi import LPI_BASE, lpi_limit, pending_in, prop_entry

from .helpers import check_consistent

RAM, PROP, PEND = 0x4000_0000, 0x4000_0000, 0x4001_0000


def test_pure_helpers():
    assert prop_entry(0xA3) == (0xA0, True) and prop_entry(0x42) == (0x40, False)
    assert lpi_limit(13, 15) == 1 << 14 and lpi_limit(31, 15) == 1 << 16 and lpi_limit(12, 15) == LPI_BASE
    assert pending_in(bytes([0b1000_0001, 0, 0x40])) == [8192, 8199, 8192 + 16 + 6]


class Lpis:
    def __init__(self, cpus=1, idbits=13):
        self.bus = Bus()
        self.bus.add_ram(RAM, 0x10_0000)
        self.g = GicV3(cpus, dma=self.bus)
        self.g.distributor.write(0, 2, 4)
        for c in range(cpus):
            icc = self.g.cpu_interface(c)
            icc.write_sysreg("ICC_PMR_EL1", 0xFF)
            icc.write_sysreg("ICC_IGRPEN1_EL1", 1)
            rd = self.g.redistributor(c)
            rd.write(0x70, PROP | idbits, 8)
            rd.write(0x78, PEND + c * 0x2000, 8)
        self.prop(8192, 0xA0)

    def prop(self, intid, prio, enabled=True):
        self.bus.write(PROP + intid - LPI_BASE, prio | 0b10 | int(enabled), 1)

    def enable(self, cpu=0, on=True):
        self.g.redistributor(cpu).write(0, int(on), 4)

    def pend_bit(self, intid, cpu=0):
        return self.bus.read(PEND + cpu * 0x2000 + intid // 8, 1) >> (intid % 8) & 1


def test_lpis_are_accepted_only_while_enabled_and_in_the_tables_range():
    t = Lpis()
    rd = t.g.redistributor(0)
    assert not t.g.set_lpi(0, 8192) and rd.lpi_stats["dropped"] == 1 and not t.pend_bit(8192)
    t.enable()
    assert rd.read(0, 4) & 1
    assert not t.g.set_lpi(0, 1 << 14)                              # IDbits=13: INTIDs below 16384
    assert not t.g.set_lpi(0, 8191)
    assert t.g.set_lpi(0, 8192) and t.g.irq_pending(0) and t.pend_bit(8192)
    st = t.g.state()["cpus"][0]
    assert st["lpis_pending"] == [8192] and st["hppi"] == 8192
    check_consistent(t.g)


def test_configuration_byte_sets_priority_and_enable_and_is_reloaded_by_invalidation():
    t = Lpis()
    t.enable()
    t.prop(8193, 0x40, enabled=False)
    assert t.g.set_lpi(0, 8193) and not t.g.irq_pending(0) and t.pend_bit(8193)   # pending, not enabled
    t.prop(8193, 0x40)
    assert not t.g.irq_pending(0)                                   # cached until invalidated
    t.g.redistributor(0).invalidate(8193)
    t.g.settle()
    assert t.g.irq_pending(0)
    assert t.g.set_lpi(0, 8192)
    icc = t.g.cpu_interface(0)
    assert icc.read_sysreg("ICC_IAR1_EL1") == 8193                  # 0x40 before 0xA0
    t.prop(8192, 0x20)
    t.g.redistributor(0).invalidate(None)
    assert t.g.hppi(0).prio == 0x20


def test_enabling_lpis_reads_the_pending_table_and_disabling_keeps_it():
    t = Lpis(idbits=15)
    for intid in (8192, 8200, 40000):
        t.prop(intid, 0x80)
    t.bus.write(PEND + 8200 // 8, 1 << (8200 % 8), 1)
    t.bus.write(PEND + 40000 // 8, 1 << (40000 % 8), 1)
    t.bus.write(PEND + 100, 0xFF, 1)                                # INTIDs < 8192: IMPLEMENTATION DEFINED
    t.enable()
    assert t.g.state()["cpus"][0]["lpis_pending"] == [8200, 40000]
    t.enable(on=False)
    assert t.g.state()["cpus"][0]["lpis_pending"] == [] and not t.g.irq_pending(0)
    assert t.pend_bit(8200) and t.pend_bit(40000)                   # the memory keeps the state
    t.enable()
    icc = t.g.cpu_interface(0)
    assert icc.read_sysreg("ICC_IAR1_EL1") == 8200 and not t.pend_bit(8200)
    check_consistent(t.g)


def test_pendbaser_ptz_is_write_only_and_res0_bits_are_masked():
    t = Lpis()
    rd = t.g.redistributor(0)
    rd.write(0x78, 1 << 62 | 0xFFFF_FFFF_FFFF_FFFF & ~(1 << 62), 8)
    assert rd.read(0x78, 8) == 0x070F_FFFF_FFFF_0F80                 # OuterCache, PA[51:16], Sh, InnerCache
    rd.write(0x70, 0xFFFF_FFFF_FFFF_FFFF, 8)
    assert rd.read(0x70, 8) == 0x070F_FFFF_FFFF_FF9F


def test_table_faults_never_raise():
    t = Lpis()
    rd = t.g.redistributor(0)
    rd.write(0x70, 0x9000_0000 | 13, 8)                             # property table in no memory
    rd.write(0x78, 0x9001_0000, 8)
    t.enable()                                                      # pending table read fault: counted
    assert rd.lpi_stats["pending_table_read_error"] == 1
    assert t.g.set_lpi(0, 8192) and not t.g.irq_pending(0)          # config unreadable: treated as disabled
    assert rd.lpi_stats["property_read_error"] == 1 and rd.lpi_stats["pending_table_write_error"] == 1
    no_dma = GicV3(1)
    no_dma.redistributor(0).write(0x70, PROP | 13, 8)
    no_dma.redistributor(0).write(0, 1, 4)
    assert no_dma.set_lpi(0, 8192) and not no_dma.irq_pending(0)


def test_lpis_are_not_supported_without_plpis():
    g = GicV3(1, lpis=False)
    g.redistributor(0).write(0, 1, 4)
    assert g.redistributor(0).read(0, 4) & 1 == 0                   # EnableLPIs is RES0
    assert not g.set_lpi(0, 8192)
    with pytest.raises(ValueError):
        from devmodel.gic.its import Its
        Its(g)
