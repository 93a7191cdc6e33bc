/*
 * Exceptions as hardware takes them (Arm ARM DDI 0487 D1.10, ESR_ELx D17.2.37): the guest installs its own
 * vector table (not the runtime's) in VBAR_EL1 and VBAR_EL2, provokes one exception per case and prints, for
 * each, what its handler saw: the vector (offset in the table), the EL it ran at, ESR, ELR, FAR, SPSR and the
 * handler's DAIF/PAN/SPSel. Cases, started at EL1: UDF, BRK, SVC, data aborts (external, store pair with
 * writeback, misaligned exclusive), instruction abort, PC alignment, SP0 vector, illegal exception return,
 * SVE access trap (CPACR_EL1.ZEN), PAN on entry (SCTLR_EL1.SPAN = 0), SMC without EL3; from EL0 (lower-EL
 * vector): UDF, SVC, BRK, data abort, MRS CTR_EL0 / DC ZVA / MSR DAIFSet / DC CVAU trapped by SCTLR_EL1, WFI
 * trapped by nTWI. Started at EL2 the same run adds: HVC at EL2, and from EL1 under HCR_EL2: HVC, SMC with TSC,
 * PACGA with API = 0, MSR APGAKEYLO_EL1 with APK = 0, CNTW with CPTR_EL2.TZ, WFI with TWI, an EL1-handled UDF,
 * and an SVC from EL0 with TGE = 1. The same binary prints the same lines under smmu-harness and under
 * qemu-system-aarch64 -M virt(,virtualization=on) -cpu max -semihosting (tests/harness/test_exceptions_qemu.py).
 */
#include "guest.h"

struct rec { u64 vec, el, esr, elr, far, spsr, pstate; };
static struct rec recs[64];
static unsigned int nrec;
u64 resume_at;                   /* non-zero: the handler returns there (faults with no next instruction) */
u64 el0_exit, el1_exit;          /* where an `svc #0xfff` from EL0 / `hvc #0xfff` from EL1 returns */
u64 el0_exit_spsr, el1_exit_spsr;
static u64 el0_stack[256] __aligned(16);
static u64 el1_stack[512] __aligned(16);
u64 scratch[8] __aligned(64);
extern char probe_vectors[], el0_body[], el1_body[], el0_tge_body[];

#define SPSR_IL (1ULL << 20)

void probe_sync(u64 vec, u64 *x)
{
	u64 el = read_sysreg(CurrentEL) >> 2, esr, elr, spsr, far;
	unsigned int ec;
	if (el == 2) {
		esr = read_sysreg(esr_el2); elr = read_sysreg(elr_el2);
		spsr = read_sysreg(spsr_el2); far = read_sysreg(far_el2);
	} else {
		esr = read_sysreg(esr_el1); elr = read_sysreg(elr_el1);
		spsr = read_sysreg(spsr_el1); far = read_sysreg(far_el1);
	}
	ec = (unsigned int)(esr >> 26);
	if ((ec == 0x15 && (esr & 0xffff) == 0xfff) || (ec == 0x16 && (esr & 0xffff) == 0xfff)) {
		/* back to the code that dropped to the lower EL */
		elr = ec == 0x15 ? el0_exit : el1_exit;
		spsr = ec == 0x15 ? el0_exit_spsr : el1_exit_spsr;
	} else {
		if (nrec < ARRAY_SIZE(recs))
			recs[nrec++] = (struct rec){ vec, el, esr, elr, far, spsr,
				read_sysreg(daif) | read_sysreg(spsel) | read_sysreg(s3_0_c4_c2_3) /* PAN */ };
		if (resume_at)
			elr = resume_at;
		else if (ec != 0x15 && ec != 0x16)   /* SVC, HVC: ELR is already the next instruction */
			elr += 4;
		resume_at = 0;
		spsr &= ~SPSR_IL;
	}
	if (el == 2) {
		write_sysreg(elr, elr_el2); write_sysreg(spsr, spsr_el2);
	} else {
		write_sysreg(elr, elr_el1); write_sysreg(spsr, spsr_el1);
	}
}

/* 16 entries: save x0-x18, x30 and call probe_sync(offset, frame); restore and ERET. */
asm(
"	.text\n"
"	.balign 0x800\n"
"	.global probe_vectors\n"
"probe_vectors:\n"
"	.irp idx, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
"	.balign 0x80\n"
"	sub sp, sp, #176\n"
"	stp x0, x1, [sp, #0]\n"
"	mov x0, #(\\idx * 0x80)\n"
"	b probe_common\n"
"	.endr\n"
"probe_common:\n"
"	stp x2, x3, [sp, #16]\n stp x4, x5, [sp, #32]\n stp x6, x7, [sp, #48]\n stp x8, x9, [sp, #64]\n"
"	stp x10, x11, [sp, #80]\n stp x12, x13, [sp, #96]\n stp x14, x15, [sp, #112]\n"
"	stp x16, x17, [sp, #128]\n stp x18, x30, [sp, #144]\n"
"	mov x1, sp\n"
"	bl probe_sync\n"
"	ldp x0, x1, [sp, #0]\n ldp x2, x3, [sp, #16]\n ldp x4, x5, [sp, #32]\n ldp x6, x7, [sp, #48]\n"
"	ldp x8, x9, [sp, #64]\n ldp x10, x11, [sp, #80]\n ldp x12, x13, [sp, #96]\n ldp x14, x15, [sp, #112]\n"
"	ldp x16, x17, [sp, #128]\n ldp x18, x30, [sp, #144]\n"
"	add sp, sp, #176\n"
"	eret\n"
);

/* EL0: each faulting instruction is skipped by the handler (ELR + 4); svc #0xfff returns to EL1/EL2. */
asm(
"	.global el0_body\n"
"el0_body:\n"
"	udf #1\n"
"	svc #0x5\n"
"	brk #0x6\n"
"	movz x1, #0x30, lsl #32\n"
"	ldr x0, [x1, #0x10]\n"
"	mrs x0, ctr_el0\n"
"	dc zva, x2\n"
"	msr daifset, #2\n"
"	dc cvau, x2\n"
"	wfi\n"
"	svc #0xfff\n"
"	.global el0_tge_body\n"
"el0_tge_body:\n"
"	svc #0x7\n"
"	svc #0xfff\n"
);

/* EL1 under a guest EL2: exceptions to EL2 (HCR_EL2 traps) and one to EL1; hvc #0xfff returns to EL2. */
asm(
"	.global el1_body\n"
"el1_body:\n"
"	hvc #0x34\n"
"	smc #0x56\n"
"	mov x3, #3\n mov x4, #4\n"
"	pacga x2, x3, x4\n"
"	msr apgakeylo_el1, x3\n"
"	.inst 0x04a0e3e1\n"                 /* cntw x1 */
"	wfi\n"
"	udf #0x9\n"
"	hvc #0xfff\n"
);

static void drop_to_el0(char *body)
{
	asm volatile(
		"adr x0, 1f\n"
		"adrp x1, el0_exit\n str x0, [x1, :lo12:el0_exit]\n"
		"mrs x0, CurrentEL\n mov x1, #0x3c1\n orr x0, x0, x1\n"   /* ELxh, DAIF masked: svc #0xfff returns there */
		"adrp x1, el0_exit_spsr\n str x0, [x1, :lo12:el0_exit_spsr]\n"
		"msr sp_el0, %1\n"
		"mrs x0, CurrentEL\n cmp x0, #8\n b.eq 2f\n"
		"msr elr_el1, %0\n msr spsr_el1, xzr\n adrp x2, scratch\n eret\n"
		"2: msr elr_el2, %0\n msr spsr_el2, xzr\n adrp x2, scratch\n eret\n"
		"1:\n"
		: : "r"(body), "r"(el0_stack + ARRAY_SIZE(el0_stack))
		: "x0", "x1", "x2", "x30", "memory");
}

static void el1_cases(void)
{
	u64 sctlr = read_sysreg(sctlr_el1);
	asm volatile("mov x1, #0\n cmp x1, #1\n .global case_udf\n case_udf: udf #7" ::: "x1", "cc");
	asm volatile(".global case_brk\n case_brk: brk #0x1234");
	asm volatile(".global case_svc\n case_svc: svc #0x42" ::: "x0");
	asm volatile("movz x2, #0x30, lsl #32\n .global case_dabt\n case_dabt: ldr x1, [x2, #8]" ::: "x1", "x2");
	asm volatile("movz x2, #0x30, lsl #32\n .global case_stp\n case_stp: stp x1, x1, [x2, #16]!" ::: "x2");
	asm volatile("adrp x2, scratch\n add x2, x2, :lo12:scratch\n add x2, x2, #1\n"
		     ".global case_ldxr\n case_ldxr: ldxr x1, [x2]" ::: "x1", "x2");
	asm volatile("adr x1, 1f\n adrp x3, resume_at\n str x1, [x3, :lo12:resume_at]\n movz x2, #0x30, lsl #32\n"
		     ".global case_iabt\n case_iabt: blr x2\n 1:" ::: "x1", "x2", "x3", "x30");
	asm volatile("adr x1, 1f\n adrp x3, resume_at\n str x1, [x3, :lo12:resume_at]\n add x2, x1, #2\n"
		     ".global case_pcalign\n case_pcalign: br x2\n 1:" ::: "x1", "x2", "x3");
	asm volatile("msr spsel, #0\n .global case_sp0\n case_sp0: udf #8\n msr spsel, #1" ::: "memory");
	if (current_el() == 1)
		asm volatile("adr x2, 1f\n msr elr_el1, x2\n mov x3, #0x3c9\n msr spsr_el1, x3\n"
			     ".global case_illegal\n case_illegal: eret\n 1: nop" ::: "x2", "x3");
	write_sysreg(read_sysreg(cpacr_el1) & ~(3UL << 16), cpacr_el1);      /* ZEN = 0: SVE traps to EL1 */
	isb();
	asm volatile(".global case_sve\n case_sve: .inst 0x04a0e3e1" ::: "x1");   /* cntw x1 */
	write_sysreg(read_sysreg(cpacr_el1) | (3UL << 16), cpacr_el1);
	write_sysreg(sctlr & ~(1UL << 23), sctlr_el1);                       /* SPAN = 0: PAN set on entry */
	isb();
	asm volatile(".global case_pan\n case_pan: udf #10");
	write_sysreg(sctlr, sctlr_el1);
	isb();
	if (current_el() == 1) {
		asm volatile(".global case_smc\n case_smc: smc #0x77" ::: "x0");   /* no EL3: UNDEFINED */
		write_sysreg(sctlr & ~(1UL << 16), sctlr_el1);                /* nTWI = 0: WFI at EL0 traps */
		isb();
		drop_to_el0(el0_body);
		write_sysreg(sctlr, sctlr_el1);
		isb();
	}
}

static void el2_cases(void)
{
	asm volatile(".global case_hvc2\n case_hvc2: hvc #0x12");
	/* EL1 with traps: TSC (SMC), TWI (WFI), API = APK = 0 (PAuth, keys), CPTR_EL2.TZ (SVE) */
	write_sysreg((1UL << 31) | (1UL << 19) | (1UL << 13), hcr_el2);
	write_sysreg(read_sysreg(cptr_el2) | (1UL << 8), cptr_el2);
	write_sysreg(3UL << 20 | 3UL << 16, cpacr_el1);
	write_sysreg(probe_vectors, vbar_el1);
	write_sysreg(read_sysreg(sctlr_el1), sctlr_el1);
	isb();
	asm volatile(
		"adr x0, 1f\n adrp x1, el1_exit\n str x0, [x1, :lo12:el1_exit]\n"
		"mov x0, #0x3c9\n adrp x1, el1_exit_spsr\n str x0, [x1, :lo12:el1_exit_spsr]\n"
		"msr sp_el1, %1\n msr elr_el2, %0\n mov x0, #0x3c5\n msr spsr_el2, x0\n eret\n"
		"1:\n" : : "r"(el1_body), "r"(el1_stack + ARRAY_SIZE(el1_stack)) : "x0", "x1", "x2", "x3", "x4",
		"x30", "memory");
	write_sysreg(read_sysreg(cptr_el2) & ~(1UL << 8), cptr_el2);
	write_sysreg((1UL << 31) | (1UL << 27), hcr_el2);                    /* TGE: EL0 exceptions go to EL2 */
	isb();
	drop_to_el0(el0_tge_body);
	write_sysreg(0, hcr_el2);
	isb();
}

int main(void)
{
	unsigned int i;
	write_sysreg(probe_vectors, vbar_el1);
	if (current_el() == 2)
		write_sysreg(probe_vectors, vbar_el2);
	isb();
	el1_cases();
	if (current_el() == 2)
		el2_cases();
	for (i = 0; i < nrec; i++)
		printf("%2u: vec=%03llx el=%llu esr=%08llx elr=%llx far=%llx spsr=%llx pstate=%llx\n", i, recs[i].vec,
		       recs[i].el, recs[i].esr, recs[i].elr, recs[i].far, recs[i].spsr, recs[i].pstate);
	printf("%u exceptions\n", nrec);
	return 0;
}
