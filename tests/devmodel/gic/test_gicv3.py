"""GICv3 distributor and redistributors (devmodel/gic/gicv3.py, gicv3_redist.py) against IHI 0069: register
maps (12.9, 12.10, 12.11), affinity routing (3.1, 4.2), the interrupt life cycle of SPIs and PPIs (4.1), the
architectural choices where the model differs from QEMU (see test_qemu_differential.py)."""
import pytest

from devmodel.gic import GicV3
from devmodel.trace import ListSink, Tracer

from .helpers import Changes, check_consistent

CTLR, TYPER = 0x0000, 0x0004
IGROUPR, ISENABLER, ICENABLER, ISPENDR = 0x80, 0x100, 0x180, 0x200
ICPENDR, ISACTIVER, ICACTIVER = 0x280, 0x300, 0x380
IPRIORITYR, ICFGR, IROUTER = 0x400, 0xC00, 0x6000
SGI = 0x10000


class Gic:
    def __init__(self, cpus=2, **kw):
        self.changes = Changes()
        self.sink = ListSink()
        self.g = GicV3(cpus, tracer=Tracer("gicv3_*", [self.sink]), on_change=self.changes, **kw)
        self.d = self.g.distributor

    def rd(self, cpu):
        return self.g.redistributor(cpu)

    def icc(self, cpu):
        return self.g.cpu_interface(cpu)

    def on(self, cpu, groups=(1,), pmr=0xFF):
        self.d.write(CTLR, 0x3, 4)
        self.icc(cpu).write_sysreg("ICC_PMR_EL1", pmr)
        for grp in groups:
            self.icc(cpu).write_sysreg(f"ICC_IGRPEN{grp}_EL1", 1)

    def spi(self, intid, prio=0x80, aff=0, group=1, edge=False):
        reg, bit = divmod(intid, 32)
        self.d.write(IGROUPR + 4 * reg, self.d.read(IGROUPR + 4 * reg, 4) & ~(1 << bit) | group << bit, 4)
        self.d.write(IPRIORITYR + intid, prio, 1)
        self.d.write(IROUTER + 8 * intid, aff, 8)
        cfg, shift = ICFGR + 4 * (intid // 16), 2 * (intid % 16) + 1
        self.d.write(cfg, self.d.read(cfg, 4) & ~(1 << shift) | int(edge) << shift, 4)
        self.d.write(ISENABLER + 4 * reg, 1 << bit, 4)

    def private(self, cpu, intid, prio=0x80, group=1):
        rd = self.rd(cpu)
        rd.write(SGI + IGROUPR, rd.read(SGI + IGROUPR, 4) & ~(1 << intid) | group << intid, 4)
        rd.write(SGI + IPRIORITYR + intid, prio, 1)
        rd.write(SGI + ISENABLER, 1 << intid, 4)

    def ack(self, cpu, group=1):
        return self.icc(cpu).read_sysreg(f"ICC_IAR{group}_EL1")

    def eoi(self, cpu, intid, group=1):
        self.icc(cpu).write_sysreg(f"ICC_EOIR{group}_EL1", intid)


# -- distributor register map with ARE=1, DS=1 (IHI 0069 12.9) -------------------------------------------------
def test_distributor_control_and_type_as_qemu_virt():
    g = Gic()
    assert g.d.read(CTLR, 4) == 0x50                               # ARE and DS read as one
    g.d.write(CTLR, 0xFFFFFFFF, 4)
    assert g.d.read(CTLR, 4) == 0x53                               # EnableGrp0, EnableGrp1 writable; RWP 0
    g.d.write(CTLR, 0, 4)
    assert g.d.read(CTLR, 4) == 0x50
    typer = g.d.read(TYPER, 4)
    assert typer & 0x1F == 7 and typer >> 17 & 1 and (typer >> 19) & 0x1F == 15
    assert typer >> 24 & 3 == 3                                    # A3V, No1N
    assert GicV3(1, 512, lpis=False).distributor.read(TYPER, 4) & (0x1F | 1 << 17) == 15
    assert (g.d.read(0xFFE8, 4) >> 4) & 0xF == 3                   # PIDR2.ArchRev = GICv3


def test_banked_and_legacy_distributor_registers_are_raz_wi_with_affinity_routing():
    g = Gic()
    for off in (IGROUPR, ISENABLER, ISPENDR, ISACTIVER, IPRIORITYR, ICFGR + 4, 0x800 + 32, 0xD04, 0xE08,
                0xF00, 0xF10, 0xF20):
        g.d.write(off, 0xFFFFFFFF, 4)
        assert g.d.read(off, 4) == 0, hex(off)
    assert g.g.bad.total == 0                                      # architected RAZ/WI, not bad accesses
    g.d.write(ISENABLER + 4 * 8, 1, 4)                             # INTID 256: beyond ITLinesNumber
    assert g.d.read(ISENABLER + 4 * 8, 4) == 0 and g.g.bad.counts["gicd_write"] == 1


def test_irouter_keeps_affinity_fields_only_and_routes_to_the_matching_pe():
    g = Gic(cpus=3, affinities=[0x000, 0x001, 0x1_01_00_02])      # the third PE is Aff3=1 Aff2=1 Aff1=0 Aff0=2
    g.d.write(IROUTER + 8 * 40, 0xFFFF_FFFF_FFFF_FFFF, 8)
    assert g.d.read(IROUTER + 8 * 40, 8) == 0xFF_00FF_FFFF         # RES0 and IRM (No1N=1) read as zero
    g.d.write(IROUTER + 8 * 40 + 4, 0x01, 4)                       # Aff3 through the upper word
    g.d.write(IROUTER + 8 * 40, 0x0001_0002, 4)
    assert g.d.read(IROUTER + 8 * 40, 8) == 0x01_0001_0002
    for c in range(3):
        g.on(c)
    g.spi(40, aff=0x01_0001_0002)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    assert [g.g.irq_pending(c) for c in range(3)] == [False, False, True]
    g.d.write(IROUTER + 8 * 40, 0x0000_0001, 8)                    # re-route while pending
    assert [g.g.irq_pending(c) for c in range(3)] == [False, True, False]
    g.d.write(IROUTER + 8 * 40, 0x0000_0005, 8)                    # no such PE: pending, not signalled
    assert not any(g.g.irq_pending(c) for c in range(3)) and g.d.read(ISPENDR + 4, 4) == 1 << 8
    check_consistent(g.g)


def test_priority_registers_keep_8_bits_and_are_byte_accessible():
    g = Gic()
    g.d.write(IPRIORITYR + 40, 0xFF7FBF3F, 4)
    assert g.d.read(IPRIORITYR + 40, 4) == 0xFF7FBF3F and g.d.read(IPRIORITYR + 43, 1) == 0xFF
    g.rd(1).write(SGI + IPRIORITYR + 5, 0xA5, 1)
    assert g.rd(1).read(SGI + IPRIORITYR + 4, 4) == 0xA500 and g.rd(0).read(SGI + IPRIORITYR + 4, 4) == 0


# -- redistributors (IHI 0069 12.10, 12.11) --------------------------------------------------------------------
def test_redistributor_type_identifies_each_pe_and_the_last_frame():
    g = Gic(cpus=3, affinities=[0x0, 0x100, 0x1_02_03_04])
    typers = [g.g.redistributors.read(c * 0x20000 + 8, 8) for c in range(3)]
    assert [t >> 32 for t in typers] == [0x0, 0x100, 0x1_02_03_04]
    assert [(t >> 8) & 0xFFFF for t in typers] == [0, 1, 2]
    assert [(t >> 4) & 1 for t in typers] == [0, 0, 1]            # Last
    assert all(t & 1 and (t >> 24) & 3 == 1 for t in typers)      # PLPIS, CommonLPIAff
    assert not GicV3(1, lpis=False).redistributors.read(8, 4) & 1
    assert g.g.redistributors.read(3 * 0x20000 + 8, 4) == 0 and g.g.bad.counts["gicr_read"] == 1


def test_waker_children_asleep_follows_processor_sleep():
    g = Gic()
    rd = g.rd(0)
    assert rd.read(0x14, 4) == 0x6
    rd.write(0x14, 0, 4)
    assert rd.read(0x14, 4) == 0
    rd.write(0x14, 0x4, 4)                                          # ChildrenAsleep is read-only
    assert rd.read(0x14, 4) == 0
    rd.write(0x14, 0x2, 4)
    assert rd.read(0x14, 4) == 0x6


def test_sgi_and_ppi_registers_are_per_redistributor_with_writable_sgi_enables():
    g = Gic()
    rd0, rd1 = g.rd(0), g.rd(1)
    rd1.write(SGI + ISENABLER, 0xFFFFFFFF, 4)
    assert rd1.read(SGI + ISENABLER, 4) == 0xFFFFFFFF and rd0.read(SGI + ISENABLER, 4) == 0
    rd1.write(SGI + ICENABLER, 0xFFFF, 4)
    assert rd1.read(SGI + ISENABLER, 4) == 0xFFFF0000
    rd1.write(SGI + ICFGR, 0, 4)
    assert rd1.read(SGI + ICFGR, 4) == 0xAAAAAAAA                  # SGIs: edge, read-only
    rd1.write(SGI + ICFGR + 4, 0xFFFFFFFF, 4)
    assert rd1.read(SGI + ICFGR + 4, 4) == 0xAAAAAAAA and rd0.read(SGI + ICFGR + 4, 4) == 0
    rd1.write(SGI + ISPENDR, 1 << 3, 4)                            # SGIs can be made pending by software
    assert rd1.read(SGI + ISPENDR, 4) == 1 << 3
    rd1.write(SGI + 0xD00, 0xFFFFFFFF, 4)                          # IGRPMODR0, DS=1: RAZ/WI
    assert rd1.read(SGI + 0xD00, 4) == 0


# -- SPI / PPI life cycle (IHI 0069 4.1) -----------------------------------------------------------------------
def test_level_and_edge_spis_and_ppis():
    g = Gic()
    g.on(0)
    g.on(1)
    g.spi(50, prio=0x40)
    g.g.set_spi(50, True)
    assert g.g.irq_pending(0) and g.ack(0) == 50
    assert g.d.read(ISPENDR + 4, 4) >> 18 & 1 and g.d.read(ISACTIVER + 4, 4) >> 18 & 1
    g.g.set_spi(50, False)
    assert not g.d.read(ISPENDR + 4, 4) >> 18 & 1
    g.eoi(0, 50)
    assert not g.g.irq_pending(0)
    g.private(1, 27, prio=0x30)
    g.g.pulse_ppi(1, 27)
    assert not g.g.irq_pending(1)                                   # PPIs are level by default: a pulse is lost
    g.rd(1).write(SGI + ICFGR + 4, 2 << 22, 4)                     # INTID 27 edge-triggered
    g.g.pulse_ppi(1, 27)
    assert g.g.irq_pending(1) and not g.g.irq_pending(0) and g.ack(1) == 27
    assert [(r["cpu"], r["irq"], r["level"]) for r in g.sink.of("gicv3_redist_set_irq")] == \
        [(1, 27, 1), (1, 27, 0), (1, 27, 1), (1, 27, 0)]
    assert [(r["irq"], r["level"]) for r in g.sink.of("gicv3_dist_set_irq")] == [(50, 1), (50, 0)]
    with pytest.raises(ValueError):
        g.g.set_spi(256, True)
    check_consistent(g.g)


def test_distributor_group_enables_gate_every_interrupt_class():
    g = Gic()
    g.on(0, groups=(0, 1))
    g.spi(40, group=0, prio=0x20)
    g.private(0, 5, group=1, prio=0x30)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    g.rd(0).write(SGI + ISPENDR, 1 << 5, 4)
    assert g.g.fiq_pending(0) and not g.g.irq_pending(0)           # Group 0 wins on priority
    g.d.write(CTLR, 0x2, 4)                                        # Group 0 off at the distributor
    assert g.g.irq_pending(0) and not g.g.fiq_pending(0)
    g.d.write(CTLR, 0x0, 4)
    assert not g.g.irq_pending(0) and not g.g.fiq_pending(0)
    assert g.changes.take() == [0, 0, 0]                          # FIQ, then IRQ, then nothing
    check_consistent(g.g)


def test_state_snapshot_and_reset():
    g = Gic()
    g.on(0)
    g.spi(40, prio=0x20)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    st = g.g.state()["cpus"][0]
    assert st["hppi"] == 40 and st["irq"] and st["pending"] == [40] and st["igrpen1"] == 1
    g.ack(0)
    assert g.g.state()["cpus"][0]["active"] == [40] and g.g.state()["cpus"][0]["rpr"] == 0x20
    g.g.reset()
    st = g.g.state()
    assert st["ctlr"] == 0x50 and st["cpus"][0]["active"] == [] and st["cpus"][0]["pmr"] == 0
    assert st["cpus"][0]["waker"] == 0x6 and not g.g.irq_pending(0)
    check_consistent(g.g)


@pytest.mark.parametrize("kw", [dict(num_cpus=0), dict(num_irqs=48), dict(num_irqs=1056),
                                dict(num_cpus=2, affinities=[1, 1]), dict(num_cpus=2, affinities=[0])])
def test_bad_configurations_are_refused(kw):
    with pytest.raises(ValueError):
        GicV3(**kw)
