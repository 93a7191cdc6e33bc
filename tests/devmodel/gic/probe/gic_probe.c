/*
 * GIC register probe: runs a script of MMIO and system-register accesses on qemu-system-aarch64 -M virt and
 * prints every value read, one "=<hex>" line each, so the tests can replay the same script on the pure GIC
 * models (devmodel/gic) and compare. The script is raw data loaded with
 * `-device loader,file=SCRIPT,addr=0x4f000000,force-raw=on`: a u64 count, then `struct op` records.
 * An op runs on the CPU it names (secondaries are started on first use and execute from a mailbox).
 * PSTATE.I/F stay masked: ISR_EL1 shows what the GIC signals without any exception being taken.
 */
#include "guest.h"

#define SCRIPT_ADDR 0x4f000000UL

enum { OP_END = 0, OP_R8, OP_R16, OP_R32, OP_R64, OP_W8, OP_W16, OP_W32, OP_W64, OP_MRS, OP_MSR };

struct op {
	u32 cpu;
	u32 kind;
	u64 addr;               /* MMIO address, or the system register number of the list below */
	u64 value;
};

/*
 * System registers by number, as (number, name, encoding, access: 1 readable, 2 writable):
 * tests/devmodel/gic/qemu_probe.py reads this list. Encodings: Arm IHI 0069 chapter 12 (as Linux's sysreg.h).
 */
#define SYSREGS                                                                                           \
	X(0, ICC_PMR_EL1, "S3_0_C4_C6_0", 3) X(1, ICC_IAR0_EL1, "S3_0_C12_C8_0", 1)                          \
	X(2, ICC_EOIR0_EL1, "S3_0_C12_C8_1", 2) X(3, ICC_HPPIR0_EL1, "S3_0_C12_C8_2", 1)                     \
	X(4, ICC_BPR0_EL1, "S3_0_C12_C8_3", 3) X(5, ICC_AP0R0_EL1, "S3_0_C12_C8_4", 3)                       \
	X(6, ICC_AP1R0_EL1, "S3_0_C12_C9_0", 3) X(7, ICC_DIR_EL1, "S3_0_C12_C11_1", 2)                       \
	X(8, ICC_RPR_EL1, "S3_0_C12_C11_3", 1) X(9, ICC_SGI1R_EL1, "S3_0_C12_C11_5", 2)                      \
	X(10, ICC_ASGI1R_EL1, "S3_0_C12_C11_6", 2) X(11, ICC_SGI0R_EL1, "S3_0_C12_C11_7", 2)                 \
	X(12, ICC_IAR1_EL1, "S3_0_C12_C12_0", 1) X(13, ICC_EOIR1_EL1, "S3_0_C12_C12_1", 2)                   \
	X(14, ICC_HPPIR1_EL1, "S3_0_C12_C12_2", 1) X(15, ICC_BPR1_EL1, "S3_0_C12_C12_3", 3)                  \
	X(16, ICC_CTLR_EL1, "S3_0_C12_C12_4", 3) X(17, ICC_SRE_EL1, "S3_0_C12_C12_5", 3)                     \
	X(18, ICC_IGRPEN0_EL1, "S3_0_C12_C12_6", 3) X(19, ICC_IGRPEN1_EL1, "S3_0_C12_C12_7", 3)              \
	X(20, ISR_EL1, "S3_0_C12_C1_0", 1) X(21, MPIDR_EL1, "S3_0_C0_C0_5", 1)                               \
	X(22, ICC_AP0R1_EL1, "S3_0_C12_C8_5", 3) X(23, ICC_AP1R1_EL1, "S3_0_C12_C9_1", 3)

static u64 mrs(u64 n)
{
	u64 v = ~0ULL;

	switch (n) {
#define X(i, name, enc, rw) case i: if ((rw) & 1) asm volatile("mrs %0, " enc : "=r"(v)); break;
	SYSREGS
#undef X
	}
	return v;
}

static void msr(u64 n, u64 v)
{
	switch (n) {
#define X(i, name, enc, rw) case i: if ((rw) & 2) asm volatile("msr " enc ", %0" : : "r"(v)); break;
	SYSREGS
#undef X
	}
	isb();
}

/* Returns 1 when the op produced a value in *out. */
static int run(const struct op *op, u64 *out)
{
	uintptr_t a = op->addr;

	switch (op->kind) {
	case OP_R8: *out = readb(a); return 1;
	case OP_R16: *out = readw(a); return 1;
	case OP_R32: *out = readl(a); return 1;
	case OP_R64: *out = readq(a); return 1;
	case OP_W8: writeb(op->value, a); break;
	case OP_W16: writew(op->value, a); break;
	case OP_W32: writel(op->value, a); break;
	case OP_W64: writeq(op->value, a); break;
	case OP_MRS: *out = mrs(op->addr); return 1;
	case OP_MSR: msr(op->addr, op->value); break;
	}
	dsb(sy);
	isb();
	return 0;
}

static struct mailbox {
	const struct op *volatile op;   /* NULL: idle; (void *)1: leave */
	volatile u64 value;
	volatile int has_value;
	volatile int done;
} box[NR_CPUS];

static void worker(void *arg)
{
	struct mailbox *mb = &box[(int)(uintptr_t)arg];

	for (;;) {
		const struct op *op = mb->op;
		u64 v = 0;

		if (!op)
			continue;
		if (op == (const struct op *)1)
			return;
		mb->has_value = run(op, &v);
		mb->value = v;
		mb->op = NULL;
		dsb(sy);
		mb->done = 1;
	}
}

int main(void)
{
	u64 count = *(volatile u64 *)SCRIPT_ADDR;
	const struct op *ops = (const struct op *)(SCRIPT_ADDR + 8);
	bool started[NR_CPUS] = { true };

	for (u64 i = 0; i < count; i++) {
		const struct op *op = &ops[i];
		int cpu = op->cpu, has;
		u64 v = 0;

		if (op->kind == OP_END)
			break;
		if (cpu == 0 || cpu >= NR_CPUS) {
			has = run(op, &v);
		} else {
			if (!started[cpu]) {
				started[cpu] = true;
				smp_boot_secondary(cpu, worker, (void *)(uintptr_t)cpu);
			}
			box[cpu].done = 0;
			dsb(sy);
			box[cpu].op = op;
			while (!box[cpu].done)
				;
			has = box[cpu].has_value;
			v = box[cpu].value;
		}
		if (has)
			printf("=%llx\n", (unsigned long long)v);
	}
	for (int cpu = 1; cpu < NR_CPUS; cpu++) {
		if (started[cpu]) {
			box[cpu].op = (const struct op *)1;
			smp_wait_cpu_off(cpu);
		}
	}
	printf("END\n");
	return 0;
}
