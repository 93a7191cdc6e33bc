/* Bad guest: sets up its GIC, enables no interrupt, masks its timer and sleeps in WFI: nothing can wake it
 * (smmu-harness ends the run with 124; QEMU would wait forever). */
#include "gic.h"

int main(void)
{
	gic_init();
	write_sysreg(1, cntv_tval_el0);
	write_sysreg(1, cntv_ctl_el0);          /* fires at once, but PPI 27 is not enabled */
	isb();
	local_irq_enable();
	for (;;)
		wfi();
}
