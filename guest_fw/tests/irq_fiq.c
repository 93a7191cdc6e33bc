/*
 * A Group 0 interrupt signalled as FIQ (GICv2 GICC_CTLR.FIQEn; GICv3 ICC_IGRPEN0_EL1, Group 0 always FIQ): an
 * SPI made pending with FIQs masked shows in ISR_EL1.F, not I; `msr daifclr, #1` takes it at the FIQ vector;
 * IRQs masked meanwhile do not matter; on a GICv3 a Group 0 SGI from ICC_SGI0R_EL1 is a FIQ too, and
 * ICC_ASGI1R_EL1 reaches only a Group 0 SGI. Same output under QEMU 7.2 and smmu-harness.
 */
#include "gic.h"

#define SPI 44

static volatile unsigned int fiqs, irqs, intid;

static void on_fiq(struct pt_regs *regs)
{
	u32 iar = gic_read_iar_fiq();

	intid = gic_iar_irqnr(iar);
	gic_write_eoir_fiq(iar);
	fiqs++;
}

static void on_irq(struct pt_regs *regs)
{
	gic_write_eoir(gic_read_iar());
	irqs++;
}

int main(void)
{
	u64 isr;

	report_prefix_push("irq_fiq");
	gic_init();
	install_irq_handler(on_irq);
	install_fiq_handler(on_fiq);
	gic_set_group(SPI, 0);
	gic_fiq_enable();
	gic_enable_irq(SPI);
	gic_set_pending(SPI);
	isb();
	isr = read_isr();
	report(isr == (1 << 6), "ISR_EL1.F set, I clear (ISR_EL1 = %lx)", isr);
	local_irq_enable();
	isb();
	report(fiqs == 0 && irqs == 0, "not taken as an IRQ");
	local_fiq_enable();
	isb();
	local_fiq_disable();
	local_irq_disable();
	report(fiqs == 1 && intid == SPI && irqs == 0, "taken at the FIQ vector: INTID %u", intid);
	report(read_isr() == 0, "nothing pending afterwards");
	if (gic_version() == 3) {               /* a Group 0 SGI generated through ICC_SGI0R_EL1 */
		gic_set_group(2, 0);
		local_fiq_enable();
		gic_send_sgi0_self(2);
		local_fiq_disable();
		report(fiqs == 2 && intid == 2, "ICC_SGI0R_EL1: SGI 2 taken as FIQ (INTID %u)", intid);
		/* ICC_ASGI1R_EL1 (the other Security state's Group 1): with GICD_CTLR.DS = 1 there is no Secure
		 * Group 1, and QEMU 7.2 delivers it only to an SGI configured Group 0 */
		gic_set_group(3, 0);
		local_fiq_enable();
		local_irq_enable();
		gic_send_asgi1_self(4);         /* SGI 4: Group 1 */
		gic_send_asgi1_self(3);
		local_irq_disable();
		local_fiq_disable();
		report(fiqs == 3 && intid == 3 && irqs == 0 && !gic_irq_pending(4),
		       "ICC_ASGI1R_EL1: only the Group 0 SGI 3 is taken (INTID %u)", intid);
	}
	report_prefix_pop();
	return report_summary();
}
