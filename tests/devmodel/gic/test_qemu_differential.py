"""The GIC models against QEMU 7.2 (`qemu-system-aarch64 -M virt,gic-version=2|3 -cpu max`), the behaviour
kvm-unit-tests' verdicts are taken from: the same script of MMIO and ICC_* accesses runs on QEMU (probe guest,
qemu_probe.py) and on the models, and every value read must agree.

Where the models deliberately follow the architecture rather than QEMU, the scripts leave those bits alone and
test_gicv2.py / test_gicv3.py pin the architectural behaviour instead:
* GICv2: QEMU stores GICD_ITARGETSR and GICD_SPENDSGIR bits of CPUs that do not exist (kvm-unit-tests'
  gicv2-mmio fails on it for that); the architecture makes them RAZ/WI.
* GICv2: QEMU treats SPIs with the N-N model (each target CPU acknowledges its own copy); GICv2 SPIs are 1-N
  (the first acknowledge takes it for all). QEMU sets an SGI pending through GICD_ISPENDR0 or GICD_SPENDSGIRn
  without a source it can acknowledge and then aborts (an assertion) on GICC_IAR; the architecture makes the
  GICD_ISPENDR0 SGI bits read-only and SPENDSGIR sources acknowledgeable. QEMU treats the reserved
  GICD_SGIR.TargetListFilter 0b11 as "self"; the model ignores it (counted).
* GICv2: QEMU keeps SPI pending state per target CPU, so GICD_ISPENDR does nothing for an SPI with an empty
  GICD_ITARGETSR, nor for PPIs (their target is 0 in QEMU); the architecture makes them pending.
* GICv3: QEMU stores RES0 bits (GICD_IROUTER, GICR_PROPBASER/PENDBASER, GITS_CBASER, ICC_PMR_EL1 [31:8]) and
  reads PTZ back; it
  also implements INTIDs 256-287 although GICD_TYPER.ITLinesNumber (7) says 256 INTIDs: the model makes them
  RAZ/WI as the architecture does for INTIDs beyond ITLinesNumber.
"""
from __future__ import annotations

import pytest

from devmodel.gic.gicv3 import GICV3_DIST_ARRAYS

from devmodel.gic.its_cmd import encode

from .qemu_probe import (GICC, GICD, GICR, ITS_BASE, QEMU, TABLES, ModelBoard, mrs, msr, r32, r64, r8, run_model,
                         run_qemu, w32, w64, w8)

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]


def compare(ops, gic, cpus):
    want = run_qemu(ops, gic, cpus)
    got = run_model(ops, ModelBoard(gic, cpus))
    assert len(want) == len(got)
    diffs = [(i, ops_reads(ops)[i], hex(w), hex(g)) for i, (w, g) in enumerate(zip(want, got)) if w != g]
    assert not diffs, diffs[:20]


def ops_reads(ops):
    """Readable descriptions of the ops that produce values, in order (for failure messages)."""
    from .qemu_probe import MRS, R8, R16, R32, R64, SYSREGS
    out = []
    for o in ops:
        if o.kind == MRS:
            out.append(f"cpu{o.cpu} mrs {SYSREGS[o.addr]}")
        elif o.kind in (R8, R16, R32, R64):
            out.append(f"cpu{o.cpu} r{8 << (o.kind - R8)} {o.addr:#x}")
    return out


def sweep(base, start, end, cpu=0):
    return [r32(base + off, cpu) for off in range(start, end, 4)]


def test_gicv2_reset_values_every_register_both_cpus():
    ops = sweep(GICD, 0, 0x1000) + sweep(GICC, 0, 0x100) + [r32(GICC + 0x1000)]
    ops += sweep(GICD, 0x800, 0x840, cpu=1) + sweep(GICD, 0x100, 0x104, cpu=1) + sweep(GICC, 0, 0x30, cpu=1)
    compare(ops, 2, 2)


def test_gicv2_uniprocessor_targets_are_raz_wi():
    ops = [r32(GICD + 4), r32(GICD + 0x820), w32(GICD + 0x820, 0x0103020F), r32(GICD + 0x820), r32(GICD + 0x800)]
    compare(ops, 2, 1)


def test_gicv2_writable_bits_of_every_register():
    ops = [w32(GICD + off, 0x01010101) for off in range(0x820, 0x920, 4)]      # SPIs target CPU 0
    for off in range(0, 0x1000, 4):
        if off not in (0xF00, 0x200, 0x280) and not 0x800 <= off < 0xC00 and not 0xF20 <= off < 0xF30:
            ops += [w32(GICD + off, 0xFFFFFFFF), r32(GICD + off)]
    ops += [w32(GICD + 0x820, 0x02010301), r32(GICD + 0x820), w8(GICD + 0x822, 2), r32(GICD + 0x820),
            r8(GICD + 0x823), w32(GICD + 0x800, 0), r32(GICD + 0x800),
            w32(GICD + 0xF24, 0x03020100), r32(GICD + 0xF24), w32(GICD + 0xF14, 0x01010101), r32(GICD + 0xF24)]
    for off in (0x00, 0x04, 0x08, 0x1C, 0xD0, 0xE0):
        ops += [w32(GICC + off, 0xFFFFFFFF), r32(GICC + off)]
    ops += [w32(GICC + 0x08, 0), r32(GICC + 0x08), w32(GICC + 0x1C, 0), r32(GICC + 0x1C)]
    compare(ops, 2, 2)


def test_gicv3_reset_values_every_register():
    ops = sweep(GICD, 0, 0x1000) + sweep(GICD, 0x6000, 0x6200) + sweep(GICD, 0xFFD0, 0x10000)
    for cpu in (0, 1):
        rd = GICR + cpu * 0x20000
        ops += sweep(rd, 0, 0x100) + sweep(rd, 0xFFD0, 0x10000) + sweep(rd + 0x10000, 0, 0x1000)
    ops += sweep(ITS_BASE, 0, 0x200) + sweep(ITS_BASE, 0xFFD0, 0x10000)
    ops += [r64(GICR + 8), r64(GICR + 0x20008), r64(ITS_BASE + 8), r64(ITS_BASE + 0x100)]
    ops += [mrs(n) for n in ("ICC_PMR_EL1", "ICC_BPR0_EL1", "ICC_BPR1_EL1", "ICC_CTLR_EL1", "ICC_SRE_EL1",
                             "ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1", "ICC_RPR_EL1", "ICC_HPPIR0_EL1",
                             "ICC_HPPIR1_EL1", "ICC_IAR0_EL1", "ICC_IAR1_EL1", "ICC_AP0R0_EL1", "ICC_AP1R0_EL1",
                             "MPIDR_EL1", "ISR_EL1")]
    ops += [mrs("MPIDR_EL1", cpu=1), mrs("ICC_CTLR_EL1", cpu=1)]
    compare(ops, 3, 2)


def test_gicv3_writable_bits_of_every_register():
    ops = []
    beyond = {a.offset + 256 * a.bits // 8 + k for a in GICV3_DIST_ARRAYS if a.bits < 64
              for k in range(0, 32 * a.bits // 8, 4)}     # INTIDs 256-287: QEMU implements them
    for off in range(0, 0x1000, 4):
        if off not in beyond:
            ops += [w32(GICD + off, 0xFFFFFFFF), r32(GICD + off)]
    ops += [w64(GICD + 0x6100, 0x0000_00FF_00FF_FFFF), r64(GICD + 0x6100)]
    rd = GICR + 0x20000
    for off in (0x0, 0x14):
        ops += [w32(rd + off, 0xFFFFFFFF), r32(rd + off)]
    ops += [w32(rd + 0x14, 0), r32(rd + 0x14)]
    for off in range(0, 0x1000, 4):
        ops += [w32(rd + 0x10000 + off, 0xFFFFFFFF), r32(rd + 0x10000 + off)]
    ops += [w64(rd + 0x70, 0x0700_0000_4800_0F8D), r64(rd + 0x70), w64(rd + 0x78, 0x0700_0000_4801_0F80),
            r64(rd + 0x78)]
    for n, value in ((0, 0xB8E0_0000_4802_0FFF), (1, 0x38E0_0000_4803_0C00), (2, -1)):
        ops += [w64(ITS_BASE + 0x100 + 8 * n, value), r64(ITS_BASE + 0x100 + 8 * n)]
    ops += [w64(ITS_BASE + 0x80, 0xB8E0_0000_4804_0C0F), r64(ITS_BASE + 0x80), r64(ITS_BASE + 0x88),
            r64(ITS_BASE + 0x90)]
    for name in ("ICC_PMR_EL1", "ICC_BPR0_EL1", "ICC_BPR1_EL1", "ICC_CTLR_EL1", "ICC_SRE_EL1", "ICC_IGRPEN0_EL1",
                 "ICC_IGRPEN1_EL1", "ICC_AP0R0_EL1", "ICC_AP1R0_EL1"):
        ones = 0xFF if name == "ICC_PMR_EL1" else 0xFFFFFFFF
        ops += [msr(name, ones, cpu=1), mrs(name, cpu=1), msr(name, 0, cpu=1), mrs(name, cpu=1)]
    compare(ops, 3, 2)


# -- GICv2 interrupt flows -------------------------------------------------------------------------------------
def isr(cpu=0):
    return mrs("ISR_EL1", cpu)


def v2_cpu_on(cpu=0, ctlr=0x7):
    return [w32(GICC + 4, 0xFF, cpu), w32(GICC, ctlr, cpu)]


def v2_spi(intid, prio, target=1):
    """Configure SPI `intid` (priority, target mask) and enable it, from CPU 0. Groups are set by the tests with
    whole-register GICD_IGROUPRn writes."""
    reg, bit = divmod(intid, 32)
    return [w8(GICD + 0x400 + intid, prio), w8(GICD + 0x800 + intid, target),
            w32(GICD + 0x100 + 4 * reg, 1 << bit)]


def v2_pend(intid, cpu=0):
    return w32(GICD + 0x200 + 4 * (intid // 32), 1 << (intid % 32), cpu)


def v2_ack_eoi_reads(cpu=0):
    return [r32(GICC + 0xC, cpu), r32(GICC + 0x14, cpu), isr(cpu)]


def test_gicv2_groups_ackctl_fiqen_eoimode():
    ops = [w32(GICD, 3), w32(GICD + 0x84, 1 << 8), *v2_spi(40, 0x80), *v2_cpu_on(ctlr=0x3), v2_pend(40),
           isr(), r32(GICC + 0x18), r32(GICC + 0xC), r32(GICD + 0x204),          # AckCtl=0: 1022, not acked
           w32(GICC, 0x7), r32(GICC + 0x18), *v2_ack_eoi_reads(), r32(GICD + 0x304), r32(GICC + 0xE8),
           w32(GICC + 0x10, 40), r32(GICC + 0x14), r32(GICD + 0x304), r32(GICC + 0xE8),
           *v2_spi(41, 0x40), v2_pend(41), w32(GICC, 0xF), isr(), *v2_ack_eoi_reads(), r32(GICC + 0xD4),
           w32(GICC, 0x20F), w32(GICC + 0x10, 41), r32(GICC + 0x14), r32(GICD + 0x304), isr(),
           w32(GICC + 0x1000, 41), r32(GICD + 0x304),
           v2_pend(40), w32(GICC, 0x203), *v2_ack_eoi_reads(),                         # EOI ignored: AckCtl=0
           w32(GICC, 0x207), *v2_ack_eoi_reads(), w32(GICC + 0x10, 40), r32(GICC + 0x14), r32(GICD + 0x304)]
    compare(ops, 2, 2)


def test_gicv2_priority_pmr_and_preemption_by_binary_point():
    ops = [w32(GICD, 1), *v2_spi(50, 0x90), *v2_spi(51, 0x88), *v2_spi(52, 0x60), *v2_spi(53, 0x60),
           *v2_cpu_on(ctlr=0x1), w32(GICC + 4, 0x88), v2_pend(50), isr(), r32(GICC + 0xC),   # masked by PMR
           w32(GICC + 4, 0xF0), isr(), r32(GICC + 0x18), *v2_ack_eoi_reads(),
           v2_pend(51), isr(), r32(GICC + 0x18),                # 0x88 preempts 0x90 with BPR=0 ([7:1])
           w32(GICC + 8, 4), isr(), r32(GICC + 0xC),            # BPR=4 ([7:5]): same group priority, no
           w32(GICC + 8, 2), isr(), *v2_ack_eoi_reads(), r32(GICC + 0xD0), r32(GICC + 0xD4), r32(GICC + 0xD8),
           v2_pend(53), v2_pend(52), r32(GICC + 0x18), *v2_ack_eoi_reads(),   # equal priority: lower INTID
           r32(GICD + 0x304), r32(GICD + 0x204),
           w32(GICC + 0x10, 52), r32(GICC + 0x14), w32(GICC + 0x10, 51), r32(GICC + 0x14),
           w32(GICC + 0x10, 50), r32(GICC + 0x14), *v2_ack_eoi_reads(), w32(GICC + 0x10, 53),
           r32(GICC + 0x14), r32(GICD + 0x304), w32(GICC + 0xD0, 1 << 16), r32(GICC + 0x14), isr(),
           w32(GICC + 0xD0, 0), r32(GICC + 0x14)]
    compare(ops, 2, 2)


def test_gicv2_sgis_target_lists_filters_and_sources():
    ops = [w32(GICD, 1), *v2_cpu_on(0, 1), *v2_cpu_on(1, 1),
           w32(GICD + 0xF00, (2 << 16) | 1), r32(GICD + 0x200, cpu=1), r32(GICD + 0xF20, cpu=1),   # list: cpu1
           w32(GICD + 0xF00, (2 << 24) | 1, cpu=1), r32(GICD + 0xF20, cpu=1),                    # self, from 1
           w32(GICD + 0xF00, (1 << 24) | 5), r32(GICD + 0xF24, cpu=1), r32(GICD + 0xF24),        # all but self
           isr(1), r32(GICC + 0xC, cpu=1), r32(GICC + 0xC, cpu=1), r32(GICD + 0x300, cpu=1),
           w32(GICC + 0x10, 0x401, cpu=1), r32(GICC + 0xC, cpu=1), r32(GICD + 0xF20, cpu=1),
           w32(GICC + 0x10, 1, cpu=1), w32(GICC + 0x10, 5, cpu=1), r32(GICC + 0xC, cpu=1),
           w32(GICD + 0x180, 0xFFFF), r32(GICD + 0x100), w32(GICD + 0xF00, (2 << 24) | 9),
           w32(GICD + 0xF00, (1 << 16) | 9, cpu=1), r32(GICD + 0xF28), r32(GICC + 0xC), r32(GICC + 0xC),
           r32(GICD + 0x200), r32(GICD + 0x300), r32(GICC + 0xC),
           w32(GICD + 0x380, 0xFFFF), r32(GICD + 0x300), w32(GICD + 0x300, 1 << 9), r32(GICD + 0x300)]
    compare(ops, 2, 2)


def test_gicv2_spi_follows_its_target_and_active_state_is_readable_everywhere():
    ops = [w32(GICD, 1), *v2_cpu_on(0, 1), *v2_cpu_on(1, 1), *v2_spi(60, 0x40, target=2), v2_pend(60),
           isr(0), isr(1), r32(GICC + 0x18), r32(GICC + 0x18, cpu=1), r32(GICC + 0xC, cpu=1), isr(1),
           r32(GICD + 0x304), r32(GICD + 0x304, 1), r32(GICC + 0x14, cpu=1),
           v2_pend(60), r32(GICD + 0x204), isr(1), w32(GICD + 0x838, 0x00010000), isr(0), isr(1),
           r32(GICC + 0xC), w32(GICC + 0x10, 60, cpu=1), r32(GICD + 0x304), w32(GICC + 0x10, 60),
           r32(GICD + 0x304), w32(GICD + 0x304, 1 << 28), r32(GICD + 0x304, 1), w32(GICD + 0x384, 1 << 28),
           r32(GICD + 0x304)]
    compare(ops, 2, 2)


# -- GICv3 interrupt flows -------------------------------------------------------------------------------------
def sgi_base(cpu):
    return GICR + cpu * 0x20000 + 0x10000


def v3_cpu_on(cpu=0, groups=(1,), pmr=0xFF):
    ops = [msr("ICC_PMR_EL1", pmr, cpu)]
    ops += [msr(f"ICC_IGRPEN{g}_EL1", 1, cpu) for g in groups]
    return ops


def v3_private(cpu, intid, prio):
    """Priority and enable of SGI/PPI `intid` of `cpu` (groups: whole-register GICR_IGROUPR0 writes)."""
    sb = sgi_base(cpu)
    return [w8(sb + 0x400 + intid, prio), w32(sb + 0x100, 1 << intid)]


def v3_spi(intid, prio, aff=0):
    """Priority, route and enable of SPI `intid` (groups: whole-register GICD_IGROUPRn writes)."""
    reg, bit = divmod(intid, 32)
    return [w8(GICD + 0x400 + intid, prio), w64(GICD + 0x6000 + 8 * intid, aff),
            w32(GICD + 0x100 + 4 * reg, 1 << bit)]


def icc_ack(group=1, cpu=0):
    return [mrs(f"ICC_IAR{group}_EL1", cpu), mrs("ICC_RPR_EL1", cpu), isr(cpu)]


def test_gicv3_sgi_generation_target_list_irm_and_groups():
    ops = [w32(GICD, 3), *v3_cpu_on(0, (0, 1)), *v3_cpu_on(1, (0, 1)),
           w32(sgi_base(0) + 0x80, 0b1010), w32(sgi_base(1) + 0x80, 0b1010),           # SGIs 1, 3: Group 1
           *v3_private(0, 1, 0x80), *v3_private(1, 1, 0x80), *v3_private(1, 2, 0x40),
           *v3_private(0, 2, 0x40), *v3_private(1, 3, 0xA0), *v3_private(0, 3, 0xA0),
           msr("ICC_SGI1R_EL1", (1 << 24) | 0b10), isr(1), isr(0), r32(sgi_base(1) + 0x200),   # list: cpu1
           *icc_ack(1, 1), mrs("ICC_AP1R0_EL1", 1), msr("ICC_EOIR1_EL1", 1, 1), mrs("ICC_RPR_EL1", 1),
           msr("ICC_SGI1R_EL1", (3 << 24) | (1 << 40)), r32(sgi_base(1) + 0x200), r32(sgi_base(0) + 0x200),  # IRM
           msr("ICC_SGI1R_EL1", (3 << 24) | 1, 1), r32(sgi_base(0) + 0x200),                     # cpu1 -> cpu0
           msr("ICC_SGI1R_EL1", (2 << 24) | 0b11), r32(sgi_base(0) + 0x200), r32(sgi_base(1) + 0x200),  # G0 SGI
           msr("ICC_SGI0R_EL1", (2 << 24) | 0b10), r32(sgi_base(1) + 0x200), isr(1),             # -> FIQ
           mrs("ICC_HPPIR1_EL1", 1), mrs("ICC_HPPIR0_EL1", 1), mrs("ICC_IAR1_EL1", 1), *icc_ack(0, 1),
           mrs("ICC_AP0R0_EL1", 1), mrs("ICC_HPPIR1_EL1", 1),
           msr("ICC_EOIR1_EL1", 2, 1), mrs("ICC_RPR_EL1", 1), msr("ICC_EOIR0_EL1", 2, 1), mrs("ICC_RPR_EL1", 1),
           msr("ICC_ASGI1R_EL1", (2 << 24) | 0b1), msr("ICC_ASGI1R_EL1", (3 << 24) | 0b1),
           r32(sgi_base(0) + 0x200), msr("ICC_SGI1R_EL1", (1 << 24) | (1 << 16) | 1), r32(sgi_base(0) + 0x200),
           msr("ICC_SGI1R_EL1", (1 << 24) | (1 << 44) | 1), r32(sgi_base(0) + 0x200), *icc_ack(1, 1),
           *icc_ack(1, 0), *icc_ack(1, 0)]
    compare(ops, 3, 2)


def test_gicv3_priorities_binary_points_cbpr_and_eoimode():
    ops = [w32(GICD, 3), *v3_cpu_on(0, (0, 1), pmr=0xF0), w32(GICD + 0x84, 0b0111 << 8), *v3_spi(40, 0x90),
           *v3_spi(41, 0x88), *v3_spi(42, 0x60), *v3_spi(43, 0x48), w32(GICD + 0x204, 1 << 8), isr(), *icc_ack(),
           mrs("ICC_AP1R0_EL1"),
           w32(GICD + 0x204, 1 << 9), isr(), mrs("ICC_HPPIR1_EL1"),               # same group priority (BPR1 3)
           msr("ICC_BPR1_EL1", 2), mrs("ICC_BPR1_EL1"), isr(), msr("ICC_BPR1_EL1", 3),
           msr("ICC_CTLR_EL1", 1), mrs("ICC_BPR1_EL1"), isr(), msr("ICC_BPR1_EL1", 6), mrs("ICC_BPR1_EL1"),
           msr("ICC_BPR0_EL1", 3), mrs("ICC_BPR1_EL1"), isr(), msr("ICC_BPR0_EL1", 2), isr(), *icc_ack(),
           mrs("ICC_AP1R0_EL1"), msr("ICC_CTLR_EL1", 2), w32(GICD + 0x204, 1 << 10), w32(GICD + 0x204, 1 << 11),
           isr(), mrs("ICC_HPPIR0_EL1"), *icc_ack(0), mrs("ICC_AP0R0_EL1"), mrs("ICC_IAR1_EL1"),
           msr("ICC_EOIR1_EL1", 42), mrs("ICC_RPR_EL1"), msr("ICC_EOIR0_EL1", 43), mrs("ICC_RPR_EL1"),
           r32(GICD + 0x304), msr("ICC_DIR_EL1", 43), r32(GICD + 0x304), *icc_ack(),
           msr("ICC_EOIR1_EL1", 42), msr("ICC_EOIR1_EL1", 41), msr("ICC_EOIR1_EL1", 40), mrs("ICC_RPR_EL1"),
           r32(GICD + 0x304), msr("ICC_DIR_EL1", 40), msr("ICC_DIR_EL1", 41), msr("ICC_DIR_EL1", 42),
           r32(GICD + 0x304), msr("ICC_CTLR_EL1", 0), msr("ICC_DIR_EL1", 40), r32(GICD + 0x204), isr()]
    compare(ops, 3, 2)


def test_gicv3_spi_routing_ppi_and_pmr():
    ops = [w32(GICD, 2), *v3_cpu_on(0), *v3_cpu_on(1), w32(GICD + 0x84, 1 << 18), w32(sgi_base(1) + 0x80, 1 << 23),
           *v3_spi(50, 0x50, aff=1), w32(GICD + 0x204, 1 << 18),
           isr(0), isr(1), mrs("ICC_HPPIR1_EL1", 0), mrs("ICC_HPPIR1_EL1", 1), w64(GICD + 0x6000 + 8 * 50, 0),
           isr(0), isr(1), w64(GICD + 0x6000 + 8 * 50, 7), isr(0), isr(1), r32(GICD + 0x204),
           w64(GICD + 0x6000 + 8 * 50, 1), msr("ICC_PMR_EL1", 0x50, 1), isr(1), mrs("ICC_IAR1_EL1", 1),
           msr("ICC_PMR_EL1", 0x58, 1), isr(1), *icc_ack(1, 1), r32(GICD + 0x304), r32(GICD + 0x204),
           *v3_private(1, 23, 0x30), w32(sgi_base(1) + 0x200, 1 << 23), isr(1), mrs("ICC_HPPIR1_EL1", 1),
           msr("ICC_PMR_EL1", 0xFF, 1), isr(1), *icc_ack(1, 1), r32(sgi_base(1) + 0x300),
           w32(sgi_base(1) + 0x380, 1 << 23), r32(sgi_base(1) + 0x300), mrs("ICC_RPR_EL1", 1),
           msr("ICC_EOIR1_EL1", 23, 1), msr("ICC_EOIR1_EL1", 50, 1), mrs("ICC_RPR_EL1", 1), r32(GICD + 0x304),
           w32(GICD, 0), isr(1), w32(sgi_base(1) + 0x200, 1 << 23), isr(1), w32(GICD, 2), isr(1),
           msr("ICC_IGRPEN1_EL1", 0, 1), isr(1), mrs("ICC_HPPIR1_EL1", 1), msr("ICC_IGRPEN1_EL1", 1, 1), isr(1)]
    compare(ops, 3, 2)


# -- LPIs and the ITS ------------------------------------------------------------------------------------------
CMDQ, DEVT, COLLT, PROP = TABLES, TABLES + 0x10000, TABLES + 0x20000, TABLES + 0x30000


def pend_table(cpu):
    return TABLES + 0x40000 + cpu * 0x10000


def itt(dev):
    return TABLES + 0x60000 + dev * 0x1000


class Queue:
    """Builds ITS commands into the command queue (4 x 64-bit stores) and posts them through GITS_CWRITER,
    reading GITS_CREADR back as kvm-unit-tests does."""

    def __init__(self):
        self.n = 0

    def __call__(self, name, **fields):
        raw = encode(name, **fields)
        ops = [w64(CMDQ + 32 * self.n + 8 * i, int.from_bytes(raw[8 * i:8 * i + 8], "little")) for i in range(4)]
        self.n += 1
        return ops + [w64(ITS_BASE + 0x88, 32 * self.n), r64(ITS_BASE + 0x90)]


def its_setup(cpus=2, device_baser=None):
    ops = [w32(GICD, 2)] + [o for c in range(cpus) for o in v3_cpu_on(c)]
    ops += [w8(PROP + n, 0xA0 | 0b10 | 1) for n in range(8)]                  # LPIs 8192-8199: prio 0xA0, on
    for c in range(cpus):
        rd = GICR + c * 0x20000
        ops += [w64(rd + 0x70, PROP | 13), w64(rd + 0x78, pend_table(c)), w32(rd, 1), r32(rd)]
    ops += [w64(ITS_BASE + 0x100, device_baser or (1 << 63 | 2 << 8 | DEVT)),
            w64(ITS_BASE + 0x108, 1 << 63 | 2 << 8 | COLLT), w64(ITS_BASE + 0x80, 1 << 63 | CMDQ | 15),
            w32(ITS_BASE, 1), r32(ITS_BASE), r64(ITS_BASE + 0x100), r64(ITS_BASE + 0x108)]
    return ops


def test_its_commands_turn_events_into_lpis_like_kvm_unit_tests_its_trigger():
    q = Queue()
    ops = its_setup()
    ops += q("MAPD", deviceid=2, size=7, itt_addr=itt(2), v=1)
    ops += q("MAPD", deviceid=7, size=7, itt_addr=itt(7), v=1)
    ops += q("MAPC", icid=3, rdbase=1 << 16, v=1) + q("MAPC", icid=2, rdbase=0, v=1)
    ops += q("INVALL", icid=3) + q("MAPTI", deviceid=2, eventid=20, pintid=8195, icid=3)
    ops += q("MAPTI", deviceid=7, eventid=255, pintid=8196, icid=2)
    ops += q("INT", deviceid=2, eventid=20) + [isr(0), isr(1), r8(pend_table(1) + 8195 // 8),
                                              mrs("ICC_HPPIR1_EL1", 1), *icc_ack(1, 1), r8(pend_table(1) + 1024)]
    ops += [msr("ICC_EOIR1_EL1", 8195, 1), mrs("ICC_RPR_EL1", 1)]
    ops += q("INT", deviceid=7, eventid=255) + [isr(0), *icc_ack(1, 0), msr("ICC_EOIR1_EL1", 8196)]
    ops += [w8(PROP + 3, 0xA2)] + q("INV", deviceid=2, eventid=20) + q("INT", deviceid=2, eventid=20)
    ops += [isr(1), mrs("ICC_HPPIR1_EL1", 1), r8(pend_table(1) + 1024)]      # disabled: pending, not signalled
    ops += [w8(PROP + 3, 0xA3)] + q("INVALL", icid=3) + [isr(1), *icc_ack(1, 1), msr("ICC_EOIR1_EL1", 8195, 1)]
    ops += q("INT", deviceid=5, eventid=0) + q("INT", deviceid=2, eventid=300) + q("INT", deviceid=2, eventid=21)
    ops += [isr(0), isr(1), r64(ITS_BASE + 0x90)]                              # errors: ignored, queue goes on
    ops += q("MAPI", deviceid=2, eventid=5, icid=2)                            # EventID 5 is not an LPI INTID
    ops += q("MAPD", deviceid=2, v=0) + q("INT", deviceid=2, eventid=20) + [isr(1), mrs("ICC_HPPIR1_EL1", 1)]
    ops += q("MAPD", deviceid=2, size=7, itt_addr=itt(2), v=1) + q("INT", deviceid=2, eventid=20)
    ops += [isr(1), mrs("ICC_HPPIR1_EL1", 1)]                                 # the ITT kept the mapping
    ops += q("MOVI", deviceid=2, eventid=20, icid=2) + [isr(1), isr(0), mrs("ICC_HPPIR1_EL1", 0),
                                                       r8(pend_table(1) + 1024), r8(pend_table(0) + 1024)]
    ops += q("CLEAR", deviceid=2, eventid=20) + [isr(0), r8(pend_table(0) + 1024)]
    ops += q("INT", deviceid=7, eventid=255) + q("DISCARD", deviceid=7, eventid=255) + [isr(0)]
    ops += q("INT", deviceid=7, eventid=255) + [isr(0), r64(ITS_BASE + 0x90), r64(ITS_BASE + 0x88)]
    ops += q("SYNC", rdbase=1 << 16) + [r64(ITS_BASE + 0x90)]
    compare(ops, 3, 2)


def test_its_translater_write_and_movall_and_lpi_enable_scan():
    q = Queue()
    ops = its_setup()
    ops += q("MAPD", deviceid=0, size=3, itt_addr=itt(0), v=1) + q("MAPC", icid=0, rdbase=0, v=1)
    ops += q("MAPC", icid=1, rdbase=1 << 16, v=1)
    ops += q("MAPTI", deviceid=0, eventid=1, pintid=8193, icid=0) + q("MAPTI", deviceid=0, eventid=2, pintid=8194,
                                                                       icid=0)
    ops += [w32(ITS_BASE + 0x10040, 1), w32(ITS_BASE + 0x10040, 2), isr(0), r8(pend_table(0) + 1024)]
    ops += q("MOVALL", rdbase=0, rdbase2=1 << 16) + [isr(0), isr(1), r8(pend_table(1) + 1024),
                                                     r8(pend_table(0) + 1024)]
    ops += [*icc_ack(1, 1), msr("ICC_EOIR1_EL1", 8193, 1), *icc_ack(1, 1), msr("ICC_EOIR1_EL1", 8194, 1)]
    rd1 = GICR + 0x20000                                           # pending bits written while LPIs are off
    ops += [w32(rd1, 0), w8(pend_table(1) + 1024, 0b1010_0000), w64(rd1 + 0x78, pend_table(1)), w32(rd1, 1),
            isr(1), mrs("ICC_HPPIR1_EL1", 1), *icc_ack(1, 1), *icc_ack(1, 1), r8(pend_table(1) + 1024)]
    ops += [w32(rd1, 0), w8(pend_table(1) + 1024, 0b0100_0000), w64(rd1 + 0x78, pend_table(1) | 1 << 62),
            w32(rd1, 1), isr(1), mrs("ICC_HPPIR1_EL1", 1)]           # PTZ=1: the table is not read
    compare(ops, 3, 2)


def test_its_two_level_device_table():
    l2 = TABLES + 0x70000
    q = Queue()
    ops = its_setup(device_baser=1 << 63 | 1 << 62 | 2 << 8 | DEVT)
    ops += [w64(DEVT + 8, 1 << 63 | l2)]                       # level-1 entry 1: DeviceIDs 8192-16383
    ops += q("MAPC", icid=0, rdbase=0, v=1) + q("MAPD", deviceid=8200, size=3, itt_addr=itt(1), v=1)
    ops += q("MAPD", deviceid=10, size=3, itt_addr=itt(2), v=1)            # level-1 entry 0 invalid
    ops += q("MAPTI", deviceid=8200, eventid=3, pintid=8197, icid=0) + q("MAPTI", deviceid=10, eventid=3,
                                                                          pintid=8198, icid=0)
    ops += q("INT", deviceid=8200, eventid=3) + q("INT", deviceid=10, eventid=3)
    ops += [r64(l2 + 8 * 8), isr(0), *icc_ack(1, 0), *icc_ack(1, 0), r64(ITS_BASE + 0x90)]
    compare(ops, 3, 2)
