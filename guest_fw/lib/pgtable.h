/*
 * Stage-1 translation tables built in guest memory for a device behind an SMMU (or for SVA, shared with a
 * CPU): VMSAv8-64, 4 KiB granule, TTBR0 only, input size 32..48 bits (start level from the size, Arm ARM
 * D8.2). Tables come from a static pool in the image's .bss, so their addresses are IPAs (the guest runs
 * with its MMU off or identity-mapped, as the runtime sets up).
 *
 * Descriptor layout (Arm ARM D8.3; the same values as devmodel/pagetable.py `pte_s1`): page/block with
 * AttrIndx 4:2 (MAIR index, PGT_ATTR_*), AP[2:1] 7:6, SH 9:8 (inner shareable), AF 10, nG 11 (set: entries are
 * tagged with the CD's ASID), UXN 54, PXN 53.
 *
 * Not provided: 16K/64K granules, TTBR1, contiguous hints, table reclaim (unmapped tables stay allocated).
 */
#ifndef GUEST_PGTABLE_H
#define GUEST_PGTABLE_H

#include "guest.h"

#define PGT_READ (1u << 0)
#define PGT_WRITE (1u << 1)
#define PGT_EXEC (1u << 2)
#define PGT_PRIV_ONLY (1u << 3)   /* AP[1] = 0: no unprivileged (EL0 / PnU=0) access */
#define PGT_GLOBAL (1u << 4)      /* nG = 0 */
#define PGT_MMIO (1u << 5)        /* AttrIndx = PGT_ATTR_DEVICE (Linux IOMMU_MMIO: an MSI doorbell) */

/* MAIR encoding a CD should carry with these tables: attr0 Normal WB RW-allocate, attr1 Device-nGnRE. */
#define PGT_MAIR 0x04ffULL
#define PGT_ATTR_NORMAL 0
#define PGT_ATTR_DEVICE 1

struct pgtable {
	u64 *root;
	int ias;        /* input address size in bits (64 - T0SZ) */
	int start;      /* start level */
};

/* A fresh, empty table tree for `ias`-bit inputs (32..48). Returns 0, or -1 when ias is out of range. */
int pgtable_init(struct pgtable *pt, int ias);
/* Map [va, va + size) to pa (4 KiB aligned; 2 MiB / 1 GiB blocks where both are aligned and
 * `allow_blocks`). Replaces existing leaf entries. Returns 0, or -1 (misaligned, outside ias, pool empty). */
int pgtable_map(struct pgtable *pt, u64 va, u64 pa, u64 size, unsigned prot, bool allow_blocks);
/* Make [va, va + size) invalid (leaf entries at whatever level they are). */
void pgtable_unmap(struct pgtable *pt, u64 va, u64 size);
/* The leaf descriptor that maps va (0 when none); level written to *level when not NULL. */
u64 pgtable_lookup(const struct pgtable *pt, u64 va, int *level);
/* The leaf descriptor of va itself, to change its bits in place (AF, DBM, AP[2]); NULL when va is unmapped. */
u64 *pgtable_leaf(struct pgtable *pt, u64 va);
/* Leaf bits a caller may change (Arm ARM D8.3: AP[2] 7, AF 10, DBM 51) */
#define PGT_D_AP_RO (1ULL << 7)
#define PGT_D_AF (1ULL << 10)
#define PGT_D_DBM (1ULL << 51)
/* T0SZ to put in a CD / TCR for this tree. */
static inline int pgtable_t0sz(const struct pgtable *pt) { return 64 - pt->ias; }
/* Pages left in the shared pool. */
int pgtable_pool_free(void);

#endif
