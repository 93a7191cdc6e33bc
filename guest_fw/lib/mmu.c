/*
 * A small stage-1 MMU helper: 4 KiB granule, 39-bit input addresses (TCR.T0SZ = 25, so walks start at
 * level 1), TTBR0 only, tables from a static pool. Works in the EL1&0 regime, or the EL2 regime for guests
 * started at EL2 (E2H = 0). Descriptor and register layouts: Arm ARM D8.3 (VMSAv8-64 descriptors),
 * D17.2 (MAIR_ELx, TCR_ELx, SCTLR_ELx).
 */
#include "guest.h"

#define POOL_PAGES 32
#define ENTRIES 512
#define DESC_VALID (1ULL << 0)
#define DESC_TABLE (1ULL << 1)         /* table (levels 0-2) or page (level 3) */
#define DESC_ATTRIDX(i) ((u64)(i) << 2)
#define DESC_AP1 (1ULL << 6)            /* RES1 in single-EL regimes (EL2, E2H = 0) */
#define DESC_SH_INNER (3ULL << 8)
#define DESC_AF (1ULL << 10)
#define DESC_PXN (1ULL << 53)
#define DESC_XN (1ULL << 54)            /* UXN at EL1&0, XN at EL2 */
#define OA_MASK 0x0000fffffffff000ULL

#define MAIR_VALUE 0xff00ULL            /* attr0 = 0x00 Device-nGnRnE, attr1 = 0xff Normal WB RW-alloc */
#define TCR_T0SZ 25ULL
#define TCR_IRGN0_WBWA (1ULL << 8)
#define TCR_ORGN0_WBWA (1ULL << 10)
#define TCR_SH0_INNER (3ULL << 12)
#define TCR_EL1_EPD1 (1ULL << 23)
#define TCR_EL1_IPS_40 (2ULL << 32)
#define TCR_EL2_PS_40 (2ULL << 16)
#define TCR_EL2_RES1 ((1ULL << 31) | (1ULL << 23))
#define SCTLR_M (1ULL << 0)
#define SCTLR_C (1ULL << 2)
#define SCTLR_I (1ULL << 12)

static u64 pool[POOL_PAGES][ENTRIES] __aligned(4096);
static int pool_used;
static u64 *root;

static u64 *alloc_table(void)
{
	u64 *t;
	if (pool_used == POOL_PAGES) {
		printf("mmu: page-table pool exhausted (%d pages)\n", POOL_PAGES);
		exit(125);
	}
	t = pool[pool_used++];
	memset(t, 0, sizeof(pool[0]));
	return t;
}

static u64 leaf_attrs(int mt)
{
	u64 a = DESC_AF | DESC_ATTRIDX(mt);
	if (current_el() == 2)
		a |= DESC_AP1;
	if (mt == MT_DEVICE)
		a |= DESC_XN | (current_el() == 2 ? 0 : DESC_PXN);
	else
		a |= DESC_SH_INNER;
	return a;
}

/* Level-1 covers 1 GiB per entry, level-2 2 MiB, level-3 4 KiB. */
static void map_one(u64 va, u64 pa, int level, u64 attrs)
{
	u64 *table = root;
	for (int l = 1; l < level; l++) {
		int shift = 39 - 9 * l;
		u64 *e = &table[(va >> shift) & 511];
		if (!(*e & DESC_VALID)) {
			u64 *next = alloc_table();
			*e = (u64)(uintptr_t)next | DESC_TABLE | DESC_VALID;
		}
		table = (u64 *)(uintptr_t)(*e & OA_MASK);
	}
	table[(va >> (39 - 9 * level)) & 511] = (pa & OA_MASK) | attrs | DESC_VALID | (level == 3 ? DESC_TABLE : 0);
}

void mmu_map(u64 va, u64 pa, u64 size, int mt)
{
	u64 attrs = leaf_attrs(mt);
	u64 end = va + size;
	if (!root)
		root = alloc_table();
	while (va < end) {
		u64 left = end - va;
		if (!((va | pa) & ((1ULL << 30) - 1)) && left >= (1ULL << 30)) {
			map_one(va, pa, 1, attrs);
			va += 1ULL << 30, pa += 1ULL << 30;
		} else if (!((va | pa) & ((1ULL << 21) - 1)) && left >= (1ULL << 21)) {
			map_one(va, pa, 2, attrs);
			va += 1ULL << 21, pa += 1ULL << 21;
		} else {
			map_one(va, pa, 3, attrs);
			va += 4096, pa += 4096;
		}
	}
}

void mmu_map_identity_default(void)
{
	mmu_map(0, 0, 1ULL << 30, MT_DEVICE);               /* PL011, SMMU, DMA test device ... */
	mmu_map(RAM_BASE, RAM_BASE, 1ULL << 30, MT_NORMAL);
}

bool mmu_enabled(void)
{
	u64 sctlr = current_el() == 2 ? read_sysreg(sctlr_el2) : read_sysreg(sctlr_el1);
	return sctlr & SCTLR_M;
}

void mmu_enable(void)
{
	u64 tcr = TCR_T0SZ | TCR_IRGN0_WBWA | TCR_ORGN0_WBWA | TCR_SH0_INNER;
	if (!root)
		mmu_map_identity_default();
	dsb(ishst);
	if (current_el() == 2) {
		write_sysreg(MAIR_VALUE, mair_el2);
		write_sysreg(tcr | TCR_EL2_PS_40 | TCR_EL2_RES1, tcr_el2);
		write_sysreg((uintptr_t)root, s3_4_c2_c0_0);   /* TTBR0_EL2, by encoding: baseline assemblers */
		isb();
		asm volatile("tlbi alle2" : : : "memory");
		dsb(ish);
		isb();
		write_sysreg(read_sysreg(sctlr_el2) | SCTLR_M | SCTLR_C | SCTLR_I, sctlr_el2);
	} else {
		write_sysreg(MAIR_VALUE, mair_el1);
		write_sysreg(tcr | TCR_EL1_EPD1 | TCR_EL1_IPS_40, tcr_el1);
		write_sysreg((uintptr_t)root, ttbr0_el1);
		isb();
		asm volatile("tlbi vmalle1" : : : "memory");
		dsb(ish);
		isb();
		write_sysreg(read_sysreg(sctlr_el1) | SCTLR_M | SCTLR_C | SCTLR_I, sctlr_el1);
	}
	isb();
}

void mmu_disable(void)
{
	if (current_el() == 2)
		write_sysreg(read_sysreg(sctlr_el2) & ~(SCTLR_M | SCTLR_C), sctlr_el2);
	else
		write_sysreg(read_sysreg(sctlr_el1) & ~(SCTLR_M | SCTLR_C), sctlr_el1);
	isb();
}
