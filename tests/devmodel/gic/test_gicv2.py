"""GICv2 model (devmodel/gic/gicv2.py) against IHI 0048B: register map and access rules (4.1, 4.3, 4.4), the
interrupt life cycle for SGIs, PPIs and SPIs (1.4, 3.2), priorities and preemption (3.3), EOImode (3.2.4)."""
import pytest

from devmodel.gic import GicV2
from devmodel.gic.state import NO_ACK_GROUP1, SPURIOUS
from devmodel.trace import ListSink, Tracer

from .helpers import Changes, check_consistent

CTLR, TYPER, IIDR, SGIR = 0x000, 0x004, 0x008, 0xF00
ISENABLER, ICENABLER, ISPENDR, ICPENDR, ISACTIVER, ICACTIVER = 0x100, 0x180, 0x200, 0x280, 0x300, 0x380
IPRIORITYR, ITARGETSR, ICFGR, IGROUPR, CPENDSGIR, SPENDSGIR = 0x400, 0x800, 0xC00, 0x080, 0xF10, 0xF20
C_CTLR, C_PMR, C_BPR, C_IAR, C_EOIR, C_RPR, C_HPPIR, C_ABPR, C_DIR = 0, 4, 8, 0xC, 0x10, 0x14, 0x18, 0x1C, 0x1000


class Gic:
    """A GICv2 with shorthands: d(cpu) / c(cpu) are that CPU's distributor and CPU interface views."""

    def __init__(self, cpus=2, irqs=288, **kw):
        self.changes = Changes()
        self.sink = ListSink()
        self.g = GicV2(cpus, irqs, tracer=Tracer("gic_*", [self.sink]), on_change=self.changes, **kw)

    def d(self, cpu=0):
        return self.g.distributor_for(cpu)

    def c(self, cpu=0):
        return self.g.cpu_interface_for(cpu)

    def spi(self, intid, prio=0x80, target=1, group=0, edge=False):
        d = self.d()
        d.write(IPRIORITYR + intid, prio, 1)
        d.write(ITARGETSR + intid, target, 1)
        reg, bit = divmod(intid, 32)
        d.write(IGROUPR + 4 * reg, d.read(IGROUPR + 4 * reg, 4) & ~(1 << bit) | group << bit, 4)
        cfg = ICFGR + 4 * (intid // 16)
        shift = 2 * (intid % 16) + 1
        d.write(cfg, d.read(cfg, 4) & ~(1 << shift) | int(edge) << shift, 4)
        d.write(ISENABLER + 4 * reg, 1 << bit, 4)

    def on(self, cpu=0, ctlr=0x7, pmr=0xFF, dist=0x3):
        self.d().write(CTLR, dist, 4)
        self.c(cpu).write(C_PMR, pmr, 4)
        self.c(cpu).write(C_CTLR, ctlr, 4)

    def iar(self, cpu=0):
        return self.c(cpu).read(C_IAR, 4)

    def eoi(self, value, cpu=0):
        self.c(cpu).write(C_EOIR, value, 4)

    def bit(self, base, intid, cpu=0):
        return self.d(cpu).read(base + 4 * (intid // 32), 4) >> (intid % 32) & 1


# -- register map, reset values, access rules (IHI 0048B 4.1.4, 4.3) -------------------------------------------
@pytest.mark.parametrize("cpus,irqs,typer", [(1, 64, 0x01), (2, 288, 0x28), (8, 1024, 0xFF)])
def test_typer_reports_lines_and_cpus(cpus, irqs, typer):
    g = GicV2(cpus, irqs)
    assert g.distributor_for(0).read(TYPER, 4) == typer
    assert g.num_irqs == min(irqs, 1020)                            # INTIDs 1020-1023 are special


def test_identification_registers():
    g = Gic()
    d, c = g.d(), g.c()
    assert d.read(IIDR, 4) == 0x43B
    assert (d.read(0xFE8, 4) >> 4) & 0xF == 2                      # PIDR2.ArchRev = GICv2
    assert [d.read(o, 4) for o in range(0xFF0, 0x1000, 4)] == [0x0D, 0xF0, 0x05, 0xB1]
    assert c.read(0xFC, 4) == 0x0002_043B                           # GICC_IIDR: ArchVersion 2
    assert c.read(C_RPR, 4) == 0xFF and c.read(C_IAR, 4) == SPURIOUS and c.read(C_HPPIR, 4) == SPURIOUS


def test_read_only_registers_ignore_writes_and_bad_accesses_are_raz_wi_and_counted():
    g = Gic()
    d = g.d()
    for off in (TYPER, IIDR, 0xFE8):
        before = d.read(off, 4)
        d.write(off, 0xFFFFFFFF, 4)
        assert d.read(off, 4) == before
    assert g.g.bad.total == 0
    assert d.read(0x0C, 4) == 0                                     # reserved
    d.write(CTLR, 1, 1)                                             # byte access to a word-only register
    assert d.read(CTLR, 4) == 0
    assert d.read(ISENABLER, 2) == 0                                # halfword: never allowed
    d.write(ISENABLER + 4 * 20, 1, 4)                               # INTIDs beyond ITLinesNumber
    assert d.read(ISENABLER + 4 * 20, 4) == 0
    assert g.c().read(0x2C, 4) == 0
    assert g.g.bad.total == 6
    assert g.g.bad.counts["gicd_write"] == 2 and g.g.bad.counts["gicc_read"] == 1


def test_priority_and_target_registers_are_byte_accessible_and_targets_mask_missing_cpus():
    g = Gic(cpus=3)
    d = g.d()
    d.write(IPRIORITYR + 40, 0xFF7FBF3F, 4)
    assert d.read(IPRIORITYR + 41, 1) == 0xBF
    d.write(IPRIORITYR + 42, 0x1F, 1)
    assert d.read(IPRIORITYR + 40, 4) == 0xFF1FBF3F                 # all 8 bits implemented
    d.write(ITARGETSR + 40, 0xFFFFFFFF, 4)
    assert d.read(ITARGETSR + 40, 4) == 0x07070707                  # 3 CPUs: bits 3-7 RAZ/WI
    d.write(ITARGETSR + 41, 0x02, 1)
    assert d.read(ITARGETSR + 40, 4) == 0x07070207
    assert [g.d(c).read(ITARGETSR, 4) for c in range(3)] == [0x01010101, 0x02020202, 0x04040404]
    g.d(1).write(ITARGETSR + 16, 0xFFFFFFFF, 4)                     # SGI/PPI targets are read-only
    assert g.d(1).read(ITARGETSR + 16, 4) == 0x02020202


def test_uniprocessor_targets_are_raz_wi_and_every_spi_goes_to_cpu0():
    g = Gic(cpus=1)
    g.d().write(ITARGETSR + 40, 0xFF, 1)
    assert g.d().read(ITARGETSR + 40, 1) == 0
    g.on(0)
    g.d().write(ISENABLER + 4, 1 << 8, 4)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert g.g.irq_pending(0) and g.iar() == 40


def test_sgis_are_permanently_enabled_edge_triggered_and_icfgr_fields_follow_the_map():
    g = Gic()
    d = g.d()
    assert d.read(ISENABLER, 4) == 0xFFFF
    d.write(ICENABLER, 0xFFFFFFFF, 4)
    assert d.read(ISENABLER, 4) == 0xFFFF                           # PPIs disabled, SGIs stay enabled
    d.write(ICFGR, 0, 4)
    assert d.read(ICFGR, 4) == 0xAAAAAAAA
    d.write(ICFGR + 4, 0xFFFFFFFF, 4)                               # PPIs: only the edge bits
    assert d.read(ICFGR + 4, 4) == 0xAAAAAAAA
    assert g.d(1).read(ICFGR + 4, 4) == 0                           # ... banked per CPU
    d.write(ICFGR + 8, 0x55555555, 4)
    assert d.read(ICFGR + 8, 4) == 0


# -- SGIs (IHI 0048B 3.2.2, 4.3.15) ----------------------------------------------------------------------------
def test_sgir_target_list_filters_and_per_source_pending_state():
    g = Gic(cpus=4)
    for c in range(4):
        g.on(c)
    g.d(0).write(SGIR, (0b1010 << 16) | 3, 4)                       # list: CPUs 1 and 3
    assert [g.bit(ISPENDR, 3, c) for c in range(4)] == [0, 1, 0, 1]
    g.d(2).write(SGIR, (1 << 24) | 3, 4)                            # all but self, from CPU 2
    g.d(1).write(SGIR, (2 << 24) | 3, 4)                            # self, from CPU 1
    assert g.d(1).read(SPENDSGIR, 4) >> 24 == 0b0111                # CPU 1: sources 0, 1, 2
    assert g.d(2).read(SPENDSGIR, 4) >> 24 == 0
    assert [g.iar(1) for _ in range(2)] == [3, SPURIOUS]            # active (banked) after the first
    g.eoi(3, 1)
    assert g.iar(1) == 3 | 1 << 10 and g.d(1).read(SPENDSGIR, 4) >> 24 == 0b0100
    g.eoi(3 | 1 << 10, 1)
    assert g.iar(1) == 3 | 2 << 10
    g.eoi(3, 1)
    assert g.iar(1) == SPURIOUS and g.bit(ISPENDR, 3, 1) == 0
    assert [r["targets"] for r in g.sink.of("gic_sgi")] == [0b1010, 0b1011, 0b0010]
    g.d(0).write(SGIR, (3 << 24) | 4, 4)                            # reserved filter: ignored, counted
    assert all(g.bit(ISPENDR, 4, c) == 0 for c in range(4)) and g.g.bad.counts["gicd_sgir_filter"] == 1


def test_spendsgir_cpendsgir_set_and_clear_sources_and_ispendr_cannot_touch_sgis():
    g = Gic()
    g.on(0)
    d = g.d()
    d.write(ISPENDR, 0xFFFF, 4)
    assert d.read(ISPENDR, 4) == 0                                  # SGI bits are read-only
    d.write(SPENDSGIR + 5, 0xFF, 1)                                 # SGI 5, sources 0-7 (only 0, 1 exist)
    assert d.read(SPENDSGIR + 4, 4) == 0x0300 and g.bit(ISPENDR, 5)
    d.write(CPENDSGIR + 4, 0x0100, 4)
    assert d.read(SPENDSGIR + 4, 4) == 0x0200
    assert g.iar() == 5 | 1 << 10
    d.write(ICPENDR, 0xFFFF, 4)                                     # WI for SGIs too
    d.write(SPENDSGIR + 4, 0x0300, 4)
    d.write(CPENDSGIR + 4, 0x0300, 4)
    assert not g.bit(ISPENDR, 5) and g.bit(ISACTIVER, 5)
    check_consistent(g.g)


# -- PPIs and SPIs: levels, edges, 1-N (IHI 0048B 1.4.2, 3.2.1) ------------------------------------------------
def test_level_sensitive_spi_is_pending_while_high_and_becomes_active_and_pending():
    g = Gic()
    g.on(0)
    g.spi(40)
    g.g.set_spi(40, True)
    assert g.g.irq_pending(0) and g.bit(ISPENDR, 40)
    assert g.iar() == 40
    assert g.bit(ISPENDR, 40) and g.bit(ISACTIVER, 40)              # active and pending: the line is high
    assert not g.g.irq_pending(0)                                   # running priority = its own
    g.d().write(ICPENDR + 4, 1 << 8, 4)                             # clears the latch only
    assert g.bit(ISPENDR, 40)
    g.g.set_spi(40, False)
    assert not g.bit(ISPENDR, 40)
    g.eoi(40)
    assert not g.g.irq_pending(0) and not g.bit(ISACTIVER, 40)
    g.g.set_spi(40, True)
    g.eoi(40)                                                       # nothing active: ignored
    assert g.g.irq_pending(0)
    check_consistent(g.g)


def test_edge_triggered_spi_latches_a_rising_edge_and_pulses():
    g = Gic()
    g.on(0)
    g.spi(41, edge=True)
    g.g.pulse_spi(41)
    assert g.bit(ISPENDR, 41) and g.iar() == 41 and not g.bit(ISPENDR, 41)
    g.g.pulse_spi(41)                                               # while active: active and pending
    assert g.bit(ISPENDR, 41) and g.bit(ISACTIVER, 41)
    g.eoi(41)
    assert g.iar() == 41
    g.g.set_spi(41, True)
    g.d().write(ICPENDR + 4, 1 << 9, 4)
    assert not g.bit(ISPENDR, 41)                                   # edge: the level does not hold it
    levels = [(r["irq"], r["level"]) for r in g.sink.of("gic_set_irq")]
    assert levels == [(41, 1), (41, 0), (41, 1), (41, 0), (41, 1)]


def test_ppis_are_banked_per_cpu():
    g = Gic()
    g.on(0)
    g.on(1)
    for c in (0, 1):
        g.d(c).write(ISENABLER, 1 << 27, 4)
        g.d(c).write(IPRIORITYR + 27, 0x40, 1)
    g.g.set_ppi(1, 27, True)
    assert g.bit(ISPENDR, 27, 1) and not g.bit(ISPENDR, 27, 0)
    assert g.g.irq_pending(1) and not g.g.irq_pending(0)
    assert g.iar(0) == SPURIOUS and g.iar(1) == 27
    assert g.bit(ISACTIVER, 27, 1) and not g.bit(ISACTIVER, 27, 0)
    g.d(0).write(ISPENDR, 1 << 27, 4)                               # software pends CPU 0's copy
    assert g.iar(0) == 27
    with pytest.raises(ValueError):
        g.g.set_ppi(0, 40, True)
    with pytest.raises(ValueError):
        g.g.set_spi(300, True)


def test_spi_targeting_two_cpus_is_taken_by_the_first_acknowledge():
    g = Gic()
    g.on(0)
    g.on(1)
    g.spi(60, target=0b11)
    g.d().write(ISPENDR + 4, 1 << 28, 4)
    assert g.g.irq_pending(0) and g.g.irq_pending(1)
    assert g.changes.take() == [0, 1]
    assert g.iar(1) == 60
    assert not g.g.irq_pending(0) and g.changes.take() == [0, 1]
    assert g.iar(0) == SPURIOUS
    assert g.bit(ISACTIVER, 60, 0) and g.bit(ISACTIVER, 60, 1)      # one active state, visible everywhere
    g.d().write(ITARGETSR + 60, 0, 1)                               # empty target list: pending, not signalled
    g.eoi(60, 1)
    g.d().write(ISPENDR + 4, 1 << 28, 4)
    assert g.bit(ISPENDR, 60) and not g.g.irq_pending(0) and not g.g.irq_pending(1)
    g.d().write(ITARGETSR + 60, 2, 1)
    assert g.g.irq_pending(1) and not g.g.irq_pending(0)
    check_consistent(g.g)


# -- groups, FIQ, enables (IHI 0048B 3.5, 4.4.1) ---------------------------------------------------------------
def test_group0_is_fiq_only_with_fiqen_and_group1_needs_ackctl():
    g = Gic()
    g.on(0, ctlr=0x3)
    g.spi(40, prio=0x40, group=0)
    g.spi(41, prio=0x80, group=1)
    g.d().write(ISPENDR + 4, 0b11 << 8, 4)
    assert (g.g.irq_pending(0), g.g.fiq_pending(0)) == (True, False)
    g.c().write(C_CTLR, 0xB, 4)                                     # FIQEn
    assert (g.g.irq_pending(0), g.g.fiq_pending(0)) == (False, True)
    assert g.iar() == 40
    assert (g.g.irq_pending(0), g.g.fiq_pending(0)) == (False, False)   # 0x80 cannot preempt 0x40
    g.eoi(40)
    assert g.g.irq_pending(0) and g.c().read(C_HPPIR, 4) == NO_ACK_GROUP1
    assert g.iar() == NO_ACK_GROUP1 and g.bit(ISPENDR, 41)
    g.c().write(C_CTLR, 0xF, 4)
    assert g.iar() == 41 and g.c().read(0xE0 + 8, 4) == 1           # GICC_NSAPR2 bit 0: level 64 (0x80)


def test_distributor_and_cpu_interface_group_enables_gate_delivery():
    g = Gic()
    g.on(0, ctlr=0x3, dist=0x1)
    g.spi(40, group=1)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert not g.g.irq_pending(0) and g.c().read(C_HPPIR, 4) == SPURIOUS
    g.d().write(CTLR, 3, 4)
    assert g.g.irq_pending(0)
    g.c().write(C_CTLR, 0x1, 4)
    assert not g.g.irq_pending(0)
    check_consistent(g.g)


# -- priorities, PMR, binary point, preemption (IHI 0048B 3.3) -------------------------------------------------
def test_pmr_masks_and_binary_point_decides_preemption():
    g = Gic()
    g.on(0, ctlr=0x1, pmr=0x90)
    g.spi(50, prio=0x98)
    g.spi(51, prio=0x90)
    g.spi(52, prio=0x70)
    g.d().write(ISPENDR + 4, 1 << 18, 4)
    assert not g.g.irq_pending(0) and g.iar() == SPURIOUS          # 0x98 is not below PMR 0x90
    g.c().write(C_PMR, 0xA0, 4)
    assert g.iar() == 50 and g.c().read(C_RPR, 4) == 0x98           # BPR=0: group priority [7:1]
    g.d().write(ISPENDR + 4, 1 << 19, 4)
    assert g.g.irq_pending(0) and g.iar() == 51                     # 0x90 preempts 0x98
    g.eoi(51)
    g.eoi(50)
    g.c().write(C_BPR, 4, 4)                                        # group priority [7:5]: both 0x80
    g.d().write(ISPENDR + 4, 1 << 18, 4)
    assert g.iar() == 50 and g.c().read(C_RPR, 4) == 0x80
    g.d().write(ISPENDR + 4, 1 << 19, 4)
    assert not g.g.irq_pending(0) and g.iar() == SPURIOUS
    g.d().write(ISPENDR + 4, 1 << 20, 4)                            # 0x70: group 0x60 preempts 0x80
    assert g.g.irq_pending(0) and g.iar() == 52 and g.c().read(C_RPR, 4) == 0x60
    g.eoi(52)
    assert g.c().read(C_RPR, 4) == 0x80 and not g.g.irq_pending(0)
    g.eoi(50)
    assert g.c().read(C_RPR, 4) == 0xFF and g.iar() == 51


def test_equal_priority_goes_to_the_lowest_intid_and_apr_bits_follow_priority_levels():
    g = Gic()
    g.on(0, ctlr=0x1)
    for i in (70, 65, 67):
        g.spi(i, prio=0x60)
    g.d().write(ISPENDR + 8, (1 << 6) | (1 << 1) | (1 << 3), 4)
    assert g.c().read(C_HPPIR, 4) == 65 and g.iar() == 65
    assert g.c().read(0xD4, 4) == 1 << 16                           # GICC_APR1: level 0x60 >> 1 = 48
    g.c().write(0xD0, 1 << 8, 4)                                    # software raises the running priority
    assert g.c().read(C_RPR, 4) == 0x10
    g.c().write(0xD0, 0, 4)
    g.c().write(0xD4, 0, 4)
    assert g.c().read(C_RPR, 4) == 0xFF and g.g.irq_pending(0)


def test_abpr_governs_group1_unless_cbpr():
    g = Gic()
    g.on(0, ctlr=0x7)
    assert g.c().read(C_ABPR, 4) == 1
    g.c().write(C_ABPR, 0, 4)
    assert g.c().read(C_ABPR, 4) == 1                               # minimum is BPR minimum + 1
    g.c().write(C_BPR, 7, 4)                                        # Group 0 binary point: no group bits
    g.spi(40, prio=0x98, group=1)
    g.spi(41, prio=0x90, group=1)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert g.iar() == 40 and g.c().read(C_RPR, 4) == 0x98           # ABPR=1: group priority [7:1]
    g.d().write(ISPENDR + 4, 1 << 9, 4)
    assert g.g.irq_pending(0)
    g.c().write(C_CTLR, 0x17, 4)                                    # CBPR=1: Group 1 uses GICC_BPR
    g.eoi(40)
    assert g.iar() == 41 and g.c().read(C_RPR, 4) == 0x00           # BPR=7: group priority 0
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert not g.g.irq_pending(0)


# -- EOImode, deactivation (IHI 0048B 3.2.4, 4.4.15) -----------------------------------------------------------
def test_eoimode1_splits_priority_drop_and_deactivation():
    g = Gic()
    g.on(0, ctlr=0x201)
    g.spi(40, prio=0x40)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert g.iar() == 40
    g.eoi(40)
    assert g.c().read(C_RPR, 4) == 0xFF and g.bit(ISACTIVER, 40)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert not g.g.irq_pending(0)                                   # still active: not a candidate
    g.c().write(C_DIR, 40, 4)
    assert not g.bit(ISACTIVER, 40) and g.g.irq_pending(0)
    assert [(r["irq"], r["deactivated"]) for r in g.sink.of("gic_eoi")] == [(40, 0)]
    assert [r["irq"] for r in g.sink.of("gic_deactivate")] == [40]
    g.c().write(C_CTLR, 0x1, 4)
    assert g.iar() == 40
    g.c().write(C_DIR, 40, 4)                                       # EOImode=0: DIR is ignored
    assert g.bit(ISACTIVER, 40)
    g.eoi(40)
    assert not g.bit(ISACTIVER, 40)


def test_software_active_state_blocks_delivery_until_cleared():
    g = Gic()
    g.on(0, ctlr=0x1)
    g.spi(40)
    g.d().write(ISACTIVER + 4, 1 << 8, 4)
    g.d().write(ISPENDR + 4, 1 << 8, 4)
    assert not g.g.irq_pending(0)
    g.d().write(ICACTIVER + 4, 1 << 8, 4)
    assert g.g.irq_pending(0)
    check_consistent(g.g)


# -- outputs for the glue --------------------------------------------------------------------------------------
def test_on_change_fires_once_per_output_change_and_traces_line_events():
    g = Gic()
    g.on(0, ctlr=0x1)
    g.spi(40, edge=True)
    g.changes.take()
    g.g.pulse_spi(40)
    assert g.changes.take() == [0]
    g.g.pulse_spi(40)                                               # already pending: no change
    assert g.changes.take() == []
    assert g.iar() == 40 and g.changes.take() == [0]
    g.eoi(40)
    assert g.changes.take() == []
    lines = [(r["cpu"], r["irq"], r["fiq"]) for r in g.sink.of("gic_update_set_irq")]
    assert lines == [(0, 1, 0), (0, 0, 0)]
    assert [(r["cpu"], r["irq"], r["value"]) for r in g.sink.of("gic_acknowledge_irq")] == [(0, 40, 40)]


def test_current_cpu_views_route_by_the_running_cpu():
    running = [0]
    g = GicV2(2, current_cpu=lambda: running[0])
    assert g.distributor.read(ITARGETSR, 4) == 0x01010101
    running[0] = 1
    assert g.distributor.read(ITARGETSR, 4) == 0x02020202
    g.cpu_interface.write(C_PMR, 0x80, 4)
    assert g.cpus[1].read(C_PMR, 4) == 0x80 and g.cpus[0].read(C_PMR, 4) == 0


def test_state_snapshot_and_reset():
    g = Gic()
    g.on(0, ctlr=0x1)
    g.spi(40, prio=0x20)
    g.g.set_spi(40, True)
    g.iar()
    st = g.g.state()
    cpu0 = st["cpus"][0]
    assert st["ctlr"] == 3 and cpu0["active"] == [40] and 40 in cpu0["pending"] and cpu0["rpr"] == 0x20
    g.g.reset()
    st = g.g.state()
    assert st["ctlr"] == 0 and st["cpus"][0]["active"] == [] and st["cpus"][0]["rpr"] == 0xFF
    assert g.d().read(ISENABLER + 4, 4) == 0 and g.d().read(ISENABLER, 4) == 0xFFFF
    assert not g.g.irq_pending(0)
    check_consistent(g.g)


@pytest.mark.parametrize("kw", [dict(num_cpus=0), dict(num_cpus=9), dict(num_irqs=100), dict(num_irqs=2048)])
def test_bad_configurations_are_refused(kw):
    with pytest.raises(ValueError):
        GicV2(**kw)
