/*
 * Guest SVA with BTM (scenarios sva-btm, no-btm-forwarding, kvm-ordering).
 *
 * The guest shares its CPU stage-1 tables with the SMMU: a CD in its RAM (an IPA) points at TTBR0_EL1, the
 * host installs a nested STE (guest CD + host stage 2). Then, per round i: DMA-read TEST_VA + i (page A_i),
 * point the PTE at page B_i, TLBI VAE1IS + DSB ISH (with BTM no SMMU command is needed), DMA-read again and
 * report whether the device saw B_i (fresh), A_i (stale) or something else; yield to the host scheduler.
 * Parameters (scenario port): 0 rounds, 1 mode (0: BTM only, 1: also forward TLBI_NH_VA to the vSMMU).
 */
#include "scn.h"

#define TEST_VA 0x80000000UL
#define MAX_ROUNDS 64
#define MODE_FORWARD 1
#define OA_MASK 0x0000fffffffff000ULL

static u64 page_a[MAX_ROUNDS][512] __aligned(4096);
static u64 page_b[MAX_ROUNDS][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);

int main(void)
{
	u64 rounds = port_param(0), mode = port_param(1), asid, st, v;
	u32 s;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	for (u64 i = 0; i < rounds; i++) {
		page_a[i][0] = sva_val_a(i);
		page_b[i][0] = sva_val_b(i);
	}
	mmu_map_identity_default();
	for (u64 i = 0; i < rounds; i++)
		mmu_map(TEST_VA + i * 4096, (u64)(uintptr_t)page_a[i], 4096, MT_NORMAL);
	mmu_enable();
	asid = read_sysreg(ttbr0_el1) >> 48;
	cd_share_cpu_tables(cd_table);
	st = port_cmd(PORT_CMD_ATTACH_NESTED, (u64)(uintptr_t)cd_table, 0, 0);
	if (st) {
		printf("sva: attaching the CD table failed (errno %llu)\n", st);
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);   /* EL1 mappings (AP=0b00): privileged DMA */
	for (u64 i = 0; i < rounds; i++) {
		u64 va = TEST_VA + i * 4096, *pte = pte_of(va);
		s = dma_read64(va, &v);
		port_cmd(PORT_CMD_REPORT, 2 * i, sva_classify(s, v, sva_val_a(i), sva_val_b(i)), v);
		*pte = (*pte & ~OA_MASK) | (u64)(uintptr_t)page_b[i];
		dsb(ishst);
		tlbi_vae1is(asid, va);
		dsb(ish);
		isb();
		if (mode == MODE_FORWARD)
			port_forward_tlbi_va(asid, va);
		if (*(volatile u64 *)va != sva_val_b(i))
			printf("sva: round %llu: the CPU itself still sees the old page\n", i);
		s = dma_read64(va, &v);
		port_cmd(PORT_CMD_REPORT, 2 * i + 1, sva_classify(s, v, sva_val_b(i), sva_val_a(i)), v);
		port_yield(i);
	}
	port_cmd(PORT_CMD_DONE, 1, 0, 0);
	return 0;
}
