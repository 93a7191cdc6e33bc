/*
 * Run at EL2 (QEMU: -M virt,virtualization=on): with HCR_EL2.IMO set, a physical IRQ that arrives while EL1 code
 * runs with PSTATE.I masked is taken to EL2 anyway (DDI 0487 D1.3.6: masking by PSTATE.I applies only to the EL
 * it is taken to), at VBAR_EL2 + 0x480 (from a lower EL, AArch64). The handler returns to EL2. Same output under
 * QEMU 7.2 and smmu-harness.
 */
#include "gic.h"

static volatile u64 handler_el, handler_elr, handler_spsr;
static volatile unsigned int taken, intid;
extern char el1_spin[], el2_resume[];

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();

	intid = gic_iar_irqnr(iar);
	handler_el = current_el();
	handler_elr = regs->elr;
	handler_spsr = regs->spsr;
	write_sysreg(3, cntv_ctl_el0);          /* ENABLE | IMASK */
	isb();
	gic_write_eoir(iar);
	taken++;
	regs->elr = (u64)el2_resume;            /* back to EL2h, where main ERETed from */
	regs->spsr = 0x3c9;
}

int main(void)
{
	report_prefix_push("irq_el2");
	if (current_el() != 2) {
		report_skip("needs EL2 (--el 2; QEMU: virtualization=on)");
		return report_summary();
	}
	write_sysreg(read_sysreg(hcr_el2) | (1UL << 31) | (1UL << 4), hcr_el2);     /* RW (EL1 is AArch64), IMO */
	isb();
	gic_init();
	install_irq_handler(handler);
	gic_enable_irq(PPI_VTIMER);
	write_sysreg(read_sysreg(cntfrq_el0) / 1000, cntv_tval_el0);
	write_sysreg(1, cntv_ctl_el0);
	isb();
	asm volatile("adr x0, el1_spin\n\t"
		     "msr elr_el2, x0\n\t"
		     "mov x0, #0x3c5\n\t"           /* EL1h, D A I F masked */
		     "msr spsr_el2, x0\n\t"
		     "isb\n\t"
		     "eret\n"
		     ".global el1_spin\n"
		     "el1_spin:\n\t"
		     "b el1_spin\n"
		     ".global el2_resume\n"
		     "el2_resume:\n\t"
		     "nop" : : : "x0", "memory");
	report(taken == 1 && intid == PPI_VTIMER, "PPI 27 taken once (INTID %u)", intid);
	report(handler_el == 2, "taken to EL2 (handler at EL%lu)", handler_el);
	report(handler_elr == (u64)el1_spin && (handler_spsr & 0xf) == 5 && (handler_spsr & (1 << 7)),
	       "from EL1h with PSTATE.I set, at the EL1 loop");
	report_prefix_pop();
	return report_summary();
}
