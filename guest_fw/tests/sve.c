/*
 * SVE as a guest written for qemu-system-aarch64 -cpu max uses it: the vector length from CNTB/CNTW/CNTD and
 * RDVL at the reset ZCR_ELx.LEN (128 bits) and after raising ZCR_EL1 (EL1) or ZCR_EL2 (EL2) to 512 and 2048
 * bits, predicated loads/stores and arithmetic over an array (WHILELO, LD1W, ADD, ST1W, UADDV). The runtime
 * enables CPACR_EL1.ZEN (CPTR_EL2.TZ clear at EL2). Same output and status under smmu-harness and QEMU.
 */
#include "guest.h"

static u32 a[100], b[100], c[100];

static u64 cntb(void) { u64 v; asm volatile(".arch_extension sve\n cntb %0" : "=r"(v)); return v; }
static u64 cntw(void) { u64 v; asm volatile(".arch_extension sve\n cntw %0" : "=r"(v)); return v; }
static u64 cntd(void) { u64 v; asm volatile(".arch_extension sve\n cntd %0" : "=r"(v)); return v; }
static u64 rdvl(void) { u64 v; asm volatile(".arch_extension sve\n rdvl %0, #3" : "=r"(v)); return v; }

static void set_len(u64 len)
{
	if (current_el() == 2)
		asm volatile(".arch_extension sve\n msr zcr_el2, %0\n isb" : : "r"(len));
	else
		asm volatile(".arch_extension sve\n msr zcr_el1, %0\n isb" : : "r"(len));
}

static u64 vector_add(unsigned int n)
{
	u64 i = 0, sum;
	asm volatile(
		".arch_extension sve\n"
		"	mov z3.s, #0\n"
		"	whilelo p0.s, %[i], %[n]\n"
		"1:	ld1w z0.s, p0/z, [%[a], %[i], lsl #2]\n"
		"	ld1w z1.s, p0/z, [%[b], %[i], lsl #2]\n"
		"	add z2.s, z0.s, z1.s\n"
		"	st1w z2.s, p0, [%[c], %[i], lsl #2]\n"
		"	add z3.s, p0/m, z3.s, z2.s\n"
		"	incw %[i]\n"
		"	whilelo p0.s, %[i], %[n]\n"
		"	b.first 1b\n"
		"	ptrue p1.s\n"
		"	uaddv d4, p1, z3.s\n"
		"	fmov %[sum], d4\n"
		: [i] "+r"(i), [sum] "=r"(sum)
		: [n] "r"((u64)n), [a] "r"(a), [b] "r"(b), [c] "r"(c)
		: "memory", "cc", "v0", "v1", "v2", "v3", "v4");
	return sum;
}

int main(void)
{
	static const u64 lens[] = { 0, 3, 15 };
	unsigned int i, k;
	u64 id = read_sysreg(id_aa64pfr0_el1);
	printf("SVE field of ID_AA64PFR0_EL1: %llu\n", (id >> 32) & 0xf);
	for (i = 0; i < 100; i++) {
		a[i] = i * 3;
		b[i] = 1000 - i;
	}
	for (k = 0; k < ARRAY_SIZE(lens); k++) {
		set_len(lens[k]);
		memset(c, 0, sizeof(c));
		printf("LEN %llu: cntb %llu cntw %llu cntd %llu rdvl#3 %llu", lens[k], cntb(), cntw(), cntd(), rdvl());
		printf(" sum %llu c[0] %u c[57] %u c[99] %u\n", vector_add(100), c[0], c[57], c[99]);
	}
	return 0;
}
