/*
 * Stage-1 table builder for device (SMMU) address spaces: see pgtable.h. Descriptor formats: Arm ARM D8.3.
 */
#include "pgtable.h"

#define POOL_PAGES 48
#define ENTRIES 512
#define D_VALID (1ULL << 0)
#define D_TABLE (1ULL << 1)        /* table (levels 0-2) or page (level 3) */
#define D_ATTRIDX(i) ((u64)(i) << 2)
#define D_AP_EL0 (1ULL << 6)       /* AP[1] */
#define D_AP_RO (1ULL << 7)        /* AP[2] */
#define D_SH_INNER (3ULL << 8)
#define D_AF (1ULL << 10)
#define D_NG (1ULL << 11)
#define D_PXN (1ULL << 53)
#define D_UXN (1ULL << 54)
#define OA_MASK 0x0000fffffffff000ULL

static u64 pool[POOL_PAGES][ENTRIES] __aligned(4096);
static int pool_used;

static u64 *alloc_table(void)
{
	u64 *t;
	if (pool_used == POOL_PAGES)
		return NULL;
	t = pool[pool_used++];
	memset(t, 0, sizeof(pool[0]));
	return t;
}

int pgtable_pool_free(void)
{
	return POOL_PAGES - pool_used;
}

static int shift_of(int level)
{
	return 12 + 9 * (3 - level);
}

int pgtable_init(struct pgtable *pt, int ias)
{
	if (ias < 32 || ias > 48)
		return -1;
	pt->ias = ias;
	/* levels = ceil((ias - 12) / 9); start = 4 - levels */
	pt->start = 4 - (ias - 12 + 8) / 9;
	pt->root = alloc_table();
	return pt->root ? 0 : -1;
}

static u64 leaf_bits(unsigned prot, int level)
{
	u64 d = D_VALID | D_AF | D_SH_INNER | D_ATTRIDX((prot & PGT_MMIO) ? PGT_ATTR_DEVICE : PGT_ATTR_NORMAL);
	if (level == 3)
		d |= D_TABLE;
	if (!(prot & PGT_WRITE))
		d |= D_AP_RO;
	if (!(prot & PGT_PRIV_ONLY))
		d |= D_AP_EL0;
	if (!(prot & PGT_GLOBAL))
		d |= D_NG;
	if (!(prot & PGT_EXEC))
		d |= D_UXN | D_PXN;
	return d;
}

static int index_of(const struct pgtable *pt, u64 va, int level)
{
	int bits = level == pt->start ? pt->ias - shift_of(level) : 9;
	return (va >> shift_of(level)) & ((1u << bits) - 1);
}

/* The entry for va at `level`, creating tables on the way (NULL: pool empty or a block is in the way and
 * `split` is false). */
static u64 *entry_at(struct pgtable *pt, u64 va, int level, bool create)
{
	u64 *table = pt->root;
	for (int l = pt->start; l < level; l++) {
		u64 *e = &table[index_of(pt, va, l)];
		if (!(*e & D_VALID) || !(*e & D_TABLE)) {
			u64 *next;
			if (!create)
				return NULL;
			next = alloc_table();
			if (!next)
				return NULL;
			/* a block in the way is replaced (its other pages are lost: callers map what they need) */
			*e = (u64)(uintptr_t)next | D_TABLE | D_VALID;
		}
		table = (u64 *)(uintptr_t)(*e & OA_MASK);
	}
	return &table[index_of(pt, va, level)];
}

int pgtable_map(struct pgtable *pt, u64 va, u64 pa, u64 size, unsigned prot, bool allow_blocks)
{
	u64 end = va + size;
	if ((va | pa | size) & 0xfff || end > (1ULL << pt->ias) || end < va)
		return -1;
	while (va < end) {
		int level = 3;
		u64 *e;
		for (int l = pt->start > 1 ? pt->start : 1; allow_blocks && l < 3; l++) {
			u64 blk = 1ULL << shift_of(l);
			if (!((va | pa) & (blk - 1)) && end - va >= blk) {
				level = l;
				break;
			}
		}
		e = entry_at(pt, va, level, true);
		if (!e)
			return -1;
		*e = (pa & OA_MASK) | leaf_bits(prot, level);
		va += 1ULL << shift_of(level);
		pa += 1ULL << shift_of(level);
	}
	dsb(ishst);
	return 0;
}

u64 pgtable_lookup(const struct pgtable *pt, u64 va, int *level)
{
	const u64 *table = pt->root;
	for (int l = pt->start; l <= 3; l++) {
		u64 e = table[index_of(pt, va, l)];
		if (!(e & D_VALID))
			return 0;
		if (l == 3 || !(e & D_TABLE)) {
			if (level)
				*level = l;
			return e;
		}
		table = (const u64 *)(uintptr_t)(e & OA_MASK);
	}
	return 0;
}

u64 *pgtable_leaf(struct pgtable *pt, u64 va)
{
	int level = 3;
	if (!pgtable_lookup(pt, va, &level))
		return NULL;
	return entry_at(pt, va, level, false);
}

void pgtable_unmap(struct pgtable *pt, u64 va, u64 size)
{
	u64 end = va + size;
	while (va < end) {
		int level = 3;
		u64 e = pgtable_lookup(pt, va, &level);
		if (e) {
			u64 *p = entry_at(pt, va, level, false);
			if (p)
				*p = 0;
		} else {
			level = 3;
		}
		va = (va & ~((1ULL << shift_of(level)) - 1)) + (1ULL << shift_of(level));
	}
	dsb(ishst);
}
