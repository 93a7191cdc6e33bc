/* Run at EL2 (unittests.cfg el = 2): the hypervisor TLBIs. IPAS2* and VMALLS12E1* carry the VM's VMID,
 * ALLE1* covers every VMID, *E2* act on the EL2 regime (no ASID with E2H=0). */
#include "tlbi_test.h"

int main(void)
{
	u64 ipa = xt_ipa(0, 0, 0x80000000);
	u64 ipa_ns = xt_ipa(1, 0b0110, 0x80200000);
	u64 ripa = xt_range(0, 1, 0, 0, 0, 0x80000);
	u64 va = xt_va(0x55, 0, 0x40080000);
	u64 rva = xt_range(0, 3, 0, 1, 0, 0x4008);   /* 64K granule: BaseADDR in 64K units */

	report(current_el() == 2, "running at EL2");
	TLBI_X(ipas2e1, ipa); TLBI_X(ipas2e1is, ipa_ns); TLBI_X(ipas2e1os, ipa);
	TLBI_X(ipas2le1, ipa); TLBI_X(ipas2le1is, ipa); TLBI_X(ipas2le1os, ipa);
	TLBI_X(ripas2e1, ripa); TLBI_X(ripas2e1is, ripa); TLBI_X(ripas2e1os, ripa);
	TLBI_X(ripas2le1, ripa); TLBI_X(ripas2le1is, ripa); TLBI_X(ripas2le1os, ripa);
	TLBI(alle1); TLBI(alle1is); TLBI(alle1os);
	TLBI(vmalls12e1); TLBI(vmalls12e1is); TLBI(vmalls12e1os);
	SYS_OP(4, 8, 6, 2); SYS_OP(4, 8, 2, 2); SYS_OP(4, 8, 5, 2);   /* VMALLWS2E1, IS, OS (FEAT_TLBIW) */
	TLBI(alle2); TLBI(alle2is); TLBI(alle2os);
	TLBI_X(vae2, va); TLBI_X(vae2is, va); TLBI_X(vae2os, va);
	TLBI_X(vale2, va); TLBI_X(vale2is, va); TLBI_X(vale2os, va);
	TLBI_X(rvae2, rva); TLBI_X(rvae2is, rva); TLBI_X(rvae2os, rva);
	TLBI_X(rvale2, rva); TLBI_X(rvale2is, rva); TLBI_X(rvale2os, rva);
	dsb(ish);
	/* the EL1 forms are allowed at EL2 too: they act on the guest's EL1&0 regime of VTTBR_EL2.VMID */
	TLBI_X(vae1is, xt_va(1, 0, 0x1000));
	dsb(ish);
	return report_summary();
}
