/*
 * PSCI calls (DEN0022, SMCCC conduit: HVC from EL1, SMC from EL2 as on QEMU virt,virtualization=on),
 * and SMP boot of secondaries (exceptions: exceptions.c).
 */
#include "guest.h"

s64 psci_call(u32 fn, u64 a1, u64 a2, u64 a3)
{
	register u64 x0 asm("x0") = fn;
	register u64 x1 asm("x1") = a1;
	register u64 x2 asm("x2") = a2;
	register u64 x3 asm("x3") = a3;
	if (current_el() == 2)
		/* SMC #0, encoded so assemblers without the EL3 feature accept it (Arm ARM C6.2.365) */
		asm volatile(".inst 0xd4000003" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3) : : "memory");
	else
		asm volatile("hvc #0" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3) : : "memory");
	return (s64)x0;
}

u32 psci_version(void)
{
	return (u32)psci_call(PSCI_VERSION, 0, 0, 0);
}

s64 psci_cpu_on(u64 mpidr, u64 entry, u64 context)
{
	return psci_call(PSCI_CPU_ON, mpidr, entry, context);
}

s64 psci_affinity_info(u64 mpidr)
{
	return psci_call(PSCI_AFFINITY_INFO, mpidr, 0, 0);
}

void psci_cpu_off(void)
{
	for (;;)
		psci_call(PSCI_CPU_OFF, 0, 0, 0);
}

void psci_system_off(void)
{
	for (;;)
		psci_call(PSCI_SYSTEM_OFF, 0, 0, 0);
}

/* ---- SMP --------------------------------------------------------------------------------------- */
u64 cpu_mpidr(int cpu)
{
	return ((u64)(cpu / 16) << 8) | (u64)(cpu % 16);
}

int smp_processor_id(void)
{
	u64 m = current_el() == 2 ? read_sysreg(vmpidr_el2) : read_sysreg(mpidr_el1);
	return (int)((m & 0xff) + ((m >> 8) & 0xff) * 16);
}

int nr_cpus_present(void)
{
	int n = 0;
	while (n < NR_CPUS && psci_affinity_info(cpu_mpidr(n)) >= 0)
		n++;
	return n;
}

struct secondary_boot {
	void (*fn)(void *);
	void *arg;
	int pending;            /* CPU_ON succeeded, secondary_main not entered yet */
};

static volatile struct secondary_boot boot_data[NR_CPUS];
extern char secondary_entry[];

s64 smp_boot_secondary(int cpu, void (*fn)(void *), void *arg)
{
	if (cpu < 0 || cpu >= NR_CPUS)
		return PSCI_RET_INVALID_PARAMETERS;
	s64 r;

	boot_data[cpu].fn = fn;
	boot_data[cpu].arg = arg;
	boot_data[cpu].pending = 1;
	dsb(sy);
	r = psci_cpu_on(cpu_mpidr(cpu), (u64)(uintptr_t)secondary_entry, (u64)cpu);
	if (r != PSCI_RET_SUCCESS)
		boot_data[cpu].pending = 0;
	return r;
}

void __noreturn secondary_main(int cpu)
{
	void (*fn)(void *) = boot_data[cpu].fn;

	boot_data[cpu].pending = 0;
	dsb(sy);
	if (fn)
		fn(boot_data[cpu].arg);
	dsb(sy);
	psci_cpu_off();
}

s64 smp_wait_cpu_off(int cpu)
{
	s64 r;

	/*
	 * PSCI (DEN0022, AFFINITY_INFO) has it answer ON_PENDING from a successful CPU_ON until the CPU runs,
	 * but QEMU 7.2 (target/arm/arm-powerctl.c arm_set_cpu_on) leaves it OFF until the target CPU picks up
	 * the request: wait for the CPU to have entered secondary_main before trusting OFF.
	 */
	if (cpu >= 0 && cpu < NR_CPUS)
		while (boot_data[cpu].pending)
			;
	while ((r = psci_affinity_info(cpu_mpidr(cpu))) != PSCI_AFF_OFF)
		if (r < 0)
			return r;	/* no such CPU: it will never be OFF */
	return 0;
}
