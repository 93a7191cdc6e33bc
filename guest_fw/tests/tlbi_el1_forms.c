/* Every TLBI form allowed at EL1 once (Armv8.0, FEAT_TLBIOS, FEAT_TLBIRANGE), then DSB ISH.
 * Golden: tlbi_el1_forms.jsonl (op, shareability, broadcast, VMID, ASID, address of each). */
#include "tlbi_test.h"

int main(void)
{
	u64 va = xt_va(0x2a, 0, 0x40123000);
	u64 aside = xt_va(0x2a, 0, 0);
	u64 rng = xt_range(0x2a, 1, 0, 1, 0, 0x40123);      /* 4K, (1+1)*2 pages from 0x40123000 */

	TLBI(vmalle1); TLBI(vmalle1is); TLBI(vmalle1os);
	TLBI_X(vae1, va); TLBI_X(vae1is, va); TLBI_X(vae1os, va);
	TLBI_X(aside1, aside); TLBI_X(aside1is, aside); TLBI_X(aside1os, aside);
	TLBI_X(vaae1, va); TLBI_X(vaae1is, va); TLBI_X(vaae1os, va);
	TLBI_X(vale1, va); TLBI_X(vale1is, va); TLBI_X(vale1os, va);
	TLBI_X(vaale1, va); TLBI_X(vaale1is, va); TLBI_X(vaale1os, va);
	TLBI_X(rvae1, rng); TLBI_X(rvae1is, rng); TLBI_X(rvae1os, rng);
	TLBI_X(rvaae1, rng); TLBI_X(rvaae1is, rng); TLBI_X(rvaae1os, rng);
	TLBI_X(rvale1, rng); TLBI_X(rvale1is, rng); TLBI_X(rvale1os, rng);
	TLBI_X(rvaale1, rng); TLBI_X(rvaale1is, rng); TLBI_X(rvaale1os, rng);
	dsb(ish);
	report(true, "30 EL1 TLBI forms executed");
	return report_summary();
}
