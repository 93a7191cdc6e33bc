/*
 * Catching synchronous exceptions with install_exception_handler (kvm-unit-tests style): an operation not
 * allowed at the current EL (TLBI ALLE1IS at EL1, TLBI ALLE3IS at EL2) is UNDEFINED (EC 0) and the guest
 * carries on; SVC and BRK reach their handlers with their imm16; a load from an unmapped physical address
 * (MMU off) and loads/stores to a VA without a translation (MMU on) are data aborts with the right FAR, DFSC
 * and WnR. Each handler checks the exception entry state (ELR, SPSR = the PSTATE before, DAIF masked, SPx)
 * and skips the instruction. Under smmu-harness the handlers opt this guest in to exception delivery; the
 * same binary gives the same output and status on qemu-system-aarch64 -M virt -cpu max -semihosting.
 */
#include "guest.h"

#define UNMAPPED_PA 0x3000000000ULL     /* no RAM or device here: harness board and QEMU virt (128 MiB) */
#define UNMAPPED_VA 0x300000008ULL      /* no translation in the default identity map (level-1 fault) */

static struct {
	unsigned int count;
	u64 esr, elr, far, spsr, sp, daif, el, spsel;
} seen;

static u64 expected_spsr;               /* PSTATE before the exception: EL, SP, DAIF */

static void record(struct pt_regs *regs, unsigned int esr)
{
	seen.count++;
	seen.esr = esr;
	seen.elr = regs->elr;
	seen.far = regs->far;
	seen.spsr = regs->spsr;
	seen.sp = regs->sp;
	seen.daif = read_sysreg(daif);
	seen.el = read_sysreg(CurrentEL);
	seen.spsel = read_sysreg(spsel);
}

static void skip_handler(struct pt_regs *regs, unsigned int esr)
{
	record(regs, esr);
	regs->elr += 4;                 /* preferred return address = the instruction: skip it */
}

static void svc_handler(struct pt_regs *regs, unsigned int esr)
{
	record(regs, esr);              /* preferred return address = the next instruction already */
	regs->regs[0] = 0x5ec;          /* visible to the caller after the ERET */
}

static u64 current_pstate(void)
{
	return read_sysreg(daif) | read_sysreg(CurrentEL) | (read_sysreg(spsel) & 1);
}

static void check_entry(const char *what, u64 elr)
{
	report(seen.elr == elr, "%s: ELR is the preferred return address", what);
	report((seen.spsr & 0x3cf) == expected_spsr, "%s: SPSR holds the interrupted PSTATE", what);
	report(seen.daif == 0x3c0 && seen.el == (u64)current_el() << 2 && seen.spsel == 1,
	       "%s: handler runs at EL%d with SPx, DAIF masked", what, current_el());
}

static void test_undefined_tlbi(void)
{
	u64 at;
	unsigned int before = seen.count;
	expected_spsr = current_pstate();
	if (current_el() == 1)          /* EL2 operation at EL1 */
		asm volatile("adr %0, 1f\n1:\ttlbi alle1is" : "=r"(at) : : "memory");
	else                            /* EL3 operation at EL2 */
		asm volatile("adr %0, 1f\n1:\ttlbi alle3is" : "=r"(at) : : "memory");
	report(seen.count == before + 1, "TLBI for a higher EL is UNDEFINED and caught");
	report(ESR_EC(seen.esr) == ESR_EC_UNKNOWN && seen.esr == 0x02000000, "TLBI: ESR EC 0 (unknown), IL 1");
	check_entry("TLBI", at);
}

static void test_svc_brk(void)
{
	u64 at;
	register u64 x0 asm("x0") = 1;
	unsigned int before = seen.count;
	expected_spsr = current_pstate();
	asm volatile("adr %1, 1f\n1:\tsvc #0x42" : "+r"(x0), "=r"(at) : : "memory");
	report(seen.count == before + 1 && ESR_EC(seen.esr) == ESR_EC_SVC64 && ESR_ISS(seen.esr) == 0x42,
	       "SVC #0x42: EC 0x15, ISS = imm16");
	report(x0 == 0x5ec, "SVC: the handler's x0 is returned");
	check_entry("SVC", at + 4);

	before = seen.count;
	asm volatile("adr %0, 1f\n1:\tbrk #0x7" : "=r"(at) : : "memory");
	report(seen.count == before + 1 && ESR_EC(seen.esr) == ESR_EC_BRK64 && ESR_ISS(seen.esr) == 7,
	       "BRK #7: EC 0x3c, ISS = imm16");
	check_entry("BRK", at);
}

static void test_abort(const char *what, u64 va, bool write, unsigned int fsc)
{
	u64 at, v = 0x1234;
	unsigned int before = seen.count;
	expected_spsr = current_pstate();
	if (write)
		asm volatile("adr %0, 1f\n1:\tstr %1, [%2]" : "=&r"(at) : "r"(v), "r"(va) : "memory");
	else
		asm volatile("adr %0, 1f\n1:\tldr %1, [%2]" : "=&r"(at), "+r"(v) : "r"(va) : "memory");
	report(seen.count == before + 1 && ESR_EC(seen.esr) == ESR_EC_DABT_CUR,
	       "%s: data abort, EC 0x25", what);
	report(seen.far == va, "%s: FAR = 0x%llx", what, va);
	report(ESR_FSC(seen.esr) == fsc, "%s: DFSC 0x%x", what, fsc);
	report(!!(seen.esr & ESR_DABT_WNR) == write, "%s: WnR = %d", what, write);
	report(write || v == 0x1234, "%s: destination register unchanged", what);
	check_entry(what, at);
}

int main(void)
{
	install_exception_handler(ESR_EC_UNKNOWN, skip_handler);
	install_exception_handler(ESR_EC_DABT_CUR, skip_handler);
	install_exception_handler(ESR_EC_SVC64, svc_handler);
	install_exception_handler(ESR_EC_BRK64, skip_handler);

	test_undefined_tlbi();
	test_svc_brk();
	test_abort("load from an unmapped PA", UNMAPPED_PA, false, 0x10);   /* synchronous external abort */
	mmu_enable();
	test_abort("load from an unmapped VA", UNMAPPED_VA, false, 0x05);   /* translation fault, level 1 */
	test_abort("store to an unmapped VA", UNMAPPED_VA, true, 0x05);
	test_undefined_tlbi();          /* still caught with the MMU on */
	report(seen.count == 7, "7 exceptions caught");
	return report_summary();
}
