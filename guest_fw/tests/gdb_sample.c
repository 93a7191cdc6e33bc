/*
 * A guest to debug with gdb (smmu-harness run gdb_sample.elf --cpus 2 -S -s, or qemu-system-aarch64 ... -s -S;
 * then gdb-multiarch gdb_sample.elf -ex 'target remote :1234'): CPU1 computes in secondary_work(), CPU0 adds
 * 1, 2 and 3 to `counter` in bump(). Exit status: the final counter (6), so a debugger's writes show in it.
 */
#include "guest.h"

volatile u64 counter;                    /* a variable to print and to watch */
volatile u64 cpu1_result;
static volatile int cpu1_done;

__attribute__((noinline)) void bump(u64 n)
{
	counter += n;
}

__attribute__((noinline)) u64 secondary_work(u64 x)
{
	return x * 3 + 1;
}

static void secondary(void *arg)
{
	cpu1_result = secondary_work((u64)(uintptr_t)arg);
	dsb(sy);
	cpu1_done = 1;
}

int main(void)
{
	if (nr_cpus_present() > 1) {
		s64 r = smp_boot_secondary(1, secondary, (void *)13);

		if (r != PSCI_RET_SUCCESS) {
			printf("CPU_ON cpu1 failed: %lld\n", (long long)r);
			return 100;
		}
		while (!cpu1_done)
			;
		smp_wait_cpu_off(1);
	}
	for (u64 i = 1; i <= 3; i++)
		bump(i);
	printf("counter %llu cpu1 %llu\n", (unsigned long long)counter, (unsigned long long)cpu1_result);
	return (int)counter;
}
