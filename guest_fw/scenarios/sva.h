/*
 * The SVA rounds shared by sva_btm.c and sva_vsmmu.c (only they include this: it holds their pages).
 *
 * sva_setup(): pages A_i/B_i, TEST_VA + i mapped to A_i in the CPU's own stage-1 tables, MMU on; returns the
 * ASID of TTBR0_EL1 (what the SMMU's CD shares). sva_round(i): DMA-read TEST_VA + i, point the PTE at B_i,
 * TLBI VAE1IS + DSB ISH, run `forward` (a vSMMU command or a port hypercall) if given, DMA-read again, and
 * report fresh (B_i) / stale (A_i) / other to the host; then yield to the host scheduler.
 */
#ifndef SVA_H
#define SVA_H
#include "scn.h"

#define TEST_VA 0x80000000UL
#define MAX_ROUNDS 64
#define OA_MASK 0x0000fffffffff000ULL

static u64 page_a[MAX_ROUNDS][512] __aligned(4096);
static u64 page_b[MAX_ROUNDS][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);

static inline u64 sva_val_a(u64 i) { return 0xA11CE00000000000ULL | i; }
static inline u64 sva_val_b(u64 i) { return 0xB0B0000000000000ULL | i; }

static inline u64 sva_classify(u32 status, u64 v, u64 want, u64 old)
{
	if (status != DMATEST_ST_DONE)
		return SCN_FAULT;
	if (v == want)
		return SCN_FRESH;
	return v == old ? SCN_STALE : SCN_OTHER;
}

static inline u64 sva_setup(u64 rounds)
{
	for (u64 i = 0; i < rounds; i++) {
		page_a[i][0] = sva_val_a(i);
		page_b[i][0] = sva_val_b(i);
	}
	mmu_map_identity_default();
	for (u64 i = 0; i < rounds; i++)
		mmu_map(TEST_VA + i * 4096, (u64)(uintptr_t)page_a[i], 4096, MT_NORMAL);
	mmu_enable();
	return read_sysreg(ttbr0_el1) >> 48;
}

static inline void sva_round(u64 i, u64 asid, void (*forward)(u64 asid, u64 va))
{
	u64 va = TEST_VA + i * 4096, *pte = pte_of(va), v;
	u32 s;

	s = dma_read64(va, &v);
	port_cmd(PORT_CMD_REPORT, 2 * i, sva_classify(s, v, sva_val_a(i), sva_val_b(i)), v);
	*pte = (*pte & ~OA_MASK) | (u64)(uintptr_t)page_b[i];
	dsb(ishst);
	tlbi_vae1is(asid, va);
	dsb(ish);
	isb();
	if (forward)
		forward(asid, va);
	if (*(volatile u64 *)va != sva_val_b(i))
		printf("sva: round %llu: the CPU itself still sees the old page\n", i);
	s = dma_read64(va, &v);
	port_cmd(PORT_CMD_REPORT, 2 * i + 1, sva_classify(s, v, sva_val_b(i), sva_val_a(i)), v);
	port_yield(i);
}

#endif
