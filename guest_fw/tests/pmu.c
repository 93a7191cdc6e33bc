/*
 * The PMUv3 -cpu max gives (Arm ARM D13, D17.5): ID_AA64DFR0_EL1.PMUVer, PMCR_EL0's identification and
 * writable bits, the implemented counters and events (PMCEID0/1), 64-bit event counters (FEAT_PMUv3p5) with a
 * 32-bit or (PMCR.LP) 64-bit overflow, the EL1 filter of the cycle counter (PMCCFILTR_EL0.P), and the overflow
 * interrupt (PPI 7, INTID 23 on QEMU virt) from a software increment and from the cycle counter - the latter
 * while the CPU sleeps in WFI. Started at EL2 it routes IRQs there (HCR_EL2.IMO) and counts at EL2 with the
 * filters' NSH bit (without it a counter does not count at EL2). Nothing printed depends on how fast time
 * runs. Same output under QEMU 7.2 (-M virt[,gic-version=3][,virtualization=on] -cpu max -semihosting) and
 * smmu-harness.
 */
#include "gic.h"

#define PPI_PMU 23
#define PMCR_E (1 << 0)
#define PMCR_P (1 << 1)
#define PMCR_C (1 << 2)
#define PMCR_LP (1 << 7)
#define CYCLE (1U << 31)
#define FILTER_P (1UL << 31)                    /* PMEVTYPER/PMCCFILTR: do not count at EL1 */
#define FILTER_NSH (1UL << 27)                  /* count at (Non-secure) EL2 */
#define FILTER_NSK (1UL << 29)                  /* without EL3 (virt, secure=off): no effect */
#define MDCR_HCCD (1UL << 23)                   /* FEAT_PMUv3p5: no cycle counting at EL2 */

static u64 here, not_here;                      /* filters counting / not counting at the current EL */

static volatile unsigned int taken, intid;
static volatile u64 ovs_seen;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();

	intid = gic_iar_irqnr(iar);
	ovs_seen = read_sysreg(pmovsclr_el0);
	write_sysreg(ovs_seen, pmovsclr_el0);   /* the request falls */
	isb();
	gic_write_eoir(iar);
	taken++;
}

static void pmu_reset(void)
{
	write_sysreg(PMCR_P | PMCR_C, pmcr_el0);
	write_sysreg(0xffffffffUL, pmcntenclr_el0);
	write_sysreg(0xffffffffUL, pmovsclr_el0);
	write_sysreg(0xffffffffUL, pmintenclr_el1);
	isb();
}

static void test_identification(void)
{
	u64 dfr0 = read_sysreg(id_aa64dfr0_el1), pmcr = read_sysreg(pmcr_el0);

	printf("PMUVer %lu PMCR %#lx PMCEID0 %#lx PMCEID1 %#lx\n", (dfr0 >> 8) & 0xf, pmcr,
	       read_sysreg(pmceid0_el0), read_sysreg(pmceid1_el0));
	report(((dfr0 >> 8) & 0xf) == 6, "FEAT_PMUv3p5");
	report(((pmcr >> 11) & 0x1f) == 6, "six event counters");
	write_sysreg(0xffffffffUL, pmcr_el0);
	write_sysreg(0xffffffffUL, pmcntenset_el0);
	write_sysreg(0xffffffffUL, pmintenset_el1);
	isb();
	printf("PMCR after writing ones %#lx, PMCNTENSET %#lx, PMINTENSET %#lx\n", read_sysreg(pmcr_el0),
	       read_sysreg(pmcntenset_el0), read_sysreg(pmintenset_el1));
	report(read_sysreg(pmcntenset_el0) == (CYCLE | 0x3f), "only implemented counters enable");
	write_sysreg(0, pmcr_el0);
	pmu_reset();
	write_sysreg(31, pmselr_el0);
	write_sysreg(0xffffffffUL, pmxevtyper_el0);     /* SEL = 31: PMCCFILTR_EL0 */
	isb();
	write_sysreg(0xffffffffffffffffUL, pmevtyper5_el0);
	isb();
	printf("PMCCFILTR %#lx PMEVTYPER5 %#lx\n", read_sysreg(pmccfiltr_el0), read_sysreg(pmevtyper5_el0));
	write_sysreg(0, pmccfiltr_el0);
	write_sysreg(0, pmevtyper5_el0);
}

static void swinc_twice(u64 pmcr, u64 start)
{
	write_sysreg(0xffffffffUL, pmovsclr_el0);
	write_sysreg(pmcr, pmcr_el0);
	write_sysreg(start, pmevcntr0_el0);
	isb();
	write_sysreg(1, pmswinc_el0);
	write_sysreg(1, pmswinc_el0);
	isb();
	printf("PMCR.LP %d: %#lx + 2 = %#lx, overflow %#lx\n", !!(pmcr & PMCR_LP), start,
	       read_sysreg(pmevcntr0_el0), read_sysreg(pmovsclr_el0));
}

static void test_counter_width(void)
{
	pmu_reset();
	write_sysreg(here, pmevtyper0_el0);             /* SW_INCR */
	write_sysreg(1, pmcntenset_el0);
	swinc_twice(PMCR_E, 0xfffffffeUL);
	report(read_sysreg(pmevcntr0_el0) == 1UL << 32 && read_sysreg(pmovsclr_el0) == 1,
	       "64-bit counter, overflow out of bit 31");
	swinc_twice(PMCR_E | PMCR_LP, 0xfffffffeUL);
	report(read_sysreg(pmevcntr0_el0) == 1UL << 32 && read_sysreg(pmovsclr_el0) == 0,
	       "PMCR.LP: no overflow out of bit 31");
	swinc_twice(PMCR_E | PMCR_LP, 0xffffffffffffffffUL);
	report(read_sysreg(pmevcntr0_el0) == 1 && read_sysreg(pmovsclr_el0) == 1, "PMCR.LP: overflow out of bit 63");
	write_sysreg(0, pmcr_el0);
	isb();
}

static void test_filter(void)
{
	u64 a, b;

	pmu_reset();
	write_sysreg(not_here, pmccfiltr_el0);
	write_sysreg(CYCLE, pmcntenset_el0);
	write_sysreg(PMCR_E, pmcr_el0);
	isb();
	a = read_sysreg(pmccntr_el0);
	b = read_sysreg(pmccntr_el0);
	report(a == 0 && b == 0, "PMCCFILTR_EL0 %#lx: no cycles counted at EL%d", not_here, current_el());
	write_sysreg(here, pmccfiltr_el0);
	isb();
	a = read_sysreg(pmccntr_el0);
	b = read_sysreg(pmccntr_el0);
	report(b > a, "PMCCFILTR_EL0 %#lx: cycles counted at EL%d", here, current_el());
	write_sysreg(0, pmcr_el0);
	isb();
}

/*
 * At EL1: P | NSK excludes EL1 - without EL3, NSK (and NSU) do not filter (Arm ARM PMEVTYPER<n>_EL0: the
 * NS* bits need EL3). At EL2: MDCR_EL2.HCCD stops the cycle counter there, not CPU_CYCLES in a counter.
 */
static void test_nsk_and_hccd(void)
{
	u64 a, b, e;
	int el2 = current_el() == 2;
	u64 mdcr = el2 ? read_sysreg(mdcr_el2) : 0;

	pmu_reset();
	write_sysreg(el2 ? here : FILTER_P | FILTER_NSK, pmccfiltr_el0);
	write_sysreg(here | 0x11, pmevtyper2_el0);      /* CPU_CYCLES */
	if (el2)
		write_sysreg(mdcr | MDCR_HCCD, mdcr_el2);
	write_sysreg(CYCLE | 4, pmcntenset_el0);
	write_sysreg(PMCR_E, pmcr_el0);
	isb();
	a = read_sysreg(pmccntr_el0);
	b = read_sysreg(pmccntr_el0);
	e = read_sysreg(pmevcntr2_el0);
	e = read_sysreg(pmevcntr2_el0) - e;
	report(a == 0 && b == 0 && e > 0, "%s: no cycles counted by PMCCNTR_EL0, CPU_CYCLES counted",
	       el2 ? "MDCR_EL2.HCCD at EL2" : "PMCCFILTR_EL0 P|NSK at EL1");
	write_sysreg(0, pmcr_el0);
	if (el2)
		write_sysreg(mdcr, mdcr_el2);
	write_sysreg(0, pmevtyper2_el0);
	isb();
}

static void test_swinc_interrupt(void)
{
	pmu_reset();
	taken = 0;
	write_sysreg(here, pmevtyper1_el0);
	write_sysreg(0xffffffffUL, pmevcntr1_el0);
	write_sysreg(2, pmcntenset_el0);
	write_sysreg(2, pmintenset_el1);
	write_sysreg(PMCR_E, pmcr_el0);
	isb();
	write_sysreg(2, pmswinc_el0);
	isb();
	report(gic_irq_pending(PPI_PMU) && taken == 0, "SW_INCR overflow: PPI 23 pending while masked");
	local_irq_enable();
	local_irq_disable();
	report(taken == 1 && intid == PPI_PMU && ovs_seen == 2, "taken: INTID %u, PMOVSCLR %#lx", intid, ovs_seen);
	report(!gic_irq_pending(PPI_PMU), "not pending once the overflow is cleared");
	write_sysreg(0, pmcr_el0);
	isb();
}

static void test_cycle_interrupt(void)
{
	int wakes = 0;

	pmu_reset();
	taken = 0;
	write_sysreg(here, pmccfiltr_el0);
	write_sysreg(0xffffffffUL - 100000, pmccntr_el0);      /* 32-bit overflow (PMCR.LC = 0) soon */
	write_sysreg(CYCLE, pmcntenset_el0);
	write_sysreg(CYCLE, pmintenset_el1);
	write_sysreg(PMCR_E, pmcr_el0);
	isb();
	while (!(read_isr() & (1 << 7)) && wakes < 100000) {
		wfi();
		wakes++;
	}
	report(read_isr() & (1 << 7), "cycle counter overflow wakes WFI");
	local_irq_enable();
	local_irq_disable();
	report(taken == 1 && intid == PPI_PMU && ovs_seen == CYCLE, "taken: INTID %u, PMOVSCLR %#lx", intid,
	       ovs_seen);
	report(read_sysreg(pmccntr_el0) >> 32 == 1, "PMCCNTR_EL0 is 64 bits: bit 32 set after the overflow");
	write_sysreg(0, pmcr_el0);
	isb();
}

int main(void)
{
	report_prefix_push("pmu");
	here = current_el() == 2 ? FILTER_NSH : 0;
	not_here = current_el() == 2 ? 0 : FILTER_P;
	if (current_el() == 2) {                /* route physical IRQs here (HCR_EL2.IMO) */
		write_sysreg(read_sysreg(hcr_el2) | (1UL << 4), hcr_el2);
		isb();
	}
	gic_init();
	install_irq_handler(handler);
	gic_enable_irq(PPI_PMU);
	test_identification();
	test_counter_width();
	test_filter();
	test_nsk_and_hccd();
	test_swinc_interrupt();
	test_cycle_interrupt();
	report_prefix_pop();
	return report_summary();
}
