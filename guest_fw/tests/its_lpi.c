/*
 * LPIs through the ITS (its.h) with a CPU as the MSI writer: QEMU 7.2 and smmu-harness both take a CPU's store to
 * GITS_TRANSLATER as an MSI of DeviceID 0, so the same guest runs on both and prints the same lines. Run on a
 * GICv3 board (-machine gic-version=3). Checks: an MSI to a mapped event is its LPI, taken at the IRQ vector and
 * acknowledged through ICC_IAR1_EL1; INT raises the same LPI; a disabled LPI (configuration byte) stays silent
 * until it is enabled again and INV makes the ITS reread it (it was pending meanwhile); after MAPD V=0 the event
 * raises nothing; an event of a DeviceID nobody mapped raises nothing.
 */
#include "gic.h"
#include "its.h"

#define LPI 8200
#define EV 5
static u8 itt[256] __aligned(256);
static volatile u32 got, last, spurious;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();
	u32 intid = iar & 0xffffff;
	(void)regs;
	if (intid == GIC_SPURIOUS) {
		spurious++;
		return;
	}
	got++;
	last = intid;
	gic_write_eoir(iar);
}

static u32 settle(void)
{
	for (int i = 0; i < 10000; i++)
		asm volatile("nop");
	return got;
}

int main(void)
{
	int r;

	report_prefix_push("its_lpi");
	if (gic_version() != 3) {
		report_skip("needs a GICv3 (-machine gic-version=3)");
		return report_summary();
	}
	gic_init();
	install_irq_handler(handler);
	r = its_init();
	report(r == 0, "LPIs and the ITS set up");
	lpi_config(LPI, GIC_DEFAULT_PRIO, true);
	r = its_mapd(0, 4, itt) | its_mapc(0, 0) | its_mapti(0, EV, LPI, 0) | its_invall(0) | its_sync(0);
	report(r == 0, "MAPD/MAPC/MAPTI/INVALL/SYNC");
	local_irq_enable();

	writel(EV, GITS_TRANSLATER_ADDR);
	report(settle() == 1 && last == LPI, "a CPU's GITS_TRANSLATER write is LPI %u", LPI);
	its_cmd_int(0, EV);
	report(settle() == 2 && last == LPI, "INT raises the same LPI");

	lpi_config(LPI, GIC_DEFAULT_PRIO, false);
	its_inv(0, EV);
	writel(EV, GITS_TRANSLATER_ADDR);
	report(settle() == 2, "a disabled LPI is not taken");
	lpi_config(LPI, GIC_DEFAULT_PRIO, true);
	its_inv(0, EV);
	report(settle() == 3 && last == LPI, "enabled again (INV), its pending MSI is taken");

	its_unmapd(0);
	its_sync(0);
	writel(EV, GITS_TRANSLATER_ADDR);
	report(settle() == 3, "after MAPD V=0 the event raises nothing");
	local_irq_disable();
	report(spurious == 0 && its_cmd_errors() == 0, "no spurious IRQ, no stalled command");
	report_prefix_pop();
	return report_summary();
}
