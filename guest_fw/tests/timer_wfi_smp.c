/*
 * A vCPU asleep in WFI does not stop time (harness only: without an interrupt controller set up, QEMU's WFI
 * would never wake here): cpu1 arms its virtual timer 1 ms ahead and sleeps in WFI while cpu0 keeps running
 * and polling the counter; cpu1 wakes at its deadline, the outputs of the two CPUs' timers are their own.
 */
#include "guest.h"

static volatile u64 deadline, woke_at, cpu0_ctl;
static volatile int woken;

static u64 count(void)
{
	isb();
	return read_sysreg(cntvct_el0);
}

static void sleeper(void *arg)
{
	u64 freq = read_sysreg(cntfrq_el0);

	deadline = count() + freq / 1000;
	write_sysreg(deadline, cntv_cval_el0);
	write_sysreg(1, cntv_ctl_el0);          /* ENABLE */
	isb();
	while (!(read_sysreg(cntv_ctl_el0) & 4))
		asm volatile("wfi" : : : "memory");
	woke_at = count();
	write_sysreg(0, cntv_ctl_el0);
	dsb(sy);
	woken = 1;
}

int main(void)
{
	u64 polls = 0, last = 0, now;
	bool monotonic = true;

	report_prefix_push("timer_wfi_smp");
	if (smp_boot_secondary(1, sleeper, NULL) != PSCI_RET_SUCCESS) {
		report(false, "CPU_ON cpu1 (run with --cpus 2)");
		return report_summary();
	}
	while (!woken) {
		now = count();
		monotonic &= now >= last;
		last = now;
		polls++;
	}
	cpu0_ctl = read_sysreg(cntv_ctl_el0);
	smp_wait_cpu_off(1);
	report(woke_at >= deadline, "cpu1 woke from WFI at its deadline, not before");
	report(last >= deadline && polls > 10, "cpu0 kept running and reading the counter up to cpu1's deadline");
	report(monotonic, "cpu0's counter reads are monotonic");
	report(cpu0_ctl == 0, "cpu0's own virtual timer is untouched");
	report_prefix_pop();
	return report_summary();
}
