/*
 * The virtual timer's PPI (27) through the GIC (v2 or v3: gic.h tells them apart): armed with IRQs masked, the
 * CPU sleeps in WFI, which the pending interrupt wakes although PSTATE.I masks it (DDI 0487 D1.16.2); ISR_EL1.I
 * shows it, the distributor shows it pending; `msr daifclr, #2` takes it, the handler acknowledges INTID 27,
 * sees it active, masks the timer and ends it; then no interrupt is left. Started at EL2 it sets HCR_EL2.IMO,
 * so that the IRQ is taken at EL2 (without it, routed to EL1, it is never taken at EL2: DDI 0487 D1.3.6).
 * Same output under QEMU 7.2 (-M virt,gic-version=N[,virtualization=on] -cpu max -semihosting) and
 * smmu-harness.
 */
#include "gic.h"

static volatile unsigned int taken, intid, active_in_handler, rpr_in_handler;
static volatile u64 elr;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();

	intid = gic_iar_irqnr(iar);
	elr = regs->elr;
	active_in_handler = gic_irq_active(intid);
	rpr_in_handler = gic_read_rpr();
	write_sysreg(3, cntv_ctl_el0);          /* ENABLE | IMASK: the timer's output falls */
	isb();
	gic_write_eoir(iar);
	taken++;
}

extern char after_unmask[];

int main(void)
{
	u64 freq = read_sysreg(cntfrq_el0), isr;
	int wakes = 0;

	report_prefix_push("irq_timer");
	if (current_el() == 2) {                /* started at EL2: route physical IRQs here (HCR_EL2.IMO) */
		write_sysreg(read_sysreg(hcr_el2) | (1UL << 4), hcr_el2);
		isb();
	}
	gic_init();
	install_irq_handler(handler);
	gic_enable_irq(PPI_VTIMER);
	report(!gic_irq_pending(PPI_VTIMER) && read_isr() == 0, "nothing pending before the timer fires");

	write_sysreg(freq / 1000, cntv_tval_el0);   /* 1 ms */
	write_sysreg(1, cntv_ctl_el0);              /* ENABLE */
	isb();
	while (!(read_isr() & (1 << 7)) && wakes < 1000) {
		wfi();                              /* IRQs masked (PSTATE.I = 1 since reset): WFI still wakes */
		wakes++;
	}
	isr = read_isr();
	report(isr == (1 << 7), "ISR_EL1.I set by the pending timer interrupt (ISR_EL1 = %lx)", isr);
	report(gic_irq_pending(PPI_VTIMER), "PPI 27 pending in the distributor");
	report(taken == 0, "not taken while PSTATE.I masks it");

	asm volatile("msr daifclr, #2\n"
		     ".global after_unmask\n"
		     "after_unmask:\n\t"
		     "nop" : : : "memory");
	local_irq_disable();
	report(taken == 1 && intid == PPI_VTIMER, "taken once after msr daifclr: INTID %u", intid);
	report(elr == (u64)after_unmask, "ELR is the instruction after the unmask");
	report(active_in_handler, "active while the handler runs");
	report(rpr_in_handler == GIC_DEFAULT_PRIO, "running priority %#x in the handler", rpr_in_handler);
	report(!gic_irq_pending(PPI_VTIMER) && !gic_irq_active(PPI_VTIMER), "neither pending nor active after EOI");
	report((read_isr() & (1 << 7)) == 0, "ISR_EL1.I clear again");
	report(gic_read_rpr() == 0xff, "idle running priority after EOI");
	report_prefix_pop();
	return report_summary();
}
