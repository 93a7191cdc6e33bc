/* An EL2 TLBI executed at EL1 is an undefined instruction: the run dies with status 132
 * (unittests.cfg exit = 132) and the trace shows tlbi_undef. */
#include "tlbi_test.h"

int main(void)
{
	TLBI_X(vae1is, xt_va(1, 0, 0x40080000));   /* allowed */
	dsb(ish);
	TLBI(alle1is);                              /* EL2 only: UNDEFINED at EL1 */
	report(false, "survived TLBI ALLE1IS at EL1");
	return report_summary();
}
