/* Bad guest: executes a permanently undefined instruction (UDF #0): smmu-harness exits 132. */
#include "guest.h"

static __attribute__((noinline)) void do_undef(void)
{
	asm volatile("nop\n\tudf #0" : : : "memory");
}

int main(void)
{
	printf("about to execute UDF\n");
	do_undef();
	return 0;
}
