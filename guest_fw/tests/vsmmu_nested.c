/*
 * Guest vSMMU flow end to end. Needs the VMM set-up of harness/vmm.py
 * (`setup_nested_vm`): a vSMMU at 0x0905_0000 and the DMA test device assigned at 0x0910_0000, so it is
 * not in unittests.cfg; tests/harness/test_vsmmu.py builds it with guest_fw/lib/{vsmmu,pgtable}.c and runs it.
 *
 * The guest brings its vSMMU up, builds stage-1 tables and a CD in its RAM, installs an S1 STE for the
 * device's vSID (CFGI_STE), and checks that the device's DMA translates through its stage 1 and the host's
 * stage 2; that a stale translation stays in the physical IOTLB until the guest's TLBI_NH_VA (so the command
 * really reached the physical SMMU); that TLBI_NH_ASID and CFGI_CD work the same way; and that faults come
 * back as events with its vSID.
 */
#include "guest.h"
#include "dmatest.h"
#include "pgtable.h"
#include "vsmmu.h"

#define IOVA 0x10000000ULL
#define ASID 5
#define ASID2 6
#define PATTERN 0x1122334455667788ULL

static u64 buf_a[512] __aligned(4096);
static u64 buf_b[512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static struct vsmmu smmu;
static struct pgtable pt, pt2;

static u64 ipa(const void *p) { return (u64)(uintptr_t)p; }

static bool expect_event(u32 type, u32 vsid, u64 addr, const char *what)
{
	u64 ev[4];
	if (!vsmmu_read_event(&smmu, ev)) {
		report(false, "%s: an event arrived", what);
		return false;
	}
	report(EVT_TYPE(ev) == type && EVT_SID(ev) == vsid && EVT_INPUT_ADDR(ev) == addr,
	       "%s: event %#x sid %#x addr %#llx (want %#x %#x %#llx)", what, EVT_TYPE(ev), EVT_SID(ev),
	       (unsigned long long)EVT_INPUT_ADDR(ev), type, vsid, (unsigned long long)addr);
	return true;
}

int main(void)
{
	const uintptr_t dev = DMATEST_BASE;
	u64 ste[8], v = 0;
	u32 vsid, st;
	int r;

	report_prefix_push("vsmmu");
	r = vsmmu_init(&smmu, VSMMU_BASE);
	report(r == 0, "vSMMU enabled (IDR0 %#x, init %d)", smmu.idr0, r);
	if (r)
		return report_summary();
	report(!(smmu.idr0 & IDR0_S2P), "vSMMU offers stage 1 only (IDR0.S2P=0)");
	report(dmatest_id(dev) == DMATEST_ID_VALUE, "DMA test device is passed through");
	vsid = dmatest_sid(dev);
	report_info("device vSID %#x", vsid);

	/* stage 1: IOVA -> buf_a (RW), IOVA + 4K -> buf_b (read-only) */
	r = pgtable_init(&pt, 39);
	r |= pgtable_map(&pt, IOVA, ipa(buf_a), 4096, PGT_READ | PGT_WRITE, false);
	r |= pgtable_map(&pt, IOVA + 0x1000, ipa(buf_b), 4096, PGT_READ, false);
	report(r == 0, "stage-1 tables built (root %#llx)", (unsigned long long)ipa(pt.root));
	vsmmu_cd_write(cd_table, ASID, &pt, true);
	vsmmu_ste_s1(ste, ipa(cd_table), 0);
	r = vsmmu_install_ste(&smmu, vsid, ste);
	report(r == 0, "STE for vSID %#x installed (CFGI_STE + CMD_SYNC: %d)", vsid, r);

	/* DMA through nested stage 1 + stage 2 */
	buf_a[0] = 0;
	st = dmatest_write64(dev, IOVA, PATTERN);
	report(st == DMATEST_ST_DONE && buf_a[0] == PATTERN, "DMA write at IOVA lands in buf_a (status %#x)", st);
	buf_a[1] = 0xa1a1;
	st = dmatest_read64(dev, IOVA + 8, &v);
	report(st == DMATEST_ST_DONE && v == 0xa1a1, "DMA read at IOVA+8 returns buf_a[1] (%#llx)",
	       (unsigned long long)v);
	buf_b[2] = 0xb2b2;
	st = dmatest_read64(dev, IOVA + 0x1010, &v);
	report(st == DMATEST_ST_DONE && v == 0xb2b2, "DMA read of the read-only page");

	/* a stage-1 permission fault comes back as an event with the vSID */
	st = dmatest_write64(dev, IOVA + 0x1000, 1);
	report(st == DMATEST_ST_FAULT && dmatest_fault_type(dev) == 0x13,
	       "DMA write to the read-only page faults (status %#x, type %#x)", st, dmatest_fault_type(dev));
	expect_event(0x13, vsid, IOVA + 0x1000, "F_PERMISSION reported to the guest");

	/* remap IOVA -> buf_b: the physical IOTLB keeps the old translation until TLBI_NH_VA */
	buf_a[0] = 0xaaaa;
	buf_b[0] = 0xbbbb;
	pgtable_map(&pt, IOVA, ipa(buf_b), 4096, PGT_READ | PGT_WRITE, false);
	st = dmatest_read64(dev, IOVA, &v);
	report(st == DMATEST_ST_DONE && v == 0xaaaa, "before TLBI_NH_VA the DMA still uses the old page (%#llx)",
	       (unsigned long long)v);
	r = vsmmu_tlbi_nh_va(&smmu, 0, ASID, IOVA, true);
	report(r == 0, "TLBI_NH_VA + CMD_SYNC completed (%d)", r);
	st = dmatest_read64(dev, IOVA, &v);
	report(st == DMATEST_ST_DONE && v == 0xbbbb, "after TLBI_NH_VA the DMA sees the new page (%#llx)",
	       (unsigned long long)v);

	/* unmap + TLBI_NH_ASID: translation fault, reported with the vSID */
	pgtable_unmap(&pt, IOVA, 4096);
	r = vsmmu_tlbi_nh_asid(&smmu, 0, ASID);
	st = dmatest_read64(dev, IOVA, &v);
	report(r == 0 && st == DMATEST_ST_FAULT && dmatest_fault_type(dev) == 0x10,
	       "after unmap + TLBI_NH_ASID the DMA faults (status %#x, type %#x)", st, dmatest_fault_type(dev));
	expect_event(EVT_F_TRANSLATION, vsid, IOVA, "F_TRANSLATION reported to the guest");

	/* a new table tree and ASID in the CD: CFGI_CD makes the SMMU reload it */
	r = pgtable_init(&pt2, 39);
	r |= pgtable_map(&pt2, IOVA, ipa(buf_a), 4096, PGT_READ | PGT_WRITE, false);
	vsmmu_cd_write(cd_table, ASID2, &pt2, true);
	r |= vsmmu_cfgi_cd(&smmu, vsid, 0, true);
	r |= vsmmu_tlbi_nh_asid(&smmu, 0, ASID);
	st = dmatest_read64(dev, IOVA, &v);
	report(r == 0 && st == DMATEST_ST_DONE && v == 0xaaaa, "after CFGI_CD the new CD's tables are used (%#llx)",
	       (unsigned long long)v);
	report(vsmmu_events_pending(&smmu) == 0, "no unexpected events");
	report_prefix_pop();
	return report_summary();
}
