/*
 * Stalls, PRI, ATS and HTTU on bare metal: the guest is the host OS here and drives the SMMUv3 model itself
 * (at 0x0905_0000 in its own address space, with the DMA test device at 0x0910_0000 behind it), with the same
 * driver guest_fw/lib/vsmmu.c. Needs that board (tests/harness/test_bare_smmu_iopf.py builds it: IDR0.STALL_MODEL
 * 0b00, ATS, PRI, HTTU 0b10), so it is not in unittests.cfg.
 *
 * Checked (IHI 0070): a stalled transaction (CD.S=1, STE.S1STALLD=0) waits and its event has Stall=1 and the
 * STAG the device shows (3.12.2, 7.3); CMD_RESUME retry completes it with the new translation, abort fails it,
 * a RESUME of no stall is ignored, CMD_STALL_TERM aborts the StreamID's stalls; CD.S=1 under STE.S1STALLD=1 is
 * C_BAD_CD (5.2); with STE.EATS=0b01 and the function's ATS and PRI enabled, a translation fault makes the
 * function send a page request: the PRI queue entry has its StreamID, PRG index, Last and access (8.1), and
 * CMD_PRI_RESP Success makes it retry, Invalid Request fails it; CMD_ATC_INV empties its ATC (3.9.1); with
 * CD.HA/HD the device's accesses set the Access flag and make a writable-clean descriptor (DBM=1, AP[2]=1)
 * writable-dirty, and a read leaves it clean (3.13).
 */
#include "guest.h"
#include "dmatest.h"
#include "pgtable.h"
#include "vsmmu.h"

#define IOVA 0x20000000ULL
#define ASID 9

static u64 buf[4][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static struct vsmmu smmu;
static struct pgtable pt;
static u32 sid;
static const uintptr_t dev = DMATEST_BASE;

static u64 ipa(const void *p) { return (u64)(uintptr_t)p; }

static void install(u64 cd0_extra, u64 ste1_extra)
{
	u64 ste[8];
	vsmmu_cd_write(cd_table, ASID, &pt, false);
	cd_table[0] |= cd0_extra;
	vsmmu_ste_s1(ste, ipa(cd_table), 0);
	ste[1] |= ste1_extra;
	report(vsmmu_install_ste(&smmu, sid, ste) == 0, "STE installed (CD word 0 extra %#llx, STE word 1 extra %#llx)",
	       (unsigned long long)cd0_extra, (unsigned long long)ste1_extra);
}

static bool stall_event(u64 ev[4], u64 addr, const char *what)
{
	bool got = vsmmu_read_event(&smmu, ev);
	report(got && EVT_STALL(ev) && EVT_STAG(ev) == readl(dev + DMATEST_STAG) && EVT_SID(ev) == sid &&
	       EVT_INPUT_ADDR(ev) == addr && EVT_TYPE(ev) == EVT_F_TRANSLATION,
	       "%s: stall event (Stall %u, STAG %#x = device STAG %#x, addr %#llx)", what, got ? EVT_STALL(ev) : 0,
	       got ? EVT_STAG(ev) : 0, readl(dev + DMATEST_STAG), got ? (unsigned long long)EVT_INPUT_ADDR(ev) : 0);
	return got;
}

static void stalls(void)
{
	u64 ev[4], v = 0;
	report_prefix_push("stall");
	install(CD0_STALL, 0);
	writeq(IOVA, dev + DMATEST_IOVA);
	writel(DMATEST_CMD_READ64, dev + DMATEST_CMD);
	report(readl(dev + DMATEST_STATUS) == DMATEST_ST_STALLED, "the read waits (STATUS STALLED)");
	stall_event(ev, IOVA, "read");
	report(EVT_RNW(ev) == 1, "RnW=1 for the read");
	vsmmu_resume(&smmu, sid, EVT_STAG(ev) + 1, RESUME_ABORT);        /* names no stall */
	report(vsmmu_sync(&smmu) == 0 && readl(dev + DMATEST_STATUS) == DMATEST_ST_STALLED,
	       "a RESUME of no stall is ignored (no CERROR), the transaction still waits");
	buf[0][0] = 0x5741;
	pgtable_map(&pt, IOVA, ipa(buf[0]), 4096, PGT_READ | PGT_WRITE, false);
	vsmmu_resume(&smmu, sid, EVT_STAG(ev), RESUME_RETRY);
	v = readq(dev + DMATEST_DATA);
	report(readl(dev + DMATEST_STATUS) == DMATEST_ST_DONE && v == 0x5741, "RESUME retry: done, data %#llx",
	       (unsigned long long)v);
	report(dmatest_write64(dev, IOVA + 0x1000, 1) == DMATEST_ST_STALLED && stall_event(ev, IOVA + 0x1000, "write")
	       && EVT_RNW(ev) == 0, "a write stalls too (RnW=0)");
	vsmmu_resume(&smmu, sid, EVT_STAG(ev), RESUME_ABORT);
	report(readl(dev + DMATEST_STATUS) == DMATEST_ST_FAULT, "RESUME abort: the write fails");
	report(dmatest_read64(dev, IOVA + 0x2000, &v) == DMATEST_ST_STALLED && stall_event(ev, IOVA + 0x2000, "term"),
	       "stalled again");
	report(vsmmu_stall_term(&smmu, sid) == 0 && readl(dev + DMATEST_STATUS) == DMATEST_ST_FAULT,
	       "CMD_STALL_TERM aborts the StreamID's stall");
	install(CD0_STALL, STE1_S1STALLD);
	report(dmatest_read64(dev, IOVA + 0x2000, &v) == DMATEST_ST_FAULT && vsmmu_read_event(&smmu, ev) &&
	       EVT_TYPE(ev) == EVT_C_BAD_CD, "CD.S=1 under STE.S1STALLD=1: C_BAD_CD (%#x)", EVT_TYPE(ev));
	report_prefix_pop();
}

static void pri(void)
{
	u64 ppr[2], v = 0;
	report_prefix_push("pri");
	install(0, STE1_EATS_TRANS);
	dmatest_enable_ats_pri(dev, 4);
	report(dmatest_read64(dev, IOVA + 0x3000, &v) == DMATEST_ST_PRI_WAIT, "a fault under ATS: PRI_WAIT");
	bool got = vsmmu_read_ppr(&smmu, ppr);
	report(got && PPR_SID(ppr) == sid && PPR_GRPID(ppr) == readl(dev + DMATEST_PRG_INDEX) && PPR_LAST(ppr) &&
	       PPR_READ(ppr) && !PPR_WRITE(ppr) && PPR_ADDR(ppr) == IOVA + 0x3000,
	       "page request: sid %#x PRG index %u (device %u) last %u addr %#llx", got ? PPR_SID(ppr) : 0,
	       got ? PPR_GRPID(ppr) : 0, readl(dev + DMATEST_PRG_INDEX), got ? PPR_LAST(ppr) : 0,
	       got ? (unsigned long long)PPR_ADDR(ppr) : 0);
	buf[3][0] = 0xA75;
	pgtable_map(&pt, IOVA + 0x3000, ipa(buf[3]), 4096, PGT_READ | PGT_WRITE, false);
	vsmmu_pri_resp(&smmu, sid, -1, PPR_GRPID(ppr), PRI_RESP_SUCC);
	v = readq(dev + DMATEST_DATA);
	report(readl(dev + DMATEST_STATUS) == DMATEST_ST_DONE && v == 0xA75, "PRI_RESP Success: retried, done");
	u32 entries = readl(dev + DMATEST_ATC_ENTRIES), invs = readl(dev + DMATEST_ATC_INVS);
	report(entries == 1, "the translation is in the device's ATC (%u entries)", entries);
	report(vsmmu_atc_inv(&smmu, sid, -1, IOVA + 0x3000, 4096) == 0 && readl(dev + DMATEST_ATC_ENTRIES) == 0 &&
	       readl(dev + DMATEST_ATC_INVS) == invs + 1, "CMD_ATC_INV empties it");
	report(dmatest_read64(dev, IOVA + 0x4000, &v) == DMATEST_ST_PRI_WAIT && vsmmu_read_ppr(&smmu, ppr),
	       "another page request");
	vsmmu_pri_resp(&smmu, sid, -1, PPR_GRPID(ppr), PRI_RESP_DENY);
	report(readl(dev + DMATEST_STATUS) == DMATEST_ST_PRI_ERR, "PRI_RESP Invalid Request: the read fails");
	writel(0, dev + DMATEST_PCIE_CTRL);
	report_prefix_pop();
}

static void httu(void)
{
	u64 v = 0, *pte;
	report_prefix_push("httu");
	report(IDR0_HTTU(smmu.idr0) == 2, "IDR0.HTTU = 2 (access flag and dirty state)");
	install(CD0_HTTU_HA | CD0_HTTU_HD, 0);
	pgtable_map(&pt, IOVA + 0x5000, ipa(buf[1]), 4096, PGT_READ, false);
	pte = pgtable_leaf(&pt, IOVA + 0x5000);
	*pte = (*pte & ~PGT_D_AF) | PGT_D_DBM;                             /* writable-clean, not accessed */
	dsb(ishst);
	report(dmatest_read64(dev, IOVA + 0x5000, &v) == DMATEST_ST_DONE && (*pte & PGT_D_AF) && (*pte & PGT_D_AP_RO),
	       "a read sets AF and leaves it clean (PTE %#llx)", (unsigned long long)*pte);
	report(dmatest_write64(dev, IOVA + 0x5008, 0xD17) == DMATEST_ST_DONE && !(*pte & PGT_D_AP_RO) &&
	       buf[1][1] == 0xD17, "a write makes it writable-dirty (AP[2] cleared: PTE %#llx)", (unsigned long long)*pte);
	pgtable_map(&pt, IOVA + 0x6000, ipa(buf[2]), 4096, PGT_READ, false);
	report(dmatest_write64(dev, IOVA + 0x6000, 1) == DMATEST_ST_FAULT, "no DBM: the write is a permission fault");
	report_prefix_pop();
}

int main(void)
{
	int r;
	report_prefix_push("smmu-bare");
	r = vsmmu_init(&smmu, VSMMU_BASE);
	report(r == 0, "SMMU enabled (init %d)", r);
	if (r)
		return report_summary();
	report(IDR0_STALL_MODEL(smmu.idr0) == 0 && (smmu.idr0 & IDR0_PRI) && (smmu.idr0 & IDR0_ATS) && smmu.priq,
	       "stalls, ATS and PRI offered; the PRI queue is enabled (IDR0 %#x)", smmu.idr0);
	sid = dmatest_sid(dev);
	writel(DMATEST_ATTR_PRIV, dev + DMATEST_ATTR);
	pgtable_init(&pt, 39);
	stalls();
	pri();
	httu();
	return report_summary();
}
