/*
 * smmu-harness guest runtime: one header for freestanding C guests.
 *
 * Console on the PL011 at 0x0900_0000, PSCI over HVC (SMC at EL2), Arm semihosting (HLT #0xF000) for exit,
 * a kvm-unit-tests-style report API, a printf subset, string helpers, MMIO accessors, SMP helpers, a
 * small stage-1 MMU helper (4 KiB granule, 39-bit VA) and exception handlers (install_exception_handler).
 * The same binary runs under smmu-harness and under
 * `qemu-system-aarch64 -M virt -cpu max -semihosting -kernel guest.elf`.
 */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed long long s64;
typedef unsigned long uintptr_t;
typedef unsigned long size_t;
typedef long ssize_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define __noreturn __attribute__((noreturn))
#define __printf(a, b) __attribute__((format(printf, a, b)))
#define __aligned(x) __attribute__((aligned(x)))

/* Board (QEMU virt layout) */
#define PL011_BASE 0x09000000UL
#define RAM_BASE 0x40000000UL
#ifndef NR_CPUS
#define NR_CPUS 16              /* = GUEST_NR_CPUS in link.ld (its per-CPU stacks); build --max-cpus N sets both */
#endif

/* MMIO accessors: single-copy-atomic accesses with the width given (Arm ARM B2.2.1). */
static inline void writeb(u8 v, uintptr_t a) { asm volatile("strb %w0, [%1]" : : "r"(v), "r"(a) : "memory"); }
static inline void writew(u16 v, uintptr_t a) { asm volatile("strh %w0, [%1]" : : "r"(v), "r"(a) : "memory"); }
static inline void writel(u32 v, uintptr_t a) { asm volatile("str %w0, [%1]" : : "r"(v), "r"(a) : "memory"); }
static inline void writeq(u64 v, uintptr_t a) { asm volatile("str %0, [%1]" : : "r"(v), "r"(a) : "memory"); }
static inline u8 readb(uintptr_t a) { u32 v; asm volatile("ldrb %w0, [%1]" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline u16 readw(uintptr_t a) { u32 v; asm volatile("ldrh %w0, [%1]" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline u32 readl(uintptr_t a) { u32 v; asm volatile("ldr %w0, [%1]" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline u64 readq(uintptr_t a) { u64 v; asm volatile("ldr %0, [%1]" : "=r"(v) : "r"(a) : "memory"); return v; }

#define dsb(opt) asm volatile("dsb " #opt : : : "memory")
#define dmb(opt) asm volatile("dmb " #opt : : : "memory")
#define isb() asm volatile("isb" : : : "memory")
#define read_sysreg(r) ({ u64 __v; asm volatile("mrs %0, " #r : "=r"(__v)); __v; })
#define write_sysreg(v, r) asm volatile("msr " #r ", %0" : : "r"((u64)(v)))

static inline int current_el(void) { return (read_sysreg(CurrentEL) >> 2) & 3; }

/* string.c */
void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *d, const char *s);

/* console.c / printf.c */
void console_init(void);
void putc(char c);
void puts(const char *s);          /* no newline added */
int printf(const char *fmt, ...) __printf(1, 2);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* Spinlock (exclusives; acquire/release). */
struct spinlock { volatile u32 v; };
void spin_lock(struct spinlock *l);
void spin_unlock(struct spinlock *l);

/* start.S: x0-x3 as the boot CPU entered _start. QEMU's -kernel boot of a raw image (and smmu-harness's)
 * puts the device tree address in x0 (Linux Documentation/arch/arm64/booting.rst); an ELF gets zeros. */
extern u64 boot_args[4];

/* semihosting.c: Arm semihosting, HLT #0xF000 */
u64 semihosting_call(u64 op, u64 param);
void semihosting_write0(const char *s);
void __noreturn exit(int status);     /* SYS_EXIT(ADP_Stopped_ApplicationExit, status) */

/* psci.c: PSCI 1.1 (DEN0022), HVC at EL1, SMC at EL2 */
#define PSCI_VERSION 0x84000000U
#define PSCI_CPU_SUSPEND 0xC4000001U
#define PSCI_CPU_OFF 0x84000002U
#define PSCI_CPU_ON 0xC4000003U
#define PSCI_AFFINITY_INFO 0xC4000004U
#define PSCI_MIGRATE_INFO_TYPE 0x84000006U
#define PSCI_SYSTEM_OFF 0x84000008U
#define PSCI_SYSTEM_RESET 0x84000009U
#define PSCI_FEATURES 0x8400000AU
#define PSCI_RET_SUCCESS 0
#define PSCI_RET_NOT_SUPPORTED (-1)
#define PSCI_RET_INVALID_PARAMETERS (-2)
#define PSCI_RET_ALREADY_ON (-4)
#define PSCI_AFF_ON 0
#define PSCI_AFF_OFF 1
s64 psci_call(u32 fn, u64 a1, u64 a2, u64 a3);
u32 psci_version(void);
s64 psci_cpu_on(u64 mpidr, u64 entry, u64 context);
s64 psci_affinity_info(u64 mpidr);
void __noreturn psci_cpu_off(void);
void __noreturn psci_system_off(void);

/* smp.c */
u64 cpu_mpidr(int cpu);        /* MPIDR affinity of CPU number `cpu` */
int smp_processor_id(void);
int nr_cpus_present(void);     /* CPUs PSCI knows (AFFINITY_INFO probe) */
/* Start `cpu` running fn(arg); returns the PSCI result. The CPU powers off when fn returns. */
s64 smp_boot_secondary(int cpu, void (*fn)(void *), void *arg);
s64 smp_wait_cpu_off(int cpu);   /* 0 once it is OFF; the PSCI error if it does not exist */

/* report.c: kvm-unit-tests-style results */
void report_prefix_push(const char *prefix);
void report_prefix_pop(void);
void report(bool pass, const char *fmt, ...) __printf(2, 3);
void report_skip(const char *fmt, ...) __printf(1, 2);
void report_info(const char *fmt, ...) __printf(1, 2);
int report_summary(void);      /* prints SUMMARY:, returns 0 (all passed) or 1 */

/* mmu.c: stage 1, 4 KiB granule, 39-bit VA (T0SZ = 25, levels 1-3), TTBR0 only; EL1 or EL2 regime */
#define MT_DEVICE 0            /* MAIR attr0: Device-nGnRnE */
#define MT_NORMAL 1            /* MAIR attr1: Normal, Write-Back */
void mmu_map(u64 va, u64 pa, u64 size, int mt);   /* 1 GiB / 2 MiB blocks where aligned, else 4 KiB pages */
void mmu_map_identity_default(void);              /* 0-1 GiB device, RAM (1 GiB at 0x4000_0000) normal */
void mmu_enable(void);
void mmu_disable(void);
bool mmu_enabled(void);

/*
 * exceptions.c (vectors in start.S): synchronous exceptions from the current EL, kvm-unit-tests style.
 * install_exception_handler(ec, fn): the vectors call fn(regs, esr) for exceptions with ESR.EC == ec taken
 * from the current EL; fn may change regs (e.g. regs->elr += 4 skips the faulting instruction) and the
 * vectors ERET to regs->elr. fn = NULL uninstalls. Unhandled exceptions print the facts and exit 139 (aborts,
 * EC 0x20-0x27) or 132; under smmu-harness, __harness_unhandled_exception() ends the run first with the
 * harness's own one-line death message and the same status.
 */
struct pt_regs {
	u64 regs[31];           /* x0-x30 at the exception */
	u64 sp;                 /* SP at the exception (SPx vectors: the handler's SP before the frame) */
	u64 elr;                /* ELR_ELx: where the vectors return to */
	u64 spsr;               /* SPSR_ELx: PSTATE restored by the ERET */
	u64 esr;                /* ESR_ELx */
	u64 far;                /* FAR_ELx (meaningful for aborts) */
};
#define PT_REGS_SIZE 288        /* sizeof(struct pt_regs), used by start.S */
#define ESR_EC(esr) ((unsigned int)((esr) >> 26) & 0x3f)
#define ESR_ISS(esr) ((unsigned int)(esr) & 0x1ffffff)
#define ESR_EC_UNKNOWN 0x00     /* undefined instruction (also TLBIs not allowed at the current EL) */
#define ESR_EC_SVC64 0x15
#define ESR_EC_IABT_LOW 0x20
#define ESR_EC_IABT_CUR 0x21
#define ESR_EC_DABT_LOW 0x24
#define ESR_EC_DABT_CUR 0x25
#define ESR_EC_BKPT_CUR 0x31     /* hardware breakpoint, same EL */
#define ESR_EC_SSTEP_CUR 0x33    /* software step, same EL */
#define ESR_EC_WPT_CUR 0x35      /* watchpoint, same EL */
#define ESR_EC_BRK64 0x3c
#define ESR_FSC(esr) ((unsigned int)(esr) & 0x3f)   /* DFSC/IFSC of aborts */
#define ESR_DABT_WNR (1U << 6)
#define VECTOR_SYNC_SP0 0       /* vector numbers: offset / 0x80 */
#define VECTOR_SYNC_SPX 4
typedef void (*exception_fn)(struct pt_regs *regs, unsigned int esr);
void install_exception_handler(int ec, exception_fn fn);
void do_exception(int vector, struct pt_regs *regs);
void __noreturn unhandled_exception(int vector);
void __harness_unhandled_exception(int vector, u64 esr, u64 elr, u64 far);

int main(void);

#endif
