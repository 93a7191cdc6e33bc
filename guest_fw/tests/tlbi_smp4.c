/* 4 vCPUs: each issues TLBI VAE1IS + DSB ISH; every broadcast reaches the three others (dvm_tlbi) and every
 * DVM Sync is acknowledged by three. CPUs take turns (a token in memory) so the trace order is fixed. */
#include "tlbi_test.h"

static volatile int turn;

static void tlbi_turn(void *arg)
{
	int me = (int)(uintptr_t)arg;
	while (turn != me)
		;
	TLBI_X(vae1is, xt_va(me, 0, 0x40400000 + ((u64)me << 12)));
	dsb(ish);
	turn = me + 1;
	dsb(sy);
}

int main(void)
{
	for (int cpu = 1; cpu < 4; cpu++) {
		if (smp_boot_secondary(cpu, tlbi_turn, (void *)(uintptr_t)cpu) != PSCI_RET_SUCCESS) {
			report_skip("cpu%d did not start: needs 4 CPUs (run with --cpus 4)", cpu);
			return report_summary();
		}
	}
	tlbi_turn((void *)0);
	for (int cpu = 1; cpu < 4; cpu++)
		smp_wait_cpu_off(cpu);
	report(turn == 4, "all four CPUs took their turn");
	return report_summary();
}
