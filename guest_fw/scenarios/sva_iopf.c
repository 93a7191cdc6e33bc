/*
 * Guest SVA with recoverable I/O page faults (scenario sva-iopf) through the VMM's vSMMU (harness/vmm.py with
 * iopf=True, guest driver guest_fw/lib/vsmmu.c).
 *
 * The guest shares its CPU tables with its device (a CD pointing at TTBR0_EL1) and, each round, has the
 * device COPY `pages` pages from SRC_VA to DST_VA, neither of which its tables map yet. Every access to an
 * unmapped page faults in the SMMU and reaches the guest as the vSMMU gives it:
 *  - mode 0, stall (CD.S=1): an event with Stall=1 and a STAG; the guest maps the page, invalidates (TLBI
 *    VAE1IS + DSB ISH, and TLBI_NH_VA + CMD_SYNC on the vSMMU unless it advertises BTM) and sends CMD_RESUME
 *    (retry), without a CMD_SYNC, as Linux arm_smmu_page_response does;
 *  - mode 1, PRI (vSTE.EATS=0b01, the device's ATS and PRI enabled): page request groups in the PRI queue;
 *    the guest maps every page of a group and answers it with CMD_PRI_RESP (Success) after its Last request.
 * No DMA may be lost or done twice: when the guest handles a write fault at destination page k, the pages
 * before k have been written exactly once, so it checks them and overwrites them with a mark; it also
 * changes the source pages (already read). After the copy, marked pages must still hold the mark (nothing
 * wrote them again), the others the source's original data (none lost, none copied from the changed source).
 * Parameters: 0 rounds, 1 mode (0 stall, 1 PRI), 2 pages per copy (1..8).
 * Reports: index 0 when the set-up is done (the host counts costs from there); per round i, index i + 1, outcome
 * (SCN_FRESH: all correct, SCN_FAULT: the copy failed, SCN_OTHER: data lost or written twice), value = faults |
 * groups << 16 | lost << 32 | twice << 48.
 */
#include "scn.h"
#include "vsmmu.h"

#define SRC_VA 0x90000000UL
#define DST_VA 0x90100000UL
#define MAX_ROUNDS 16
#define MAX_PAGES 8
#define POISON 0xDEADDEADDEADDEADULL
#define MARK 0x4D41524B4D41524BULL          /* "MARKMARK": over a destination page already written */
#define SRC_CHANGED 0x0C0C000000000000ULL    /* xor into a source page the device has already read */
#define MODE_PRI 1

static u64 src[MAX_ROUNDS][MAX_PAGES][512] __aligned(4096);
static u64 dst[MAX_ROUNDS][MAX_PAGES][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static struct vsmmu smmu;
static u64 asid, pages, mode;
static bool btm;
static bool marked[MAX_PAGES];
static u32 faults, groups, lost_early;

static u64 val(u64 i, u64 p, u64 w) { return 0x5EC0000000000000ULL | (i << 24) | (p << 16) | w; }
static u64 src_va(u64 i) { return SRC_VA + i * MAX_PAGES * 4096; }
static u64 dst_va(u64 i) { return DST_VA + i * MAX_PAGES * 4096; }

/* The guest page behind an SVA address of round i (0: the address belongs to no buffer). */
static u64 backing(u64 i, u64 va)
{
	u64 p = ((va & ~0xfffULL) - src_va(i)) >> 12;
	if (va >= src_va(i) && p < pages)
		return (u64)(uintptr_t)src[i][p];
	p = ((va & ~0xfffULL) - dst_va(i)) >> 12;
	if (va >= dst_va(i) && p < pages)
		return (u64)(uintptr_t)dst[i][p];
	return 0;
}

/* Map the faulting page in the CPU's (shared) tables and invalidate; false when it is no buffer's. */
static bool map_page(u64 i, u64 va)
{
	u64 pa = backing(i, va), page = va & ~0xfffULL;
	if (!pa)
		return false;
	mmu_map(page, pa, 4096, MT_NORMAL);
	dsb(ishst);
	tlbi_vae1is(asid, page);
	dsb(ish);
	isb();
	if (!btm)
		vsmmu_tlbi_nh_va(&smmu, 0, asid, page, true);
	return true;
}

/* A write fault at destination page k: pages 0..k-1 were written once; check and mark them, change the source. */
static void on_write_fault(u64 i, u64 va)
{
	u64 k = ((va & ~0xfffULL) - dst_va(i)) >> 12;
	for (u64 j = 0; j < k && j < pages; j++) {
		if (marked[j])
			continue;
		if (dst[i][j][0] != val(i, j, 0) || dst[i][j][511] != val(i, j, 511))
			lost_early++;
		dst[i][j][0] = MARK;
		dst[i][j][511] = MARK;
		marked[j] = true;
	}
	for (u64 p = 0; p < pages; p++)
		src[i][p][0] = val(i, p, 0) ^ SRC_CHANGED;
	dsb(ish);
}

static void serve_stalls(u64 i)
{
	u64 ev[4];
	while (vsmmu_read_event(&smmu, ev)) {
		if (!EVT_STALL(ev))
			continue;
		faults++;
		groups++;
		if (!EVT_RNW(ev))
			on_write_fault(i, EVT_INPUT_ADDR(ev));
		bool ok = map_page(i, EVT_INPUT_ADDR(ev));
		vsmmu_resume(&smmu, EVT_SID(ev), EVT_STAG(ev), ok ? RESUME_RETRY : RESUME_ABORT);
	}
}

/* Page request groups: the first request of a group is the page the device faulted on, the others the next
 * pages it will need (devmodel/dmatest.py); all are mapped, the group answered after its Last request. */
static void serve_pri(u64 i)
{
	static bool ok = true, first = true;
	u64 ppr[2];
	while (vsmmu_read_ppr(&smmu, ppr)) {
		faults++;
		if (first && PPR_WRITE(ppr))
			on_write_fault(i, PPR_ADDR(ppr));
		first = PPR_LAST(ppr);
		ok = map_page(i, PPR_ADDR(ppr)) && ok;
		if (PPR_LAST(ppr)) {
			groups++;
			vsmmu_pri_resp(&smmu, PPR_SID(ppr), PPR_SSV(ppr) ? (int)PPR_SSID(ppr) : -1, PPR_GRPID(ppr),
				       ok ? PRI_RESP_SUCC : PRI_RESP_DENY);
			ok = true;
		}
	}
}

/* One COPY of round i, serving its faults until the device is no longer waiting; returns STATUS. */
static u32 copy_round(u64 i)
{
	u32 st = 0;
	writeq(src_va(i), DMATEST_BASE + DMATEST_IOVA);
	writeq(dst_va(i), DMATEST_BASE + DMATEST_DST);
	writel((u32)(pages * 4096), DMATEST_BASE + DMATEST_LEN);
	writel(DMATEST_CMD_COPY, DMATEST_BASE + DMATEST_CMD);
	for (int spin = 0; spin < 10000; spin++) {
		st = readl(DMATEST_BASE + DMATEST_STATUS);
		if (!(st & DMATEST_ST_WAITING))
			break;
		if (mode == MODE_PRI)
			serve_pri(i);
		else
			serve_stalls(i);
	}
	return st;
}

static void round_(u64 i)
{
	u64 lost = 0, twice = 0;
	faults = groups = lost_early = 0;
	for (u64 p = 0; p < pages; p++) {
		marked[p] = false;
		for (int w = 0; w < 512; w++) {
			src[i][p][w] = val(i, p, w);
			dst[i][p][w] = POISON;
		}
	}
	dsb(ish);
	u32 st = copy_round(i);
	for (u64 p = 0; p < pages; p++) {
		u64 a = dst[i][p][0], b = dst[i][p][511];
		if (marked[p])
			twice += a != MARK || b != MARK;
		else if (a == POISON || b == POISON)
			lost++;
		else if (a != val(i, p, 0) || b != val(i, p, 511))
			twice++;               /* data the device read again after the guest changed the source */
	}
	lost += lost_early;
	u64 outcome = st != DMATEST_ST_DONE ? SCN_FAULT : (lost || twice) ? SCN_OTHER : SCN_FRESH;
	port_cmd(PORT_CMD_REPORT, i + 1, outcome, faults | ((u64)groups << 16) | (lost << 32) | (twice << 48));
	port_yield(i);
}

int main(void)
{
	u64 rounds = port_param(0), ste[8];
	u32 vsid;
	int r;

	mode = port_param(1);
	pages = port_param(2);
	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	if (!pages || pages > MAX_PAGES)
		pages = MAX_PAGES;
	mmu_map_identity_default();
	mmu_enable();
	asid = read_sysreg(ttbr0_el1) >> 48;
	r = vsmmu_init(&smmu, VSMMU_BASE);
	if (r) {
		printf("sva-iopf: vSMMU init failed (%d)\n", r);
		return 3;
	}
	if (mode == MODE_PRI ? !(smmu.idr0 & IDR0_PRI) : IDR0_STALL_MODEL(smmu.idr0) == 1) {
		printf("sva-iopf: the vSMMU offers no %s (IDR0 %#x)\n", mode == MODE_PRI ? "PRI" : "stalls", smmu.idr0);
		return 4;
	}
	btm = smmu.idr0 & IDR0_BTM;
	vsid = readl(DMATEST_BASE + DMATEST_SID);
	cd_share_cpu_tables_with(cd_table, mode == MODE_PRI ? 0 : CD_S);
	vsmmu_ste_s1(ste, (u64)(uintptr_t)cd_table, 0);
	if (mode == MODE_PRI) {
		ste[1] |= STE1_EATS_TRANS;
		dmatest_enable_ats_pri(DMATEST_BASE, 16);
	}
	r = vsmmu_install_ste(&smmu, vsid, ste);
	if (r || vsmmu_events_pending(&smmu)) {
		printf("sva-iopf: installing the vSTE failed (%d, %u events)\n", r, vsmmu_events_pending(&smmu));
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);   /* EL1 mappings (AP=0b00): privileged DMA */
	port_cmd(PORT_CMD_REPORT, 0, SCN_FRESH, 0);
	for (u64 i = 0; i < rounds; i++)
		round_(i);
	port_cmd(PORT_CMD_DONE, 1, btm, 0);
	return 0;
}
