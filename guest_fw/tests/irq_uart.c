/*
 * The PL011's transmit interrupt (UARTINTR, SPI 1 = INTID 33 on QEMU virt) through the GIC: UARTRIS/UARTMIS/
 * UARTIMSC/UARTICR (PL011 TRM 3.3.12-3.3.15), the level the GIC sees while PSTATE.I masks it, the IRQ taken
 * after `msr daifclr`, cleared by the handler through UARTICR. Same output under QEMU 7.2 and smmu-harness.
 */
#include "gic.h"

#define UART 0x09000000UL
#define UARTDR 0x000
#define UARTIMSC 0x038
#define UARTRIS 0x03c
#define UARTMIS 0x040
#define UARTICR 0x044
#define TXIM (1U << 5)

static volatile unsigned int taken, intid, mis;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();

	intid = gic_iar_irqnr(iar);
	mis = readl(UART + UARTMIS);
	writel(TXIM, UART + UARTICR);           /* clear TXRIS: UARTINTR falls */
	dsb(sy);
	gic_write_eoir(iar);
	taken++;
}

int main(void)
{
	u32 ris, mis0, ris_after;
	bool pending_masked, pending_after;

	report_prefix_push("irq_uart");
	gic_init();
	install_irq_handler(handler);
	gic_enable_irq(SPI_UART);
	writel(0x7ff, UART + UARTICR);
	report(readl(UART + UARTRIS) == 0 && readl(UART + UARTMIS) == 0, "RIS and MIS clear after UARTICR");

	writeb('.', UART + UARTDR);
	writeb('\n', UART + UARTDR);
	ris = readl(UART + UARTRIS);
	mis0 = readl(UART + UARTMIS);
	report(ris == TXIM && mis0 == 0, "a transmitted byte sets TXRIS (RIS %x); masked in UARTIMSC, MIS %x", ris, mis0);
	report(!gic_irq_pending(SPI_UART), "UARTINTR low: SPI 1 not pending");

	writel(TXIM, UART + UARTIMSC);          /* unmask TX: UARTINTR rises */
	dsb(sy);
	isb();
	pending_masked = gic_irq_pending(SPI_UART);
	report(pending_masked && taken == 0, "SPI 1 pending while PSTATE.I masks it");

	local_irq_enable();
	isb();
	local_irq_disable();
	ris_after = readl(UART + UARTRIS);      /* before anything is printed again */
	pending_after = gic_irq_pending(SPI_UART);
	writel(0, UART + UARTIMSC);
	report(taken == 1 && intid == SPI_UART, "taken after msr daifclr: INTID %u", intid);
	report(mis == TXIM, "the handler saw UARTMIS %x", mis);
	report(ris_after == 0 && !pending_after, "UARTICR cleared it: RIS %x, SPI 1 no longer pending", ris_after);
	report_prefix_pop();
	return report_summary();
}
