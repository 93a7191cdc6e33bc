/* DSB after broadcast TLBIs issues one DVM Sync (dvm_sync, acknowledged by the other vCPU); a DSB with
 * nothing pending, DSB ISHST and DSB NSH do not; DSB SY does. Run with 2 vCPUs. */
#include "tlbi_test.h"

int main(void)
{
	u64 va = xt_va(3, 0, 0x40100000);

	dsb(ish);                           /* nothing pending: no sync */
	TLBI_X(vae1is, va);
	TLBI_X(vale1is, va);
	dsb(ish);                           /* one sync for both */
	dsb(ish);                           /* nothing pending any more */
	TLBI_X(vaae1is, va);
	dsb(ishst);                         /* store-only barrier: does not complete TLBIs */
	dsb(nsh);                           /* local: no DVM Sync */
	dsb(sy);                            /* full system: sync */
	TLBI(vmalle1os);
	dsb(osh);                           /* outer shareable: sync */
	return report_summary();
}
