/*
 * The TLBI features -cpu max advertises (Arm ARM D17.2 ID_AA64ISAR0_EL1.TLB [59:56]: 1 = FEAT_TLBIOS,
 * 2 = FEAT_TLBIOS and FEAT_TLBIRANGE), and that the forms it advertises execute: TLBI VMALLE1OS and
 * TLBI RVAE1IS. Same output and status under smmu-harness and qemu-system-aarch64 -M virt -cpu max (7.2).
 */
#include "guest.h"

int main(void)
{
	u64 isar0 = read_sysreg(id_aa64isar0_el1);
	u64 tlb = (isar0 >> 56) & 0xF;

	printf("ID_AA64ISAR0_EL1.TLB = %d\n", (int)tlb);
	report(tlb == 2, "cpu max: TLBI OS and range forms (TLB = 2)");
	asm volatile("tlbi vmalle1os\n dsb osh\n isb" ::: "memory");
	report(true, "TLBI VMALLE1OS");
	/* TG = 1 (4 KiB), SCALE 0, NUM 0, BaseADDR 0x40000: one page at 0x4000_0000 */
	u64 arg = (1ULL << 46) | (0x40000000ULL >> 12);
	asm volatile("tlbi rvae1is, %0\n dsb ish\n isb" :: "r"(arg) : "memory");
	report(true, "TLBI RVAE1IS");
	return report_summary();
}
