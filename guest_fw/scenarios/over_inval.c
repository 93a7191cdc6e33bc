/*
 * Over-invalidation workload (scenario over-invalidation, seed 001): a guest whose assigned device uses a
 * stage-2-only context (DMA addresses are IPAs) and whose kernel keeps changing its own page tables.
 *
 * Per round: DMA-read each of `pages` buffer pages (filling the SMMU's stage-2 entries; each must show this
 * VM's marker), then repoint `tlbis` of its own mappings with TLBI VAE1IS + DSB ISH each (CPU-side
 * maintenance that has nothing to do with the device), report, yield.
 * Parameters: 0 rounds, 1 pages, 2 tlbis, 3 VM number (marker).
 */
#include "scn.h"

#define TEST_VA 0x80000000UL
#define MAX_PAGES 32
#define MAX_TLBIS 32
#define OA_MASK 0x0000fffffffff000ULL

static u64 buf[MAX_PAGES][512] __aligned(4096);
static u64 flip[2][512] __aligned(4096);

int main(void)
{
	u64 rounds = port_param(0), pages = port_param(1), tlbis = port_param(2), id = port_param(3);
	u64 asid, wrong = 0, faults = 0, v;

	if (pages > MAX_PAGES)
		pages = MAX_PAGES;
	if (tlbis > MAX_TLBIS)
		tlbis = MAX_TLBIS;
	for (u64 p = 0; p < pages; p++)
		buf[p][0] = (id << 32) | p;
	mmu_map_identity_default();
	for (u64 t = 0; t < tlbis; t++)
		mmu_map(TEST_VA + t * 4096, (u64)(uintptr_t)flip[0], 4096, MT_NORMAL);
	mmu_enable();
	asid = read_sysreg(ttbr0_el1) >> 48;
	for (u64 r = 0; r < rounds; r++) {
		u64 bad = 0, fault = 0;
		for (u64 p = 0; p < pages; p++) {
			u32 s = dma_read64((u64)(uintptr_t)buf[p], &v);
			if (s != DMATEST_ST_DONE)
				fault++;
			else if (v != ((id << 32) | p))
				bad++;
		}
		for (u64 t = 0; t < tlbis; t++) {
			u64 va = TEST_VA + t * 4096, *pte = pte_of(va);
			*pte = (*pte & ~OA_MASK) | (u64)(uintptr_t)flip[(r + 1) & 1];
			dsb(ishst);
			tlbi_vae1is(asid, va);
			dsb(ish);
		}
		wrong += bad;
		faults += fault;
		port_cmd(PORT_CMD_REPORT, r, fault ? SCN_FAULT : (bad ? SCN_OTHER : SCN_FRESH), bad + fault);
		port_yield(r);
	}
	port_cmd(PORT_CMD_DONE, 1, 0, 0);
	return (wrong || faults) ? 1 : 0;
}
