"""GICv3 CPU interface (devmodel/gic/gicv3_cpuif.py): the ICC_* system registers of IHI 0069 12.2 — encodings,
reset values and access rules, acknowledge / EOI / deactivate (4.1, 4.4), priority masking and preemption
(4.8), SGI generation (12.2.22, 12.2.23, 12.2.1)."""
import pytest

from devmodel.gic import ICC_BY_NAME, ICC_SYSREGS, GicV3
from devmodel.gic.gicv3_cpuif import sysregs_for
from devmodel.gic.state import SPURIOUS

from .helpers import check_consistent
from .test_gicv3 import ISPENDR, SGI, Gic


def test_encodings_match_linux_sysreg_h_and_access_directions():
    # (op0, op1, CRn, CRm, op2) as arch/arm64/include/asm/sysreg.h defines SYS_ICC_*
    expect = {"ICC_PMR_EL1": (3, 0, 4, 6, 0), "ICC_IAR0_EL1": (3, 0, 12, 8, 0), "ICC_EOIR0_EL1": (3, 0, 12, 8, 1),
              "ICC_HPPIR0_EL1": (3, 0, 12, 8, 2), "ICC_BPR0_EL1": (3, 0, 12, 8, 3),
              **{f"ICC_AP0R{n}_EL1": (3, 0, 12, 8, 4 + n) for n in range(4)},
              **{f"ICC_AP1R{n}_EL1": (3, 0, 12, 9, n) for n in range(4)},
              "ICC_DIR_EL1": (3, 0, 12, 11, 1), "ICC_RPR_EL1": (3, 0, 12, 11, 3),
              "ICC_SGI1R_EL1": (3, 0, 12, 11, 5),
              "ICC_ASGI1R_EL1": (3, 0, 12, 11, 6), "ICC_SGI0R_EL1": (3, 0, 12, 11, 7),
              "ICC_IAR1_EL1": (3, 0, 12, 12, 0), "ICC_EOIR1_EL1": (3, 0, 12, 12, 1),
              "ICC_HPPIR1_EL1": (3, 0, 12, 12, 2), "ICC_BPR1_EL1": (3, 0, 12, 12, 3),
              "ICC_CTLR_EL1": (3, 0, 12, 12, 4), "ICC_SRE_EL1": (3, 0, 12, 12, 5),
              "ICC_IGRPEN0_EL1": (3, 0, 12, 12, 6), "ICC_IGRPEN1_EL1": (3, 0, 12, 12, 7),
              "ICC_SRE_EL2": (3, 4, 12, 9, 5)}
    assert {n: r.encoding for n, r in ICC_BY_NAME.items()} == expect
    assert all(ICC_SYSREGS[enc].name == name for name, enc in expect.items())
    write_only = {n for n, r in ICC_BY_NAME.items() if not r.readable}
    read_only = {n for n, r in ICC_BY_NAME.items() if not r.writable}
    assert write_only == {"ICC_EOIR0_EL1", "ICC_EOIR1_EL1", "ICC_DIR_EL1", "ICC_SGI0R_EL1", "ICC_SGI1R_EL1",
                          "ICC_ASGI1R_EL1"}
    assert read_only == {"ICC_IAR0_EL1", "ICC_IAR1_EL1", "ICC_HPPIR0_EL1", "ICC_HPPIR1_EL1", "ICC_RPR_EL1"}


@pytest.mark.parametrize("pribits,aprs", [(5, 1), (6, 2), (7, 4), (8, 4)])
def test_active_priority_registers_implemented_follow_the_preemption_bits(pribits, aprs):
    names = {r.name for r in sysregs_for(pribits).values()}
    assert {f"ICC_AP1R{n}_EL1" for n in range(4)} & names == {f"ICC_AP1R{n}_EL1" for n in range(aprs)}
    g = GicV3(1, pribits=pribits)
    assert {r.name for r in g.sysreg_table().values()} == names
    icc = g.cpu_interface(0)
    icc.write_sysreg("ICC_PMR_EL1", 0xFF)
    assert icc.read_sysreg("ICC_PMR_EL1") == (0xFF << (8 - pribits)) & 0xFF
    assert (icc.read_sysreg("ICC_CTLR_EL1") >> 8) & 7 == pribits - 1
    prebits = min(pribits, 7)
    assert icc.read_sysreg("ICC_BPR0_EL1") == 7 - prebits and icc.read_sysreg("ICC_BPR1_EL1") == 8 - prebits


def test_reset_values_and_access_rules_of_one_interface():
    g = Gic()
    icc = g.icc(0)
    assert icc.read_sysreg("ICC_CTLR_EL1") == 0x8C00                # PRIbits 4, IDbits 1, A3V
    assert icc.read_sysreg("ICC_SRE_EL1") == 0x7 and icc.read_sysreg("ICC_SRE_EL2") == 0xF
    icc.write_sysreg("ICC_SRE_EL1", 0)
    assert icc.read_sysreg("ICC_SRE_EL1") == 0x7
    icc.write_sysreg("ICC_CTLR_EL1", 0xFFFF_FFFF)
    assert icc.read_sysreg("ICC_CTLR_EL1") == 0x8C03
    icc.write_sysreg("ICC_PMR_EL1", 0xFFFF_FFFF)
    assert icc.read_sysreg("ICC_PMR_EL1") == 0xF8
    icc.write_sysreg("ICC_BPR0_EL1", 0)
    assert icc.read_sysreg("ICC_BPR0_EL1") == 2
    assert icc.read_sysreg("ICC_RPR_EL1") == 0xFF
    assert icc.read_sysreg("ICC_EOIR1_EL1") == 0 and icc.bad["read_ICC_EOIR1_EL1"] == 1   # UNDEFINED: glue's job
    icc.write_sysreg("ICC_RPR_EL1", 0)
    assert icc.bad["write_ICC_RPR_EL1"] == 1
    assert icc.read_sysreg("ICC_AP1R1_EL1") == 0 and icc.bad["read_ICC_AP1R1_EL1"] == 1   # not implemented
    with pytest.raises(KeyError):
        icc.read_sysreg("ICC_NOPE_EL1")                             # a glue bug, not guest input


def test_cbpr_makes_group1_use_bpr0():
    g = Gic()
    icc = g.icc(0)
    icc.write_sysreg("ICC_BPR1_EL1", 5)
    icc.write_sysreg("ICC_CTLR_EL1", 1)
    icc.write_sysreg("ICC_BPR0_EL1", 3)
    assert icc.read_sysreg("ICC_BPR1_EL1") == 4                     # BPR0 + 1 while CBPR=1
    icc.write_sysreg("ICC_BPR1_EL1", 7)                             # ignored while CBPR=1
    icc.write_sysreg("ICC_CTLR_EL1", 0)
    assert icc.read_sysreg("ICC_BPR1_EL1") == 5


# -- acknowledge / EOI / deactivate ----------------------------------------------------------------------------
def test_iar_acknowledges_only_its_group_and_what_can_preempt_hppir_does_not_check_priority():
    g = Gic()
    g.on(0, groups=(0, 1), pmr=0x80)
    g.spi(40, prio=0x90, group=1)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    icc = g.icc(0)
    assert icc.read_sysreg("ICC_HPPIR1_EL1") == 40 and icc.read_sysreg("ICC_HPPIR0_EL1") == SPURIOUS
    assert g.ack(0) == SPURIOUS and not g.g.irq_pending(0)         # masked by PMR
    icc.write_sysreg("ICC_PMR_EL1", 0xF0)
    assert g.ack(0, group=0) == SPURIOUS and g.ack(0) == 40
    assert icc.read_sysreg("ICC_RPR_EL1") == 0x90 and icc.read_sysreg("ICC_AP1R0_EL1") == 1 << (0x90 >> 3)
    g.eoi(0, 40, group=0)                                           # wrong group: ignored, counted
    assert icc.read_sysreg("ICC_RPR_EL1") == 0x90 and icc.bad["eoi_group0_not_highest"] == 1
    g.eoi(0, 1023)                                                  # special INTID: ignored
    g.eoi(0, 40)
    assert icc.read_sysreg("ICC_RPR_EL1") == 0xFF and not g.d.read(0x304, 4)
    assert [r["value"] for r in g.sink.of("gicv3_icc_iar1_read")] == [SPURIOUS, 40]
    assert [(r["group"], r["value"]) for r in g.sink.of("gicv3_icc_eoir_write")] == [(0, 40), (1, 1023), (1, 40)]


def test_nested_preemption_priority_drop_order_and_eoimode1():
    g = Gic()
    g.on(0, groups=(0, 1))
    icc = g.icc(0)
    icc.write_sysreg("ICC_CTLR_EL1", 2)                             # EOImode=1
    g.spi(40, prio=0xA0)
    g.spi(41, prio=0x60, group=0)
    g.spi(42, prio=0x20)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    assert g.ack(0) == 40
    g.d.write(ISPENDR + 4, 1 << 9, 4)
    assert g.g.fiq_pending(0) and g.ack(0, 0) == 41                 # Group 0 preempts: FIQ
    g.d.write(ISPENDR + 4, 1 << 10, 4)
    assert g.g.irq_pending(0) and g.ack(0) == 42
    assert icc.read_sysreg("ICC_RPR_EL1") == 0x20
    assert (icc.read_sysreg("ICC_AP0R0_EL1"), icc.read_sysreg("ICC_AP1R0_EL1")) == (1 << 12, 1 << 20 | 1 << 4)
    g.eoi(0, 41, group=0)                                           # not the highest active group: ignored
    g.eoi(0, 42)
    g.eoi(0, 41, group=0)
    assert icc.read_sysreg("ICC_RPR_EL1") == 0xA0
    assert g.d.read(0x304, 4) >> 8 & 7 == 0b111                     # EOImode=1: all still active
    icc.write_sysreg("ICC_DIR_EL1", 41)
    assert g.d.read(0x304, 4) >> 8 & 7 == 0b101
    g.eoi(0, 40)
    icc.write_sysreg("ICC_DIR_EL1", 40)
    icc.write_sysreg("ICC_DIR_EL1", 42)
    assert g.d.read(0x304, 4) >> 8 & 7 == 0 and icc.read_sysreg("ICC_RPR_EL1") == 0xFF
    icc.write_sysreg("ICC_CTLR_EL1", 0)
    icc.write_sysreg("ICC_DIR_EL1", 40)                             # EOImode=0: UNPREDICTABLE, ignored
    assert icc.bad["dir_with_eoimode0"] == 1
    check_consistent(g.g)


def test_binary_point_of_group1_decides_what_preempts():
    g = Gic()
    g.on(0)
    icc = g.icc(0)
    g.spi(40, prio=0xB8)
    g.spi(41, prio=0xB0)
    icc.write_sysreg("ICC_BPR1_EL1", 5)                             # Group 1, BPR1=5: group priority [7:5]
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    assert g.ack(0) == 40 and icc.read_sysreg("ICC_RPR_EL1") == 0xA0
    g.d.write(ISPENDR + 4, 1 << 9, 4)
    assert not g.g.irq_pending(0) and g.ack(0) == SPURIOUS
    g.eoi(0, 40)
    g.eoi(0, 41)
    icc.write_sysreg("ICC_BPR1_EL1", 3)                             # [7:3]: 0xB0 preempts 0xB8
    assert g.ack(0) == 41
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    assert not g.g.irq_pending(0)
    g.eoi(0, 41)
    assert g.ack(0) == 40
    g.d.write(ISPENDR + 4, 1 << 9, 4)
    assert g.g.irq_pending(0)


def test_software_writes_to_active_priority_registers_move_the_running_priority():
    g = Gic()
    g.on(0)
    icc = g.icc(0)
    g.spi(40, prio=0x80)
    g.d.write(ISPENDR + 4, 1 << 8, 4)
    assert g.g.irq_pending(0)
    icc.write_sysreg("ICC_AP1R0_EL1", 1 << (0x40 >> 3))
    assert icc.read_sysreg("ICC_RPR_EL1") == 0x40 and not g.g.irq_pending(0)
    icc.write_sysreg("ICC_AP1R0_EL1", 0)
    assert g.g.irq_pending(0)


def test_group_enables_of_the_cpu_interface_choose_the_candidates():
    g = Gic()
    g.on(0, groups=(1,))
    g.spi(40, prio=0x10, group=0)
    g.spi(41, prio=0x80, group=1)
    g.d.write(ISPENDR + 4, 0b11 << 8, 4)
    icc = g.icc(0)
    assert g.g.irq_pending(0) and icc.read_sysreg("ICC_HPPIR1_EL1") == 41   # Group 0 disabled here
    icc.write_sysreg("ICC_IGRPEN0_EL1", 1)
    assert g.g.fiq_pending(0) and not g.g.irq_pending(0) and g.ack(0) == SPURIOUS
    assert g.ack(0, 0) == 40
    icc.write_sysreg("ICC_IGRPEN1_EL1", 0)
    g.eoi(0, 40, 0)
    assert not g.g.irq_pending(0) and icc.read_sysreg("ICC_HPPIR1_EL1") == SPURIOUS
    check_consistent(g.g)


# -- SGIs (IHI 0069 12.2.22) -----------------------------------------------------------------------------------
def sgi1r(intid, targets=0, aff1=0, aff2=0, aff3=0, irm=0, rs=0):
    return targets | aff1 << 16 | intid << 24 | aff2 << 32 | irm << 40 | rs << 44 | aff3 << 48


def test_sgi1r_reaches_the_pes_its_affinity_and_target_list_name():
    affs = [0x000, 0x001, 0x00F, 0x100, 0x1_02_03_00]
    g = Gic(cpus=5, affinities=affs)
    for c in range(5):
        g.on(c)
        g.private(c, 7)
    icc = g.icc(0)
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(7, targets=1 << 1 | 1 << 15))
    assert [g.g.irq_pending(c) for c in range(5)] == [False, True, True, False, False]
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(7, targets=1, aff1=1))
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(7, targets=1, aff1=3, aff2=2, aff3=1))
    assert [g.g.irq_pending(c) for c in range(5)] == [False, True, True, True, True]
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(7, targets=1, rs=1))   # RS is RES0 (RSS=0): Aff0 = 0
    assert g.g.irq_pending(0)
    assert [r["targets"] for r in g.sink.of("gicv3_icc_generate_sgi")] == [[1, 2], [3], [4], [0]]
    assert [g.ack(c) for c in range(5)] == [7] * 5


def test_irm_broadcasts_to_every_other_pe_and_groups_must_match():
    g = Gic(cpus=3)
    for c in range(3):
        g.on(c, groups=(0, 1))
        g.private(c, 1, group=1)
        g.private(c, 2, prio=0x40, group=0)
    icc = g.icc(1)
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(1, irm=1))
    assert [g.g.irq_pending(c) for c in range(3)] == [True, False, True]
    icc.write_sysreg("ICC_SGI1R_EL1", sgi1r(2, irm=1))              # Group 1 request, Group 0 SGI: dropped
    assert not any(g.g.fiq_pending(c) for c in range(3))
    icc.write_sysreg("ICC_SGI0R_EL1", sgi1r(2, targets=0b1))
    assert g.g.fiq_pending(0)
    icc.write_sysreg("ICC_SGI0R_EL1", sgi1r(1, targets=0b100))      # Group 0 request, Group 1 SGI: dropped
    icc.write_sysreg("ICC_ASGI1R_EL1", sgi1r(2, targets=0b100))     # DS=1: "Secure Group 1" hits Group 0
    assert g.g.fiq_pending(2)
    sent = [(r["cpu"], r["irq"]) for r in g.sink.of("gicv3_redist_send_sgi")]
    assert sent == [(0, 1), (2, 1), (0, 2), (2, 2)]


def test_lpi_acknowledge_clears_pending_and_eoi_only_drops_priority():
    from devmodel.bus import Bus
    bus = Bus()
    bus.add_ram(0x4000_0000, 0x10_0000)
    g = GicV3(1, dma=bus)
    bus.write(0x4000_0000, 0xA3, 1)                                 # LPI 8192: priority 0xA0, enabled
    rd = g.redistributor(0)
    rd.write(0x70, 0x4000_0000 | 13, 8)
    rd.write(0x78, 0x4001_0000, 8)
    rd.write(0x0, 1, 4)
    icc = g.cpu_interface(0)
    icc.write_sysreg("ICC_PMR_EL1", 0xFF)
    icc.write_sysreg("ICC_IGRPEN1_EL1", 1)
    g.distributor.write(0, 2, 4)
    assert g.set_lpi(0, 8192) and g.irq_pending(0)
    assert icc.read_sysreg("ICC_IAR1_EL1") == 8192 and not rd.lpi_pending(8192)
    assert bus.read(0x4001_0000 + 1024, 1) == 0 and icc.read_sysreg("ICC_RPR_EL1") == 0xA0
    assert g.set_lpi(0, 8192) and g.irq_pending(0) is False         # pending again, but priority is running
    icc.write_sysreg("ICC_EOIR1_EL1", 8192)
    assert icc.read_sysreg("ICC_RPR_EL1") == 0xFF and g.irq_pending(0)
    check_consistent(g)
