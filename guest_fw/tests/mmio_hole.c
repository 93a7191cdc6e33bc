/* Bad guest: writes to 0x0800_0000, where nothing is mapped (QEMU virt's GIC, not on this board): exits 139. */
#include "guest.h"

static __attribute__((noinline)) void poke_hole(void)
{
	writel(0xdead, 0x08000000UL);
}

int main(void)
{
	printf("about to write an unmapped MMIO address\n");
	poke_hole();
	return 0;
}
