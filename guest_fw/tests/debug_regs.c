/*
 * The self-hosted debug registers as kvm-unit-tests' arm/debug.c uses them (Arm ARM DDI 0487 D2): the OS lock
 * (locked at reset, OSLSR_EL1 = 0xA), MDSCR_EL1.{KDE, MDE, SS}, DBGBCR<n>/DBGBVR<n> breakpoints,
 * DBGWCR<n>/DBGWVR<n> watchpoints (BAS, MASK, LSC) and software step, taken at the guest's own EL1 vectors
 * (EC 0x31, 0x35, 0x33). Prints the register read-backs and what each handler saw; nothing fires while the OS
 * lock is set, MDE is clear or PSTATE.D is set. Same output and status under smmu-harness and QEMU.
 */
#include "guest.h"

#define MDSCR_SS (1UL << 0)
#define MDSCR_KDE (1UL << 13)
#define MDSCR_MDE (1UL << 15)
#define SPSR_D (1UL << 9)
#define SPSR_SS (1UL << 21)

static struct { u64 esr, elr, far, spsr; } hits[32];
static volatile unsigned int nhits;
static volatile u8 data[64] __aligned(64);
extern char bp_insns[], ss_start[], ss_svc[];

static void record(struct pt_regs *regs, unsigned int esr)
{
	if (nhits < ARRAY_SIZE(hits)) {
		hits[nhits].esr = esr;
		hits[nhits].elr = regs->elr;
		hits[nhits].far = regs->far;
		hits[nhits].spsr = regs->spsr;
	}
	nhits++;
}

static void mask_debug(struct pt_regs *regs, unsigned int esr)
{
	record(regs, esr);
	regs->spsr |= SPSR_D;           /* the instruction re-executes with debug exceptions masked */
}

static void keep_stepping(struct pt_regs *regs, unsigned int esr)
{
	record(regs, esr);
	regs->spsr |= SPSR_SS;          /* active-not-pending: one more instruction, then the next step */
}

static void svc_handler(struct pt_regs *regs, unsigned int esr)
{
	record(regs, esr);
}

static void show(const char *what)
{
	unsigned int i;
	printf("%s: %u\n", what, nhits);
	for (i = 0; i < nhits && i < ARRAY_SIZE(hits); i++)
		printf("  esr %08llx elr %llx far %llx spsr %llx\n", hits[i].esr, hits[i].elr, hits[i].far,
		       hits[i].spsr & ~0xf0000000ULL);
	nhits = 0;
}

static void reset_debug(void)
{
	asm volatile("msr daifset, #8");
	write_sysreg(0, mdscr_el1);
	write_sysreg(0, dbgbcr0_el1); write_sysreg(0, dbgbcr1_el1); write_sysreg(0, dbgbcr2_el1);
	write_sysreg(0, dbgbcr3_el1); write_sysreg(0, dbgbcr4_el1); write_sysreg(0, dbgbcr5_el1);
	write_sysreg(0, dbgwcr0_el1); write_sysreg(0, dbgwcr1_el1); write_sysreg(0, dbgwcr2_el1);
	write_sysreg(0, dbgwcr3_el1);
	isb();
}

static void enable(u64 mdscr)
{
	write_sysreg(read_sysreg(mdscr_el1) | mdscr, mdscr_el1);
	isb();
	asm volatile("msr daifclr, #8");
}

static __attribute__((noinline)) void run_bp_insns(void)
{
	asm volatile(".global bp_insns\n bp_insns:\n"
		     "msr daifclr, #8\n msr daifclr, #8\n msr daifclr, #8\n msr daifclr, #8\n"
		     "msr daifclr, #8\n msr daifclr, #8\n msr daifclr, #8\n msr daifclr, #8\n");
}

static void breakpoints(void)
{
	u64 bcr = 0xff << 5 | 1 << 1 | 1;   /* BAS (LEN8 as kvm-unit-tests writes it), PMC = EL1, E */
	reset_debug();
	write_sysreg(bcr, dbgbcr0_el1); write_sysreg((u64)bp_insns, dbgbvr0_el1);
	write_sysreg(bcr, dbgbcr1_el1); write_sysreg((u64)bp_insns + 4, dbgbvr1_el1);
	write_sysreg(bcr, dbgbcr5_el1); write_sysreg((u64)bp_insns + 12, dbgbvr5_el1);
	isb();
	printf("DBGBCR0 %llx DBGBVR1 %llx\n", read_sysreg(dbgbcr0_el1), read_sysreg(dbgbvr1_el1));
	write_sysreg(1, oslar_el1);                 /* OS lock set: nothing fires */
	isb();
	enable(MDSCR_KDE | MDSCR_MDE);
	run_bp_insns();
	show("breakpoints, OS lock set");
	write_sysreg(0, oslar_el1);
	isb();
	printf("OSLSR_EL1 unlocked %llx\n", read_sysreg(oslsr_el1));
	asm volatile("msr daifclr, #8");
	run_bp_insns();
	show("breakpoints");
	write_sysreg(read_sysreg(mdscr_el1) & ~MDSCR_MDE, mdscr_el1);   /* MDE = 0: nothing fires */
	isb();
	run_bp_insns();
	show("breakpoints, MDE clear");
}

static void store_byte(unsigned int i, u8 v)
{
	data[i] = v;
	asm volatile("msr daifclr, #8" ::: "memory");
}

static void watchpoints(void)
{
	u64 v;
	reset_debug();
	write_sysreg((u64)&data[8] | 3, dbgwvr0_el1);                   /* bits [1:0] are RES0 */
	write_sysreg(1UL << (5 + 3) | 2 << 3 | 1 << 1 | 1, dbgwcr0_el1); /* BAS = byte 3: data[11], store, EL1 */
	write_sysreg((u64)&data[32], dbgwvr1_el1);
	write_sysreg(4UL << 24 | 0xff << 5 | 1 << 3 | 1 << 1 | 1, dbgwcr1_el1);   /* MASK = 4: data[32..47], load */
	isb();
	printf("DBGWVR0 %llx DBGWCR1 %llx\n", read_sysreg(dbgwvr0_el1) - (u64)data, read_sysreg(dbgwcr1_el1));
	enable(MDSCR_KDE | MDSCR_MDE);
	store_byte(10, 1);
	store_byte(12, 2);
	v = data[11];                                                   /* a load: not watched for loads */
	store_byte(11, 3);
	v += *(volatile u64 *)&data[40];                                /* 8-byte load inside the MASK block */
	asm volatile("msr daifclr, #8" ::: "memory");
	*(volatile u64 *)&data[48] = 5;                                 /* a store right after it */
	show("watchpoints");
	printf("data[10..12] %u %u %u v %llu\n", data[10], data[11], data[12], v);
}

static void step(void)
{
	reset_debug();
	enable(MDSCR_KDE | MDSCR_SS);
	asm volatile(".global ss_start\n ss_start:\n"
		     "mrs x0, esr_el1\n"
		     "add x0, x0, #1\n"
		     "msr daifset, #8\n" ::: "x0");
	show("single step");
	write_sysreg(read_sysreg(mdscr_el1) & ~MDSCR_SS, mdscr_el1);
	isb();
	enable(MDSCR_SS);
	asm volatile(".global ss_svc\n ss_svc:\n"
		     "nop\n"
		     "svc #0x12\n"
		     "nop\n"
		     "msr daifset, #8\n" ::: "x0");
	show("single step over SVC");
	write_sysreg(0, mdscr_el1);
	isb();
}

int main(void)
{
	printf("OSLSR_EL1 at reset %llx MDSCR_EL1 %llx\n", read_sysreg(oslsr_el1), read_sysreg(mdscr_el1));
	install_exception_handler(ESR_EC_BKPT_CUR, mask_debug);
	install_exception_handler(ESR_EC_WPT_CUR, mask_debug);
	install_exception_handler(ESR_EC_SSTEP_CUR, keep_stepping);
	install_exception_handler(ESR_EC_SVC64, svc_handler);
	write_sysreg(0, osdlr_el1);
	breakpoints();
	watchpoints();
	step();
	printf("bp_insns %llx ss_start %llx ss_svc %llx\n", (u64)bp_insns & 0xfff, (u64)ss_start & 0xfff,
	       (u64)ss_svc & 0xfff);
	return 0;
}
