/*
 * The PL011's receive interrupt (RXIM): the guest unmasks it, sleeps in WFI until the RX interrupt and echoes
 * what it reads from UARTDR until a newline (run with console input, e.g. `printf 'hi\n' | smmu-harness run`;
 * QEMU: -serial stdio).
 */
#include "gic.h"

#define UART 0x09000000UL
#define UARTDR 0x000
#define UARTFR 0x018
#define UARTIMSC 0x038
#define UARTMIS 0x040
#define RXIM (1U << 4)
#define RXFE (1U << 4)

static char line[64];
static volatile unsigned int len, done, rx_irqs;

static void handler(struct pt_regs *regs)
{
	u32 iar = gic_read_iar();

	if (readl(UART + UARTMIS) & RXIM)
		rx_irqs++;
	while (!(readl(UART + UARTFR) & RXFE)) {
		char c = readl(UART + UARTDR) & 0xff;
		if (c == '\n' || c == '\r')
			done = 1;
		else if (len < sizeof(line) - 1)
			line[len++] = c;
	}
	gic_write_eoir(iar);
}

int main(void)
{
	report_prefix_push("irq_uart_rx");
	gic_init();
	install_irq_handler(handler);
	gic_enable_irq(SPI_UART);
	writel(RXIM, UART + UARTIMSC);
	local_irq_enable();
	while (!done)
		wfi();
	local_irq_disable();
	writel(0, UART + UARTIMSC);
	report(rx_irqs > 0, "RX interrupts taken");
	report(len > 0, "received '%s'", line);
	report_prefix_pop();
	return report_summary();
}
