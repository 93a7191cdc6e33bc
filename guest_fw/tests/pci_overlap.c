/*
 * Two pci-testdevs (-device pci-testdev -device pci-testdev: 00:01.0 and 00:02.0) with their memory BARs
 * moved over each other: the BAR mapped last answers, as in QEMU 7.2 (a BAR whose address changes is re-added
 * in front of its equals, hw/pci/pci.c pci_update_mappings). Each device first selects its own test, so the
 * header's offset field says which one answers (2048: mmio-no-eventfd, 2050: mmio-datamatch-eventfd). Then a
 * BAR over guest RAM: RAM still answers (BARs decode only inside the PCI windows). Same output under QEMU 7.2
 * (-M virt -cpu max -semihosting with the two devices) and smmu-harness (run ... -device pci-testdev x2).
 */
#include "guest.h"

#define ECAM 0x4010000000UL
#define MMIO 0x10000000UL

static uintptr_t cfg(int dev, int reg)
{
	return ECAM + (dev << 15) + reg;
}

static void place(int dev, u32 bar0, u16 command)
{
	writel(bar0, cfg(dev, 0x10));
	writew(command, cfg(dev, 4));
}

static u32 answer(const char *what)
{
	u32 v = readl(MMIO + 4);

	printf("%s: offset %u\n", what, v);
	return v;
}

int main(void)
{
	static volatile u32 ram_word = 0xc0ffee;
	int ok;

	printf("00:01.0 %08x 00:02.0 %08x\n", readl(cfg(1, 0)), readl(cfg(2, 0)));
	place(1, MMIO, 2);
	writeb(0, MMIO);                                /* 00:01.0: mmio-no-eventfd */
	place(2, MMIO + 0x1000, 2);
	writeb(2, MMIO + 0x1000);                       /* 00:02.0: mmio-datamatch-eventfd */
	ok = answer("00:01.0 alone") == 2048;
	place(2, MMIO, 2);
	ok &= answer("00:02.0 moved over it") == 2050;
	place(1, MMIO + 0x2000, 2);
	place(1, MMIO, 2);
	ok &= answer("00:01.0 moved away and back") == 2048;
	place(2, MMIO, 0);
	place(2, MMIO, 2);
	ok &= answer("00:02.0 memory decode off and on") == 2050;
	place(2, MMIO + 0x1000, 2);
	ok &= answer("00:02.0 moved away") == 2048;
	place(1, (u32)(uintptr_t)&ram_word & ~0xfffU, 2);
	printf("00:01.0 over RAM: RAM reads %#x\n", ram_word);
	ok &= ram_word == 0xc0ffee;
	report(ok, "the BAR mapped last answers; RAM is never shadowed");
	return report_summary();
}
