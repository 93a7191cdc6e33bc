/*
 * Scenario sva-dirty on the scenario port's nested attach (as sva_btm.c): the guest's CD shares its CPU tables
 * with HA = HD = 1 and the guest relies on BTM for its invalidations (dirty.h has the rounds).
 * Parameters: 0 rounds.
 */
#include "dirty.h"

int main(void)
{
	u64 rounds = port_param(0), asid, st;

	asid = dirty_setup();
	cd_share_cpu_tables_with(cd_table, CD_HA | CD_HD);
	st = port_cmd(PORT_CMD_ATTACH_NESTED, (u64)(uintptr_t)cd_table, 0, 0);
	if (st) {
		printf("sva-dirty: attaching the CD table failed (errno %llu)\n", st);
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);   /* EL1 mappings (AP=0b00): privileged DMA */
	port_cmd(PORT_CMD_REPORT, 0, SCN_FRESH, 0);
	for (u64 i = 0; i < rounds; i++)
		dirty_round(i, asid, 0);
	port_cmd(PORT_CMD_DONE, 1, 0, 0);
	return 0;
}
