/* Guest GICv3 ITS + LPI driver: see its.h. */
#include "its.h"
#include "gic.h"

#define CMD_SIZE 32
#define CMDQ_BYTES 4096
#define SZ_64K 0x10000
#define BASER_VALID (1ULL << 63)
#define BASER_TYPE(b) ((unsigned)((b) >> 56) & 7)
#define BASER_ENTRY_SIZE(b) ((unsigned)(((b) >> 48) & 0x1f) + 1)
#define BASER_PAGE_64K (2ULL << 8)
#define BASER_TYPE_DEVICE 1
#define BASER_TYPE_COLLECTION 4
#define CREADR_STALLED 1ULL

/* IHI 0069 5.1.1, 5.1.2: the configuration table has one byte per LPI; the pending table one bit per INTID (its first
 * 1 KiB covers INTIDs below 8192 and is IMPLEMENTATION DEFINED), 64 KiB aligned. */
static u8 prop_table[LPI_NR - LPI_BASE] __aligned(4096);
static u8 pend_table[LPI_NR / 8] __aligned(SZ_64K);
static u8 device_table[SZ_64K] __aligned(SZ_64K);
static u8 collection_table[SZ_64K] __aligned(SZ_64K);
static u64 cmdq[CMDQ_BYTES / 8] __aligned(SZ_64K);
static u32 cmdq_next;                  /* byte offset of the next free slot */
static u64 errors;

static uintptr_t rd_base(void)
{
	return GICR_BASE;              /* CPU 0's RD_base (single-CPU set-up) */
}

static int baser_setup(int n, u8 *table)
{
	u64 b = readq(GITS_BASE + GITS_BASER(n));
	unsigned type = BASER_TYPE(b);
	if (type != BASER_TYPE_DEVICE && type != BASER_TYPE_COLLECTION)
		return 0;
	/* Type and Entry_Size as the ITS reports them; one flat 64 KiB page (Size 0) */
	u64 v = BASER_VALID | (b & (0x7ULL << 56)) | (b & (0x1fULL << 48)) | ((u64)(uintptr_t)table & ~0xfffULL) |
		BASER_PAGE_64K;
	writeq(v, GITS_BASE + GITS_BASER(n));
	return (readq(GITS_BASE + GITS_BASER(n)) & BASER_VALID) ? 0 : -1;
}

int its_init(void)
{
	uintptr_t rd = rd_base();
	if (!(readq(rd + GICR_TYPER) & 1))                 /* PLPIS */
		return -1;
	for (u32 i = 0; i < ARRAY_SIZE(prop_table); i++)
		prop_table[i] = GIC_DEFAULT_PRIO | LPI_PROP_RES1;   /* disabled until lpi_config */
	dsb(ishst);                                         /* the tables before the registers that name them */
	writeq((u64)(uintptr_t)prop_table | (LPI_ID_BITS - 1), rd + GICR_PROPBASER);
	writeq((u64)(uintptr_t)pend_table, rd + GICR_PENDBASER);
	writel(readl(rd + GICR_CTLR) | 1, rd + GICR_CTLR);   /* EnableLPIs */
	for (int n = 0; n < 8; n++) {
		u64 b = readq(GITS_BASE + GITS_BASER(n));
		u8 *t = BASER_TYPE(b) == BASER_TYPE_DEVICE ? device_table : collection_table;
		if (baser_setup(n, t))
			return -2;
	}
	writeq(BASER_VALID | (u64)(uintptr_t)cmdq, GITS_BASE + GITS_CBASER);   /* Size 0: one 4 KiB page */
	writeq(0, GITS_BASE + GITS_CWRITER);
	cmdq_next = 0;
	writel(readl(GITS_BASE + GITS_CTLR) | 1, GITS_BASE + GITS_CTLR);
	return (readl(GITS_BASE + GITS_CTLR) & 1) ? 0 : -3;
}

u32 its_itt_entry_size(void)
{
	return (u32)((readq(GITS_BASE + GITS_TYPER) >> 4) & 0xf) + 1;
}

u64 its_cmd_errors(void)
{
	return errors;
}

static int its_cmd(u64 w0, u64 w1, u64 w2)
{
	u64 *slot = &cmdq[cmdq_next / 8];
	slot[0] = w0;
	slot[1] = w1;
	slot[2] = w2;
	slot[3] = 0;
	dsb(ishst);
	u32 target = (cmdq_next + CMD_SIZE) % CMDQ_BYTES;
	cmdq_next = target;
	writeq(target, GITS_BASE + GITS_CWRITER);
	for (int spin = 0; spin < 100000; spin++) {
		u64 r = readq(GITS_BASE + GITS_CREADR);
		if (r & CREADR_STALLED)
			break;
		if ((r & 0xfffe0) == target)
			return 0;
	}
	errors++;
	return -1;
}

int its_mapd(u32 devid, int event_bits, void *itt)
{
	return its_cmd(0x08 | (u64)devid << 32, (u64)(event_bits - 1) & 0x1f,
		       ((u64)(uintptr_t)itt & 0xffffffffff00ULL) | 1ULL << 63);
}

int its_unmapd(u32 devid)
{
	return its_cmd(0x08 | (u64)devid << 32, 0, 0);
}

int its_mapc(u16 icid, u32 cpu)
{
	return its_cmd(0x09, 0, icid | (u64)cpu << 16 | 1ULL << 63);
}

int its_mapti(u32 devid, u32 eventid, u32 intid, u16 icid)
{
	return its_cmd(0x0a | (u64)devid << 32, eventid | (u64)intid << 32, icid);
}

int its_cmd_int(u32 devid, u32 eventid)
{
	return its_cmd(0x03 | (u64)devid << 32, eventid, 0);
}

int its_inv(u32 devid, u32 eventid)
{
	return its_cmd(0x0c | (u64)devid << 32, eventid, 0);
}

int its_invall(u16 icid)
{
	return its_cmd(0x0d, 0, icid);
}

int its_sync(u32 cpu)
{
	return its_cmd(0x05, 0, (u64)cpu << 16);
}

void lpi_config(u32 intid, u8 prio, bool enable)
{
	prop_table[intid - LPI_BASE] = (prio & 0xfc) | LPI_PROP_RES1 | (enable ? LPI_PROP_ENABLED : 0);
	dsb(ishst);
}
