/*
 * Synchronous exceptions taken to the current EL (vectors in start.S), kvm-unit-tests style:
 * install_exception_handler(ec, fn) makes the vectors call fn(regs, esr) for exceptions whose ESR.EC is `ec`
 * taken from the current EL (SP0 or SPx vector). fn may change regs (x0-x30, elr, spsr): returning from it
 * ERETs to regs->elr (the preferred return address: the faulting instruction for undefined instructions, BRK
 * and aborts, so add 4 to skip it; the next instruction for SVC). IRQs and FIQs from any EL go to the handler
 * install_irq_handler / install_fiq_handler set (gic.h). Anything else (no handler, SError, a synchronous
 * exception from a lower EL) prints the facts and exits 139 for aborts and alignment faults (EC 0x20-0x27),
 * 132 otherwise.
 *
 * smmu-harness takes every exception at these vectors, as hardware and QEMU do. Before printing, the
 * unhandled path calls __harness_unhandled_exception(vector, esr, elr, far), which does nothing on QEMU or
 * hardware; smmu-harness hooks its address and ends the run there with its own one-line death message and the
 * same status (docs/DESIGN.md "Harness API").
 */
#include "guest.h"

static exception_fn handlers[64];
static void (*irq_handler)(struct pt_regs *regs), (*fiq_handler)(struct pt_regs *regs);

/* gic.h: the vectors call fn(regs) for IRQs (FIQs) taken from any EL and stack pointer (vectors 1, 5, 9 / 2, 6,
 * 10); fn acknowledges and ends the interrupt itself. */
void install_irq_handler(void (*fn)(struct pt_regs *regs))
{
	irq_handler = fn;
	asm volatile("" : : : "memory");
}

void install_fiq_handler(void (*fn)(struct pt_regs *regs))
{
	fiq_handler = fn;
	asm volatile("" : : : "memory");
}

void install_exception_handler(int ec, exception_fn fn)
{
	if (ec < 0 || ec >= (int)ARRAY_SIZE(handlers))
		return;
	handlers[ec] = fn;
	asm volatile("" : : : "memory"); /* the handler is in place before an exception can use it */
}

__attribute__((noinline, used)) void __harness_unhandled_exception(int vector, u64 esr, u64 elr, u64 far)
{
	/* a call the compiler keeps: smmu-harness stops here (the arguments are in x0-x3) */
	asm volatile("" : : "r"(vector), "r"(esr), "r"(elr), "r"(far) : "memory");
}

void unhandled_exception(int vector)
{
	static const char *const kinds[4] = { "Synchronous", "IRQ", "FIQ", "SError" };
	static const char *const from[4] = { "current EL, SP0", "current EL, SPx", "lower EL, AArch64",
					     "lower EL, AArch32" };
	u64 esr, elr, far;
	unsigned int ec;
	if (current_el() == 2) {
		esr = read_sysreg(esr_el2);
		elr = read_sysreg(elr_el2);
		far = read_sysreg(far_el2);
	} else {
		esr = read_sysreg(esr_el1);
		elr = read_sysreg(elr_el1);
		far = read_sysreg(far_el1);
	}
	__harness_unhandled_exception(vector, esr, elr, far);
	ec = (unsigned int)(esr >> 26) & 0x3f;
	printf("unhandled exception: %s from %s at pc 0x%lx: EC 0x%x ESR 0x%lx FAR 0x%lx\n", kinds[vector & 3],
	       from[(vector >> 2) & 3], (unsigned long)elr, ec, (unsigned long)esr, (unsigned long)far);
	/* the statuses of smmu-harness: 139 aborts and alignment faults, 132 anything else */
	exit(ec >= 0x20 && ec <= 0x27 ? 139 : 132);
}

/* Called by the vectors (start.S) with the interrupted x0-x30 and SP saved in *regs; returns to ERET. */
void do_exception(int vector, struct pt_regs *regs)
{
	exception_fn fn = NULL;
	bool el2 = current_el() == 2;
	unsigned int ec;
	if (el2) {
		regs->elr = read_sysreg(elr_el2);
		regs->spsr = read_sysreg(spsr_el2);
		regs->esr = read_sysreg(esr_el2);
		regs->far = read_sysreg(far_el2);
	} else {
		regs->elr = read_sysreg(elr_el1);
		regs->spsr = read_sysreg(spsr_el1);
		regs->esr = read_sysreg(esr_el1);
		regs->far = read_sysreg(far_el1);
	}
	ec = ESR_EC(regs->esr);
	if ((vector & 3) == 1 && vector < 12 && irq_handler)
		irq_handler(regs);
	else if ((vector & 3) == 2 && vector < 12 && fiq_handler)
		fiq_handler(regs);
	else {
		if (vector == VECTOR_SYNC_SP0 || vector == VECTOR_SYNC_SPX)
			fn = handlers[ec];
		if (!fn)
			unhandled_exception(vector);
		fn(regs, (unsigned int)regs->esr);
	}
	if (el2) {
		write_sysreg(regs->elr, elr_el2);
		write_sysreg(regs->spsr, spsr_el2);
	} else {
		write_sysreg(regs->elr, elr_el1);
		write_sysreg(regs->spsr, spsr_el1);
	}
}
