/*
 * MMU sample: build stage-1 tables (identity map plus two aliases), enable the MMU, and run code and access
 * data through the aliases: a 1 GiB block alias of RAM at VA 0x1_0000_0000 and a 4 KiB page alias at
 * VA 0x2_0000_0000. Uses the runtime's helper (guest_fw/lib/mmu.c: 4 KiB granule, 39-bit VA).
 */
#include "guest.h"

#define ALIAS_BLOCK 0x100000000ULL      /* -> RAM_BASE, 1 GiB block (level 1) */
#define ALIAS_PAGE 0x200000000ULL       /* -> &page_buf, 4 KiB page (level 3) */

static u64 page_buf[512] __aligned(4096);
static volatile u64 shared_word;

/* Returns its own address as seen by the CPU (PC-relative), i.e. the VA it is executing at. */
static __attribute__((noinline)) u64 where_am_i(u64 x)
{
	u64 pc;
	asm volatile("adr %0, ." : "=r"(pc));
	return pc + (x << 1);
}

static u64 alias_of(const void *p)
{
	return (u64)(uintptr_t)p - RAM_BASE + ALIAS_BLOCK;
}

int main(void)
{
	u64 (*aliased)(u64);
	u64 pc;

	report_prefix_push("mmu");
	report(!mmu_enabled(), "MMU off at entry");
	mmu_map_identity_default();
	mmu_map(ALIAS_BLOCK, RAM_BASE, 1ULL << 30, MT_NORMAL);
	mmu_map(ALIAS_PAGE, (u64)(uintptr_t)page_buf, 4096, MT_NORMAL);
	mmu_enable();
	report(mmu_enabled(), "MMU on (SCTLR_EL%d.M)", current_el());

	shared_word = 0;
	*(volatile u64 *)(uintptr_t)alias_of((const void *)&shared_word) = 0x1234abcdULL;
	report(shared_word == 0x1234abcdULL, "store through the 1 GiB block alias is seen at the identity VA");

	page_buf[3] = 0xfeedULL;
	report(((volatile u64 *)(uintptr_t)ALIAS_PAGE)[3] == 0xfeedULL, "load through the 4 KiB page alias");

	aliased = (u64 (*)(u64))(uintptr_t)alias_of((const void *)where_am_i);
	pc = aliased(1);
	report(pc - 2 >= ALIAS_BLOCK && pc - 2 < ALIAS_BLOCK + (1ULL << 30),
	       "code runs at the alias VA (pc %#llx)", (unsigned long long)(pc - 2));
	report(where_am_i(0) < ALIAS_BLOCK, "and at the identity VA");
	printf("console works with the MMU on\n");
	report_prefix_pop();
	return report_summary();
}
