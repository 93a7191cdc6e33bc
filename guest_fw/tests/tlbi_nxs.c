/* The FEAT_XS nXS forms (CRn=9) of the EL1 TLBIs: same operands, names with NXS appended. */
#include "tlbi_test.h"

int main(void)
{
	u64 va = xt_va(7, 0b0111, 0x40200000);      /* TTL: 4K granule, level 3 */
	u64 rng = xt_range(7, 2, 1, 3, 2, 0x1000);  /* 16K, (3+1)*2^6 pages */

	TLBI(vmalle1nxs); TLBI(vmalle1isnxs); TLBI(vmalle1osnxs);
	TLBI_X(vae1isnxs, va); TLBI_X(aside1osnxs, va); TLBI_X(vaae1nxs, va);
	TLBI_X(vale1isnxs, va); TLBI_X(vaale1osnxs, va);
	TLBI_X(rvae1isnxs, rng); TLBI_X(rvaale1nxs, rng);
	dsb(ish);
	return report_summary();
}
