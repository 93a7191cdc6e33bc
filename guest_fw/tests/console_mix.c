/*
 * Console ordering sample (harness/console.py): the PL011 (printf, putc) and semihosting SYS_WRITEC,
 * SYS_WRITE0 and SYS_WRITE of ":tt" interleaved character by character, from every CPU in turn (each waits
 * for its turn, so the order never depends on timing), with the MMU off and then on, a long SYS_WRITE0 string
 * (more than a page), and one that crosses a page boundary. Built with -DEND_FAULT it ends with a store to an
 * unmapped address (a death line right after its last output) instead of exit(0). Run with --cpus 1 or more.
 */
#include "guest.h"

#define SYS_OPEN 0x01
#define SYS_WRITEC 0x03
#define SYS_WRITE 0x05

static volatile int turn;
static s64 tt;                                       /* ":tt" opened for writing (stdout) */
static char long_line[5000];
static char page_pair[8192] __attribute__((aligned(4096)));

static void writec(char c)
{
	volatile char ch = c;
	semihosting_call(SYS_WRITEC, (u64)(uintptr_t)&ch);
}

static void writec_s(const char *s)
{
	while (*s)
		writec(*s++);
}

static void tt_write(const char *s, u64 len)
{
	u64 block[3] = { (u64)tt, (u64)(uintptr_t)s, len };
	semihosting_call(SYS_WRITE, (u64)(uintptr_t)block);
}

static void mixed(int cpu, const char *phase)
{
	char buf[64];
	for (int i = 0; i < 2; i++) {
		printf("cpu%d %s uart %d\n", cpu, phase, i);
		snprintf(buf, sizeof(buf), "cpu%d %s tt %d\n", cpu, phase, i);
		tt_write(buf, strlen(buf));
		snprintf(buf, sizeof(buf), "cpu%d %s write0 %d\n", cpu, phase, i);
		semihosting_write0(buf);
		snprintf(buf, sizeof(buf), "cpu%d %s writec %d\n", cpu, phase, i);
		writec_s(buf);
		for (const char *p = "ab"; *p; p++) {       /* one character from each source in turn */
			putc(*p);
			writec(*p + 1);
			semihosting_write0("-");
			tt_write("=+", 1);
		}
		putc('\n');
		semihosting_write0("");                      /* an empty string prints nothing */
	}
}

static void secondary(void *arg)
{
	int cpu = (int)(uintptr_t)arg;
	while (turn != cpu)
		;
	mixed(cpu, "smp");
	dsb(sy);
	turn = cpu + 1;
}

int main(void)
{
	int n = nr_cpus_present();
	u64 open_tt[3] = { (u64)(uintptr_t)":tt", 4, 3 };

	tt = (s64)semihosting_call(SYS_OPEN, (u64)(uintptr_t)open_tt);
	mixed(0, "boot");
	for (int cpu = 1; cpu < n; cpu++) {
		turn = cpu;
		dsb(sy);
		if (smp_boot_secondary(cpu, secondary, (void *)(uintptr_t)cpu) == PSCI_RET_SUCCESS)
			while (turn == cpu)
				;
		smp_wait_cpu_off(cpu);
	}
	for (int i = 0; i < (int)sizeof(long_line) - 2; i++)
		long_line[i] = 'A' + i % 26;
	long_line[sizeof(long_line) - 2] = '\n';
	semihosting_write0(long_line);
	memcpy(page_pair + 4090, "across\n", 8);         /* from one page into the next */
	semihosting_write0(page_pair + 4090);
	mmu_map_identity_default();
	mmu_enable();
	mixed(0, "mmu");
	mmu_disable();
	printf("done\n");
#ifdef END_FAULT
	writec('!');
	*(volatile u32 *)0x08012000 = 1;                 /* past the GICv2 CPU interface: nothing there */
#endif
	return 0;
}
