/*
 * Pointer authentication (FEAT_PAuth, QARMA5 as QEMU implements it) as a guest written for
 * qemu-system-aarch64 -cpu max uses it: keys written with MSR APIAKEY*_EL1 / APGAKEY*_EL1, PACGA, PACIA and
 * AUTIA with SCTLR_ELx.EnIA off (no-ops) and on (a signed pointer, authenticated back, a wrong modifier giving
 * the corrupted pointer of an Armv8.3 PAuth without FEAT_FPAC), PACIASP/AUTIASP around a call, XPACI. TCR_ELx
 * sets a 48-bit VA (T0SZ = 16), which places the PAC field. Same output and status under smmu-harness and QEMU.
 */
#include "guest.h"

static u64 pacia(u64 p, u64 mod) { asm volatile("pacia %0, %1" : "+r"(p) : "r"(mod)); return p; }
static u64 autia(u64 p, u64 mod) { asm volatile("autia %0, %1" : "+r"(p) : "r"(mod)); return p; }
static u64 xpaci(u64 p) { asm volatile("xpaci %0" : "+r"(p)); return p; }
static u64 pacga(u64 a, u64 b) { u64 r; asm volatile("pacga %0, %1, %2" : "=r"(r) : "r"(a), "r"(b)); return r; }

static __attribute__((noinline)) u64 signed_leaf(u64 x)
{
	u64 lr;
	asm volatile("paciasp\n mov %0, x30\n autiasp" : "=r"(lr) : : "x30");
	return lr ^ x;
}

static void set_sctlr_enia(bool on)
{
	u64 bit = 1ULL << 31;   /* SCTLR_ELx.EnIA */
	if (current_el() == 2)
		write_sysreg(on ? read_sysreg(sctlr_el2) | bit : read_sysreg(sctlr_el2) & ~bit, sctlr_el2);
	else
		write_sysreg(on ? read_sysreg(sctlr_el1) | bit : read_sysreg(sctlr_el1) & ~bit, sctlr_el1);
	isb();
}

int main(void)
{
	u64 p = 0x40123450, s, isar1 = read_sysreg(id_aa64isar1_el1);
	printf("ID_AA64ISAR1_EL1 APA %llu API %llu GPA %llu GPI %llu\n", (isar1 >> 4) & 0xf, (isar1 >> 8) & 0xf,
	       (isar1 >> 24) & 0xf, (isar1 >> 28) & 0xf);
	if (current_el() == 2)
		write_sysreg(16, tcr_el2);
	else
		write_sysreg(16, tcr_el1);
	write_sysreg(0x0123456789abcdefULL, apiakeylo_el1);
	write_sysreg(0xfedcba9876543210ULL, apiakeyhi_el1);
	write_sysreg(0x1111222233334444ULL, apgakeylo_el1);
	write_sysreg(0x5555666677778888ULL, apgakeyhi_el1);
	isb();
	printf("keys read back: %llx %llx\n", read_sysreg(apiakeylo_el1), read_sysreg(apgakeyhi_el1));
	printf("pacga(1, 2) = %llx, pacga(3, 4) = %llx\n", pacga(1, 2), pacga(3, 4));
	set_sctlr_enia(false);
	printf("EnIA=0: pacia %llx\n", pacia(p, 7));
	set_sctlr_enia(true);
	s = pacia(p, 7);
	printf("EnIA=1: pacia %llx autia %llx autia(wrong) %llx xpaci %llx\n", s, autia(s, 7), autia(s, 8), xpaci(s));
	printf("paciasp/autiasp: signed LR %llx\n", signed_leaf(0));
	set_sctlr_enia(false);
	return 0;
}
