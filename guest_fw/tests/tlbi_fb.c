/* Non-shareable EL1 TLBIs: with HCR_EL2.FB=1 (KVM's setting, the default) they are broadcast as Inner
 * Shareable; with FB=0 (unittests.cfg hcr_fb = 0) they stay on the issuing vCPU. Run with 2 vCPUs. */
#include "tlbi_test.h"

int main(void)
{
	TLBI_X(vae1, xt_va(9, 0, 0x40300000));
	TLBI(vmalle1);
	TLBI_X(rvaale1, xt_range(0, 1, 0, 0, 0, 0x40300));
	dsb(ish);
	TLBI_X(vae1is, xt_va(9, 0, 0x40300000));    /* IS: broadcast whatever FB says */
	dsb(ish);
	return report_summary();
}
