/*
 * Semihosting with the MMU on: parameter blocks, strings and buffers at virtual addresses that the guest
 * remaps between calls. A 4 KiB page at VA 0x2_0000_0000 is mapped to page A, then to page B (with TLBI, as
 * break-before-make asks), then back to A without any TLBI: a semihosting call reads the guest's tables as
 * they are when it is made (QEMU walks them for each access: target/arm get_phys_addr; smmu-harness's
 * translation cache re-checks the descriptors of each hit), so every call must see the mapping written last.
 * The same binary prints the same lines under qemu-system-aarch64 -semihosting and smmu-harness, at EL1 and
 * at EL2 (tests/harness/test_boot_qemu.py).
 */
#include "sh_calls.h"

#define ALIAS 0x200000000ULL

static char page_a[4096] __aligned(4096), page_b[4096] __aligned(4096);

static void tlbi_alias(void)
{
	dsb(ishst);
	if (current_el() == 2)
		asm volatile("tlbi alle2is" : : : "memory");
	else
		asm volatile("tlbi vae1is, %0" : : "r"(ALIAS >> 12) : "memory");
	dsb(ish);
	isb();
}

static void show(const char *what)
{
	u64 *blk = (u64 *)(ALIAS + 0x100);      /* a parameter block in the aliased page */
	char *cmd = (char *)(ALIAS + 0x200);

	printf("%s: ", what);
	sh(0x04, ALIAS);                         /* SYS_WRITE0 of the string at the start of the page */
	blk[0] = (u64)cmd;
	blk[1] = 200;
	memset(cmd, 0, 200);
	printf("%s: cmdline %lld len %llu through the alias\n", what, sh(0x15, (u64)blk), blk[1]);
}

int main(void)
{
	strcpy(page_a, "this is page A\n");
	strcpy(page_b, "this is page B\n");
	mmu_map_identity_default();
	mmu_map(ALIAS, (u64)page_a, 4096, MT_NORMAL);
	mmu_enable();
	show("A");
	mmu_map(ALIAS, (u64)page_b, 4096, MT_NORMAL);
	tlbi_alias();
	show("B");
	mmu_map(ALIAS, (u64)page_a, 4096, MT_NORMAL);   /* no TLBI: semihosting still reads the new mapping */
	sh(0x04, ALIAS);
	tlbi_alias();
	printf("A again: %s", page_a);
	printf("B kept its block: %s", page_b + 0);
	printf("block words in B: %llx %llx\n", ((u64 *)page_b)[0x20], ((u64 *)page_b)[0x21]);
	return 0;
}
