/* Bad guest: writes to 0x0801_2000, where nothing is mapped (past the 8 KiB GICv2 CPU interface; nothing with a
 * GICv3 either: QEMU virt gives the same external abort): exits 139. */
#include "guest.h"

static __attribute__((noinline)) void poke_hole(void)
{
	writel(0xdead, 0x08012000UL);
}

int main(void)
{
	printf("about to write an unmapped MMIO address\n");
	poke_hole();
	return 0;
}
