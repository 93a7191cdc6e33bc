/*
 * The rounds of scenario sva-dirty, shared by sva_dirty.c (BTM through the scenario port's nested attach) and
 * sva_dirty_vsmmu.c (the VMM's vSMMU): hardware dirty state (IHI 0070 3.13, HTTU) in page tables the CPU and
 * the device share.
 *
 * dirty_setup(): NPAGES pages mapped at DIRTY_VA in the CPU's own tables as writable-clean (DBM = 1, AP[2] = 1:
 * read-only until the hardware marks them dirty; DDI 0487 D8.4.6). The guest's CD (written by the caller) has
 * HA = HD = 1, so the SMMU sets the dirty state (clears AP[2]) when the device writes, atomically with respect
 * to the CPU. The CPU never writes these pages itself (this CPU has no FEAT_HAFDBS).
 * dirty_round(i): the device writes a set of the pages (a rotating mask that overlaps the previous round's);
 * the guest then finds the dirty pages in its PTEs, "writes them back" (checks their data) and cleans them
 * (AP[2] = 1 again), then invalidates: TLBI VAE1IS + DSB ISH, and `forward` (a vSMMU TLBI_NH_VA) when given.
 * A dirty writable entry still cached in the SMMU's TLB lets the device's next write through without marking
 * the page dirty: the guest misses it and would not write it back (lost data).
 * Reports: index 0 once set up (the host counts costs from there), then per round index i + 1, outcome
 * (SCN_FRESH: the dirty pages are exactly the written ones, SCN_STALE: a written page is not dirty, SCN_OTHER: a
 * page is dirty that was not written or holds wrong data, SCN_FAULT: a DMA failed), value = written mask | dirty
 * mask << 16.
 */
#ifndef DIRTY_H
#define DIRTY_H
#include "scn.h"

#define DIRTY_VA 0xA0000000UL
#define NPAGES 8
#define PTE_AP2 (1ULL << 7)
#define PTE_DBM (1ULL << 51)

static u64 dpages[NPAGES][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);

static inline u64 dirty_val(u64 i, u64 p) { return 0xD127000000000000ULL | (i << 8) | p; }
static inline u32 dirty_mask(u64 i) { return (0xB5u << (i % NPAGES) | 0xB5u >> (NPAGES - i % NPAGES)) & 0xff; }

static inline u64 dirty_setup(void)
{
	mmu_map_identity_default();
	for (int p = 0; p < NPAGES; p++)
		mmu_map(DIRTY_VA + p * 4096UL, (u64)(uintptr_t)dpages[p], 4096, MT_NORMAL);
	mmu_enable();                                                 /* pte_of() walks from TTBR0_EL1 */
	for (int p = 0; p < NPAGES; p++)
		*pte_of(DIRTY_VA + p * 4096UL) |= PTE_AP2 | PTE_DBM;       /* writable-clean */
	dsb(ishst);
	asm volatile("tlbi vmalle1" : : : "memory");
	dsb(ish);
	isb();
	return read_sysreg(ttbr0_el1) >> 48;
}

static inline void dirty_round(u64 i, u64 asid, void (*forward)(u64 asid, u64 va))
{
	u32 want = dirty_mask(i), dirty = 0, st = DMATEST_ST_DONE;
	u64 outcome = SCN_FRESH;

	for (int p = 0; p < NPAGES; p++)
		if (want & (1u << p))
			st |= dma_write64(DIRTY_VA + p * 4096UL + 8 * (u64)p, dirty_val(i, p)) & ~DMATEST_ST_DONE;
	for (int p = 0; p < NPAGES; p++) {
		u64 *pte = pte_of(DIRTY_VA + p * 4096UL);
		if ((*pte & (PTE_DBM | PTE_AP2)) != PTE_DBM)
			continue;                                        /* clean (or not writable) */
		dirty |= 1u << p;
		if (dpages[p][p] != dirty_val(i, p))                     /* the write-back would save wrong data */
			outcome = SCN_OTHER;
		*pte |= PTE_AP2;                                         /* written back: clean again */
	}
	dsb(ishst);
	for (int p = 0; p < NPAGES; p++)
		if (dirty & (1u << p))
			tlbi_vae1is(asid, DIRTY_VA + p * 4096UL);
	dsb(ish);
	isb();
	if (forward)
		for (int p = 0; p < NPAGES; p++)
			if (dirty & (1u << p))
				forward(asid, DIRTY_VA + p * 4096UL);
	if (st != DMATEST_ST_DONE)
		outcome = SCN_FAULT;
	else if (want & ~dirty)
		outcome = SCN_STALE;
	else if (dirty & ~want)
		outcome = SCN_OTHER;
	port_cmd(PORT_CMD_REPORT, i + 1, outcome, want | (dirty << 16));
	port_yield(i);
}

#endif
