/* Bad guest: enables the MMU, then loads from a VA with no translation (level-1 fault): exits 139. */
#include "guest.h"

static __attribute__((noinline)) u64 load_unmapped(void)
{
	return *(volatile u64 *)0x300000008ULL;
}

int main(void)
{
	mmu_enable();            /* default identity map only */
	printf("MMU on; loading from an unmapped VA\n");
	return (int)load_unmapped();
}
