/*
 * GIC priorities on one CPU (GICv2 and GICv3; SPIs made pending through GICD_ISPENDR): the priority mask,
 * preemption by a higher priority inside a handler (nested IRQ), no preemption by an equal priority (taken
 * after the handler's ERET), running priority, active and pending state readable, EOImode 1 (EOIR drops the
 * priority, DIR deactivates). Same output under QEMU 7.2 and smmu-harness.
 */
#include "gic.h"

#define A 40                    /* priority 0xa0 */
#define B 41                    /* 0x80: preempts A */
#define C 42                    /* 0xa0: does not preempt A */
#define D 43                    /* EOImode 1 */

static volatile unsigned int order[8], n, rpr_b, d_active_after_eoi, d_rpr_after_eoi, a_active, a_pending;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();
	unsigned int id = gic_iar_irqnr(iar);

	if (id == GIC_SPURIOUS)
		return;
	order[n++] = id;
	if (id == A) {
		a_active = gic_irq_active(A);
		a_pending = gic_irq_pending(A);
		gic_set_pending(B);
		gic_set_pending(C);
		local_irq_enable();             /* B preempts here; C waits */
		isb();
		local_irq_disable();
		order[n++] = 100 + A;
	} else if (id == B) {
		rpr_b = gic_read_rpr();
	} else if (id == D) {
		gic_write_eoir(iar);            /* EOImode 1: priority drop only */
		d_active_after_eoi = gic_irq_active(D);
		d_rpr_after_eoi = gic_read_rpr();
		gic_write_dir(iar);
		return;
	}
	gic_write_eoir(iar);
}

int main(void)
{
	bool masked_pending;
	unsigned int masked_taken;

	report_prefix_push("irq_prio");
	gic_init();
	install_irq_handler(handler);
	gic_set_priority(A, 0xa0);
	gic_set_priority(B, 0x80);
	gic_set_priority(C, 0xa0);
	gic_set_priority(D, 0x90);
	gic_enable_irq(A);
	gic_enable_irq(B);
	gic_enable_irq(C);
	gic_enable_irq(D);

	gic_set_pmr(0x90);
	local_irq_enable();
	gic_set_pending(A);
	isb();
	masked_pending = gic_irq_pending(A);
	masked_taken = n;
	report(masked_pending && masked_taken == 0, "priority 0xa0 is masked by PMR 0x90: pending, not taken");
	gic_set_pmr(0xff);                      /* A is taken here */
	isb();
	local_irq_disable();
	report(n == 4 && order[0] == A && order[1] == B && order[2] == 100 + A && order[3] == C,
	       "B preempted A's handler, C waited for its end (%u: %u %u %u %u)", n, order[0], order[1], order[2],
	       order[3]);
	report(a_active && !a_pending, "in its handler A is active, not pending");
	report(rpr_b == 0x80, "running priority in B's handler %#x", rpr_b);
	report(!gic_irq_active(A) && !gic_irq_active(B) && !gic_irq_active(C), "none active afterwards");
	report(gic_read_rpr() == 0xff, "idle running priority");

	gic_set_eoimode(true);
	n = 0;
	gic_set_pending(D);
	local_irq_enable();
	isb();
	local_irq_disable();
	gic_set_eoimode(false);
	report(n == 1 && order[0] == D, "D taken");
	report(d_active_after_eoi && d_rpr_after_eoi == 0xff, "EOImode 1: after EOIR D is still active, priority dropped");
	report(!gic_irq_active(D), "DIR deactivated D");
	report_prefix_pop();
	return report_summary();
}
