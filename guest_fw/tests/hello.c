/* Sample guest: console output, the report API and a few runtime checks. Exits 0 (all pass). */
#include "guest.h"

int main(void)
{
	char buf[64];

	printf("Hello from an smmu-harness guest on cpu %d at EL%d\n", smp_processor_id(), current_el());
	report_prefix_push("hello");
	report(1 + 1 == 2, "arithmetic");
	snprintf(buf, sizeof(buf), "%d|%5u|%-4x|%08X|%s|%c|%lld", -42, 7u, 0xbeu, 0xc0ffeeu, "ok", 'z',
		 -1234567890123LL);
	report(!strcmp(buf, "-42|    7|be  |00C0FFEE|ok|z|-1234567890123"), "snprintf formats: %s", buf);
	report(snprintf(buf, 4, "%s", "truncated") == 9 && !strcmp(buf, "tru"), "snprintf truncates");
	report_prefix_push("psci");
	report(psci_version() >= 0x10000, "PSCI version %u.%u", psci_version() >> 16, psci_version() & 0xffff);
	report(psci_affinity_info(cpu_mpidr(0)) == PSCI_AFF_ON, "boot CPU is on");
	report_prefix_pop();
	report_prefix_pop();
	return report_summary();
}
