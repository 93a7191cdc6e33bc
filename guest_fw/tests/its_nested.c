/*
 * MSIs as LPIs in a nested VM (harness/its.py, harness/vmm.py): needs `setup_nested_vm` on a GICv3 VM (a vSMMU
 * at 0x0905_0000, the DMA test device assigned at 0x0910_0000, the VM's ITS at 0x0808_0000), so it is not in
 * unittests.cfg; tests/harness/test_its_guest.py builds and runs it.
 *
 * The guest programs its GICv3 and ITS as Linux does (LPI configuration and pending tables, GICR_CTLR.EnableLPIs,
 * Device/Collection tables, MAPD/MAPC/MAPTI/INVALL/SYNC), its vSMMU with the event queue's MSI aimed at the vITS
 * doorbell (EVENTQ_IRQ_CFG0 = GITS_TRANSLATER's GPA, untranslated: the SMMU's own MSIs are not client
 * transactions) under the SMMU's DeviceID, and the DMA test device's completion MSI at a doorbell IOVA that its
 * stage 1 maps to the vITS frame (as Linux's MSI cookie does); the host's stage 2 takes that GPA to the physical
 * doorbell. It then checks, in its IRQ handler (the vector table's IRQ entry; ICC_IAR1_EL1, ICC_EOIR1_EL1), that
 * a completed DMA arrives as the device's LPI and that a DMA fault arrives as the vSMMU's event-queue LPI whose
 * handler finds the F_TRANSLATION record.
 */
#include "guest.h"
#include "dmatest.h"
#include "gic.h"
#include "its.h"
#include "pgtable.h"
#include "vsmmu.h"

#define SMMU_MSI_DEVID 0x1000            /* the vSMMU's DeviceID (the tree's msi-parent specifier) */
#define BUF_IOVA 0x10000000ULL
#define DB_IOVA 0x20000000ULL           /* the device's doorbell IOVA: stage 1 maps it to the vITS frame */
#define UNMAPPED_IOVA 0x30000000ULL
#define LPI_EVTQ (LPI_BASE + 0)
#define LPI_DMA (LPI_BASE + 1)
#define EV_EVTQ 0
#define EV_DMA 3
#define SMMU_IRQ_CTRLACK 0x54
#define SMMU_EVTQ_IRQ_CFG0 0xB0
#define SMMU_EVTQ_IRQ_CFG1 0xB8
#define SMMU_EVTQ_IRQ_CFG2 0xBC
#define IRQ_CTRL_EVTQ_IRQEN (1u << 2)

static u64 buf[512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static u8 itt_smmu[256] __aligned(256);
static u8 itt_dev[256] __aligned(256);
static struct vsmmu smmu;
static struct pgtable pt;
static volatile u32 seen_dma, seen_evtq, spurious, others;
static volatile u32 evt_type, evt_sid;
static volatile u64 evt_addr;

static u64 ipa(const void *p) { return (u64)(uintptr_t)p; }

static void irq_handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();
	u32 intid = iar & 0xffffff;          /* LPIs are beyond the 10 bits of a GICv2 INTID */
	u64 ev[4];
	(void)regs;
	if (intid == GIC_SPURIOUS) {
		spurious++;
		return;
	}
	if (intid == LPI_DMA) {
		seen_dma++;
	} else if (intid == LPI_EVTQ) {
		seen_evtq++;
		while (vsmmu_read_event(&smmu, ev)) {
			evt_type = EVT_TYPE(ev);
			evt_sid = EVT_SID(ev);
			evt_addr = EVT_INPUT_ADDR(ev);
		}
	} else {
		others++;
	}
	gic_write_eoir(iar);
}

static bool wait_for(volatile u32 *counter, u32 want)
{
	for (u64 i = 0; i < 2000000 && *counter < want; i++)
		asm volatile("nop");
	return *counter >= want;
}

static int vsmmu_evtq_msi(u64 doorbell, u32 eventid)
{
	writeq(doorbell, smmu.base + SMMU_EVTQ_IRQ_CFG0);
	writel(eventid, smmu.base + SMMU_EVTQ_IRQ_CFG1);
	writel(1, smmu.base + SMMU_EVTQ_IRQ_CFG2);          /* MemAttr Device-nGnRE */
	writel(IRQ_CTRL_EVTQ_IRQEN, smmu.base + SMMU_IRQ_CTRL);
	for (int i = 0; i < 1000; i++)
		if (readl(smmu.base + SMMU_IRQ_CTRLACK) & IRQ_CTRL_EVTQ_IRQEN)
			return 0;
	return -1;
}

int main(void)
{
	const uintptr_t dev = DMATEST_BASE;
	u64 ste[8], v;
	u32 vsid, st;
	int r;

	report_prefix_push("its");
	report(gic_version() == 3, "GICv3 (ID_AA64PFR0_EL1.GIC)");
	gic_init();
	install_irq_handler(irq_handler);
	r = its_init();
	report(r == 0, "LPIs enabled and the ITS set up (%d, ITT entries of %u bytes)", r, its_itt_entry_size());
	if (r)
		return report_summary();

	r = vsmmu_init(&smmu, VSMMU_BASE);
	report(r == 0 && (smmu.idr0 & IDR0_MSI), "vSMMU enabled with MSIs (IDR0 %#x, init %d)", smmu.idr0, r);
	vsid = dmatest_sid(dev);

	/* LPIs: the vSMMU's event queue and the device's completion, both on CPU 0 through collection 0 */
	lpi_config(LPI_EVTQ, GIC_DEFAULT_PRIO, true);
	lpi_config(LPI_DMA, GIC_DEFAULT_PRIO, true);
	r = its_mapd(SMMU_MSI_DEVID, 4, itt_smmu);
	r |= its_mapd(vsid, 4, itt_dev);
	r |= its_mapc(0, 0);
	r |= its_mapti(SMMU_MSI_DEVID, EV_EVTQ, LPI_EVTQ, 0);
	r |= its_mapti(vsid, EV_DMA, LPI_DMA, 0);
	r |= its_invall(0);
	r |= its_sync(0);
	report(r == 0, "MAPD/MAPC/MAPTI/INVALL/SYNC completed (DeviceIDs %#x and %#x)", SMMU_MSI_DEVID, vsid);
	r = vsmmu_evtq_msi(GITS_TRANSLATER_ADDR, EV_EVTQ);
	report(r == 0, "vSMMU event queue MSI to the vITS doorbell (IRQ_CTRLACK)");

	/* stage 1: a buffer, and the doorbell IOVA -> the vITS translation frame (the host's stage 2 does the rest) */
	r = pgtable_init(&pt, 39);
	r |= pgtable_map(&pt, BUF_IOVA, ipa(buf), 4096, PGT_READ | PGT_WRITE, false);
	r |= pgtable_map(&pt, DB_IOVA, GITS_TRANSLATER_ADDR & ~0xfffULL, 4096, PGT_WRITE | PGT_MMIO, false);
	vsmmu_cd_write(cd_table, 1, &pt, true);
	vsmmu_ste_s1(ste, ipa(cd_table), 0);
	r |= vsmmu_install_ste(&smmu, vsid, ste);
	report(r == 0, "stage 1 for vSID %#x maps the doorbell IOVA %#llx", vsid, (unsigned long long)DB_IOVA);
	dmatest_set_msi(dev, DB_IOVA | (GITS_TRANSLATER_ADDR & 0xfff), EV_DMA, true);

	local_irq_enable();
	st = dmatest_write64(dev, BUF_IOVA, 0x5a5a);
	report(st == DMATEST_ST_DONE && buf[0] == 0x5a5a, "DMA through the SMMU completed (status %#x)", st);
	report(readl(dev + DMATEST_MSI_STATUS) == DMATEST_MSI_SENT, "its completion MSI was sent (MSI_STATUS %#x)",
	       readl(dev + DMATEST_MSI_STATUS));
	report(wait_for(&seen_dma, 1), "the DMA-completion MSI was taken as LPI %u", LPI_DMA);

	/* a DMA fault: the vSMMU records F_TRANSLATION and signals it through its event-queue MSI */
	dmatest_set_msi(dev, 0, 0, false);
	st = dmatest_read64(dev, UNMAPPED_IOVA, &v);
	report(st == DMATEST_ST_FAULT, "DMA at an unmapped IOVA faults (status %#x)", st);
	report(wait_for(&seen_evtq, 1), "the SMMU event-queue MSI was taken as LPI %u", LPI_EVTQ);
	report(evt_type == EVT_F_TRANSLATION && evt_sid == vsid && evt_addr == UNMAPPED_IOVA,
	       "its handler read F_TRANSLATION (type %#x sid %#x addr %#llx)", evt_type, evt_sid,
	       (unsigned long long)evt_addr);
	local_irq_disable();
	report(seen_dma == 1 && seen_evtq == 1 && others == 0 && spurious == 0,
	       "each LPI once, nothing else (dma %u evtq %u others %u spurious %u)", seen_dma, seen_evtq, others,
	       spurious);
	report(its_cmd_errors() == 0, "no ITS command stalled");
	report_prefix_pop();
	return report_summary();
}
