/*
 * Two vCPUs, MMU on: CPU0 reads TEST_VA (page A, now in its TLB); CPU1 points the PTE at page B, issues
 * REMAP_TLBI (TLBI VAE1IS) + DSB ISH; CPU0 reads TEST_VA again. With the broadcast CPU0 sees page B
 * (exit 0); without it CPU0 still translates through its stale TLB entry and sees page A (exit 3):
 * smp_remap_local.c uses the non-shareable TLBI VAE1, which only FB=1 broadcasts. Run with --cpus 2: with one
 * CPU the remap is reported as SKIP.
 */
#include "tlbi_test.h"

#ifndef REMAP_TLBI
#define REMAP_TLBI(x) TLBI_X(vae1is, x)
#endif
#define TEST_VA 0x80000000UL           /* level-1 entry 2: outside the identity map */
#define VAL_A 0xAAAAAAAAULL
#define VAL_B 0xBBBBBBBBULL
#define OA_MASK 0x0000fffffffff000ULL

static u64 page_a[512] __aligned(4096);
static u64 page_b[512] __aligned(4096);
static volatile int stage;

static u64 *pte_of(u64 va)
{
	u64 *t = (u64 *)(uintptr_t)(read_sysreg(ttbr0_el1) & OA_MASK);
	for (int level = 1; level < 3; level++)
		t = (u64 *)(uintptr_t)(t[(va >> (39 - 9 * level)) & 511] & OA_MASK);
	return &t[(va >> 12) & 511];
}

static u64 read_test_va(void)
{
	return *(volatile u64 *)TEST_VA;
}

static void wait_stage(int s)
{
	while (stage != s)
		;
}

static void remapper(void *unused)
{
	u64 *pte;
	mmu_enable();
	stage = 1;
	wait_stage(2);                      /* CPU0 has TEST_VA -> page A in its TLB */
	pte = pte_of(TEST_VA);
	*pte = (*pte & ~OA_MASK) | (u64)(uintptr_t)page_b;
	dsb(ishst);
	REMAP_TLBI(xt_va(0, 0, TEST_VA));
	dsb(ish);
	isb();
	stage = 3;
	dsb(sy);
}

int main(void)
{
	u64 before, after;

	page_a[0] = VAL_A;
	page_b[0] = VAL_B;
	mmu_map_identity_default();
	mmu_map(TEST_VA, (u64)(uintptr_t)page_a, 4096, MT_NORMAL);
	mmu_enable();
	report(read_test_va() == VAL_A, "TEST_VA maps page A");
	if (smp_boot_secondary(1, remapper, NULL) != PSCI_RET_SUCCESS) {
		report_skip("CPU1 did not start: needs 2 CPUs (run with --cpus 2)");
		return report_summary();
	}
	wait_stage(1);                      /* CPU1's MMU is on (its own TLBI VMALLE1 is done) */
	before = read_test_va();
	stage = 2;
	wait_stage(3);
	after = read_test_va();
	smp_wait_cpu_off(1);
	report(before == VAL_A, "CPU0 read page A before the remap");
	if (after == VAL_B)
		report_info("CPU0 reads page B after CPU1's TLBI: the broadcast reached it");
	else
		report_info("CPU0 still reads page A (0x%llx): stale TLB entry, no broadcast", after);
	report_summary();
	return after == VAL_B ? 0 : (after == VAL_A ? 3 : 1);
}
