/*
 * Guest SVA with BTM (scenarios sva-btm, no-btm-forwarding, kvm-ordering).
 *
 * The guest shares its CPU stage-1 tables with the SMMU: a CD in its RAM (an IPA) points at TTBR0_EL1, the
 * host installs a nested STE (guest CD + host stage 2). Then, per round i: DMA-read TEST_VA + i (page A_i),
 * point the PTE at page B_i, TLBI VAE1IS + DSB ISH (with BTM no SMMU command is needed), DMA-read again and
 * report whether the device saw B_i (fresh), A_i (stale) or something else; yield to the host scheduler.
 * Parameters (scenario port): 0 rounds, 1 mode (0: BTM only, 1: also forward TLBI_NH_VA to the vSMMU).
 */
#include "sva.h"

#define MODE_FORWARD 1

static void forward_by_port(u64 asid, u64 va)
{
	port_forward_tlbi_va(asid, va);
}

int main(void)
{
	u64 rounds = port_param(0), mode = port_param(1), asid, st;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	asid = sva_setup(rounds);
	cd_share_cpu_tables(cd_table);
	st = port_cmd(PORT_CMD_ATTACH_NESTED, (u64)(uintptr_t)cd_table, 0, 0);
	if (st) {
		printf("sva: attaching the CD table failed (errno %llu)\n", st);
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);   /* EL1 mappings (AP=0b00): privileged DMA */
	for (u64 i = 0; i < rounds; i++)
		sva_round(i, asid, mode == MODE_FORWARD ? forward_by_port : 0);
	port_cmd(PORT_CMD_DONE, 1, 0, 0);
	return 0;
}
