/* Operand decode worked examples: a TTBR1 address (sign-extended from VA[55]), 16-bit ASIDs, TTL hints,
 * and range operands with each granule, including a TTBR1 range and the reserved TG=0. */
#include "tlbi_test.h"

int main(void)
{
	TLBI_X(vae1is, xt_va(0xffff, 0b0110, 0xffff800000100000ULL));  /* TTBR1, ASID 0xffff, 4K level 2 */
	TLBI_X(vale1is, xt_va(0x1234, 0b1011, 0x0000007ffffff000ULL)); /* 16K granule TTL, top of TTBR0 */
	TLBI_X(aside1is, xt_va(0xbeef, 0, 0));
	TLBI_X(rvae1is, xt_range(1, 1, 1, 3, 2, 0x100));                /* 4K: 4*2^6 pages = 1 MiB at 1 MiB */
	TLBI_X(rvae1is, xt_range(1, 2, 0, 0, 0, 0x10));                 /* 16K: 2 pages at 0x40000 */
	TLBI_X(rvae1is, xt_range(1, 3, 3, 31, 0, 1));                   /* 64K: 32*2^16 pages = 128 GiB */
	TLBI_X(rvae1is, xt_range(1, 1, 0, 0, 0, 0x1fffffff00ULL));      /* TTBR1 range (BaseADDR[36] set) */
	TLBI_X(rvae1is, xt_range(1, 0, 0, 5, 0, 4));                    /* TG=0 reserved: covers nothing */
	dsb(ish);
	return report_summary();
}
