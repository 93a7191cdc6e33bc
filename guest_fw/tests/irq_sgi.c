/*
 * SGIs (GICv2 GICD_SGIR, GICv3 ICC_SGI1R_EL1; gic.h): a self-IPI taken right after the ISB that follows it;
 * cpu0 -> cpu1 while cpu1 sleeps in WFI with IRQs unmasked; cpu1 -> cpu0 back (the GICv2 IAR names the sender
 * CPU in [12:10]); a broadcast to the others. Run with 2 CPUs. Same output under QEMU 7.2 and smmu-harness.
 */
#include "gic.h"

static volatile unsigned int got[2][16], sender[2];
static volatile int cpu1_ready, cpu1_done;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();
	unsigned int id = gic_iar_irqnr(iar), cpu = smp_processor_id();

	if (id < 16) {
		got[cpu][id]++;
		sender[cpu] = gic_iar_sender(iar);
	}
	gic_write_eoir(iar);
}

static void secondary(void *arg)
{
	gic_cpu_init();
	local_irq_enable();
	cpu1_ready = 1;
	while (!got[1][5])
		wfi();
	gic_send_sgi(0, 6);
	while (!got[1][7])
		wfi();
	local_irq_disable();
	cpu1_done = 1;
}

int main(void)
{
	report_prefix_push("irq_sgi");
	gic_init();
	install_irq_handler(handler);
	local_irq_enable();
	gic_send_sgi_self(3);
	isb();
	report(got[0][3] == 1, "self-IPI taken by the ISB after it");
	if (smp_boot_secondary(1, secondary, NULL) != PSCI_RET_SUCCESS) {
		report(false, "CPU_ON cpu1 (run with 2 CPUs)");
		return report_summary();
	}
	while (!cpu1_ready)
		;
	gic_send_sgi(1, 5);
	while (!got[0][6])
		wfi();
	report(got[1][5] == 1, "cpu1 woke from WFI and took SGI 5 from cpu0");
	report(got[0][6] == 1, "cpu0 took SGI 6 from cpu1");
	if (gic_version() == 2)
		report(sender[0] == 1 && sender[1] == 0, "GICC_IAR CPUID names the sender (%u, %u)", sender[0],
		       sender[1]);
	gic_send_sgi_others(7);
	while (!cpu1_done)
		;
	isb();
	report(got[1][7] == 1 && got[0][7] == 0, "the broadcast reached cpu1 only");
	smp_wait_cpu_off(1);
	local_irq_disable();
	report_prefix_pop();
	return report_summary();
}
