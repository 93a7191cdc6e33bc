/*
 * SMP sample: CPU0 starts every other CPU with PSCI CPU_ON; each reports from its own CPU, then powers off.
 * Also checks the PSCI error paths (DEN0022 5.6 CPU_ON, 5.7 AFFINITY_INFO). Run with --cpus 2 (or more).
 */
#include "guest.h"

static volatile int arrived[NR_CPUS];
static volatile u64 seen_mpidr[NR_CPUS];

static void secondary(void *arg)
{
	int cpu = smp_processor_id();
	seen_mpidr[cpu] = read_sysreg(mpidr_el1);
	report(cpu == (int)(uintptr_t)arg, "cpu%d: running on the CPU it was started on", cpu);
	report(psci_affinity_info(cpu_mpidr(cpu)) == PSCI_AFF_ON, "cpu%d: AFFINITY_INFO says ON", cpu);
	dsb(sy);
	arrived[cpu] = 1;
}

int main(void)
{
	int n = nr_cpus_present();

	report_prefix_push("smp");
	report_info("%d CPUs present", n);
	report(smp_processor_id() == 0, "boot CPU is cpu0");
	if (n < 2) {
		report_skip("needs 2 or more CPUs (run with --cpus 2)");
		report_prefix_pop();
		return report_summary();
	}
	report(psci_affinity_info(cpu_mpidr(1)) == PSCI_AFF_OFF, "cpu1 starts powered off");
	report(psci_cpu_on(cpu_mpidr(0), 0, 0) == PSCI_RET_ALREADY_ON, "CPU_ON of a running CPU: ALREADY_ON");
	report(psci_cpu_on(cpu_mpidr(n), 0, 0) == PSCI_RET_INVALID_PARAMETERS,
	       "CPU_ON of a CPU that does not exist: INVALID_PARAMETERS");
	for (int cpu = 1; cpu < n; cpu++) {
		s64 r = smp_boot_secondary(cpu, secondary, (void *)(uintptr_t)cpu);
		/* report only after the secondary's own lines, so the output order never depends on timing */
		while (r == PSCI_RET_SUCCESS && !arrived[cpu])
			;
		report(r == PSCI_RET_SUCCESS, "CPU_ON cpu%d", cpu);
		smp_wait_cpu_off(cpu);
		report(seen_mpidr[cpu] == (cpu_mpidr(cpu) | (1ULL << 31)), "cpu%d: MPIDR_EL1 %#llx", cpu,
		       (unsigned long long)seen_mpidr[cpu]);
		report(psci_affinity_info(cpu_mpidr(cpu)) == PSCI_AFF_OFF, "cpu%d: OFF after CPU_OFF", cpu);
	}
	report_prefix_pop();
	return report_summary();
}
