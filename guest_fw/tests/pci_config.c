/*
 * The configuration space of QEMU virt's host bridge function (00:00.0, gpex-root) through ECAM, as a guest
 * sizing and probing it sees it: every dword of the 256-byte header and device-specific space written with
 * all-ones and with zeros (read back after each, then restored), sub-dword writes (STATUS RW1C, Interrupt
 * Line), the extended space of a conventional function, an absent function, bus 1, and the unclaimed PCI
 * windows (all-ones). Same output under QEMU 7.2 (-M virt -cpu max) and smmu-harness.
 */
#include "guest.h"

#define ECAM 0x4010000000UL                     /* highmem ECAM, 256 buses */
#define PIO 0x3eff0000UL
#define MMIO 0x10000000UL
#define MMIO_HIGH 0x8000000000UL

static uintptr_t cfg(int bus, int dev, int fn, int reg)
{
	return ECAM + ((uintptr_t)bus << 20) + (dev << 15) + (fn << 12) + reg;
}

static void masks(void)
{
	for (int reg = 0; reg < 0x100; reg += 4) {
		uintptr_t a = cfg(0, 0, 0, reg);
		u32 old = readl(a), ones, zeros;

		writel(0xffffffff, a);
		ones = readl(a);
		writel(0, a);
		zeros = readl(a);
		writel(old, a);
		if (ones != old || zeros != old)
			printf("  %#04x: %08x, all-ones %08x, zeros %08x\n", reg, old, ones, zeros);
	}
}

int main(void)
{
	int ok;

	printf("00:00.0 id %08x class %08x header %08x\n", readl(cfg(0, 0, 0, 0)), readl(cfg(0, 0, 0, 8)),
	       readl(cfg(0, 0, 0, 0xc)));
	printf("writable dwords:\n");
	masks();
	writew(0xffff, cfg(0, 0, 0, 6));                /* STATUS: RW1C, nothing set */
	writeb(0x5a, cfg(0, 0, 0, 0x3c));
	writeb(0xff, cfg(0, 0, 0, 0x3d));               /* Interrupt Pin: read-only */
	printf("status %04x line/pin %04x byte 0x41 %02x\n", readw(cfg(0, 0, 0, 6)), readw(cfg(0, 0, 0, 0x3c)),
	       readb(cfg(0, 0, 0, 0x41)));
	writel(0x12345678, cfg(0, 0, 0, 0x100));
	printf("extended 0x100 %08x 0xffc %08x\n", readl(cfg(0, 0, 0, 0x100)), readl(cfg(0, 0, 0, 0xffc)));
	printf("00:1f.0 %08x 00:00.7 %08x bus 1 %08x bus 255 %08x\n", readl(cfg(0, 31, 0, 0)),
	       readl(cfg(0, 0, 7, 0)), readl(cfg(1, 0, 0, 0)), readl(cfg(255, 31, 7, 0xffc)));
	printf("windows: pio %08x mmio %08x mmio-high %016lx\n", readl(PIO + 0x100), readl(MMIO + 0x1000),
	       readq(MMIO_HIGH + 0x1000));
	ok = readl(cfg(0, 0, 0, 0)) == 0x00081b36 && readl(cfg(0, 31, 0, 0)) == 0xffffffff;
	report(ok, "host bridge 1b36:0008, absent functions read all-ones");
	return report_summary();
}
