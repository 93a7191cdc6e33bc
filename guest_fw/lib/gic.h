/*
 * The interrupt controller of QEMU's virt board for guest tests (gic.c): GICv2 (IHI 0048B: distributor
 * 0x0800_0000, CPU interface 0x0801_0000) or GICv3 (IHI 0069: distributor 0x0800_0000, one 128 KiB
 * redistributor per CPU from 0x080A_0000, the ICC_* system registers), told apart by ID_AA64PFR0_EL1.GIC
 * (1: the GICv3 system register interface), as smmu-harness and QEMU both report it.
 *
 * gic_init() (boot CPU) enables the distributor and this CPU's interface, SPIs targeting CPU 0; gic_cpu_init()
 * the interface of a secondary. Interrupts are then Group 0 on a GICv2 (signalled as IRQ: GICC_CTLR.FIQEn = 0) and Group 1 on a
 * GICv3, priority 0xa0, PMR 0xff (nothing masked), SGIs enabled (a GICv2's always are), as kvm-unit-tests'
 * gic_enable_defaults leaves them.
 * install_irq_handler(fn): the vectors (exceptions.c) call fn(regs) for IRQs from any EL and stack.
 */
#ifndef GIC_H
#define GIC_H
#include "guest.h"

#define GICD_BASE 0x08000000UL
#define GICC_BASE 0x08010000UL          /* GICv2 */
#define GICR_BASE 0x080A0000UL          /* GICv3: RD_base of CPU n at + n * 0x20000, SGI_base at + 0x10000 */
#define GIC_SPURIOUS 1023
#define GIC_DEFAULT_PRIO 0xa0
#define PPI_VTIMER 27                   /* QEMU virt (include/hw/arm/virt.h): virtual timer */
#define PPI_PTIMER 30                   /* EL1 physical timer */
#define SPI_UART 33                     /* PL011: SPI 1 */

typedef void (*irq_fn)(struct pt_regs *regs);
void install_irq_handler(irq_fn fn);
void install_fiq_handler(irq_fn fn);

int gic_version(void);
void gic_init(void);
void gic_cpu_init(void);
void gic_enable_irq(unsigned int intid);
void gic_disable_irq(unsigned int intid);
void gic_set_priority(unsigned int intid, u8 prio);
void gic_set_group(unsigned int intid, int group);      /* 0 or 1 */
void gic_set_pending(unsigned int intid);
void gic_clear_pending(unsigned int intid);
void gic_clear_active(unsigned int intid);
bool gic_irq_pending(unsigned int intid);
bool gic_irq_active(unsigned int intid);
u32 gic_read_iar(void);                 /* acknowledge (GICv2: CPUID of an SGI's sender in [12:10]) */
void gic_write_eoir(u32 iar);
void gic_write_dir(u32 iar);
void gic_set_eoimode(bool split);       /* 1: EOIR drops the priority, DIR deactivates */
void gic_set_pmr(u8 pmr);
u32 gic_read_rpr(void);
u32 gic_read_hppir(void);
void gic_fiq_enable(void);             /* Group 0 signalled as FIQ */
u32 gic_read_iar_fiq(void);             /* GICv3: ICC_IAR0_EL1 */
void gic_write_eoir_fiq(u32 iar);
void gic_send_sgi0_self(unsigned int sgi);      /* GICv3: ICC_SGI0R_EL1 */
void gic_send_asgi1_self(unsigned int sgi);     /* GICv3: ICC_ASGI1R_EL1 */
void gic_send_sgi(int cpu, unsigned int sgi);
void gic_send_sgi_self(unsigned int sgi);
void gic_send_sgi_others(unsigned int sgi);
static inline unsigned int gic_iar_irqnr(u32 iar) { return iar & 0x3ff; }
static inline unsigned int gic_iar_sender(u32 iar) { return (iar >> 10) & 7; }   /* GICv2 SGIs */

static inline void local_irq_enable(void) { asm volatile("msr daifclr, #2" : : : "memory"); }
static inline void local_irq_disable(void) { asm volatile("msr daifset, #2" : : : "memory"); }
static inline void local_fiq_enable(void) { asm volatile("msr daifclr, #1" : : : "memory"); }
static inline void local_fiq_disable(void) { asm volatile("msr daifset, #1" : : : "memory"); }
static inline void wfi(void) { asm volatile("wfi" : : : "memory"); }
static inline u64 read_isr(void) { return read_sysreg(isr_el1); }
#endif
