/*
 * GICv2 / GICv3 on QEMU's virt board (gic.h). Register offsets: IHI 0048B table 4-1 / 4-2, IHI 0069
 * tables 12-25 / 12-27 / 12-29; ICC encodings as Linux arch/arm64/include/asm/sysreg.h.
 */
#include "gic.h"

#define GICD_CTLR 0x000
#define GICD_TYPER 0x004
#define GICD_IGROUPR 0x080
#define GICD_ISENABLER 0x100
#define GICD_ICENABLER 0x180
#define GICD_ISPENDR 0x200
#define GICD_ICPENDR 0x280
#define GICD_ISACTIVER 0x300
#define GICD_ICACTIVER 0x380
#define GICD_IPRIORITYR 0x400
#define GICD_ITARGETSR 0x800
#define GICD_SGIR 0xf00
#define GICC_CTLR 0x00
#define GICC_PMR 0x04
#define GICC_IAR 0x0c
#define GICC_EOIR 0x10
#define GICC_RPR 0x14
#define GICC_HPPIR 0x18
#define GICC_DIR 0x1000
#define GICR_WAKER 0x14
#define GICR_SGI 0x10000                /* SGI_base: the banked registers of SGIs and PPIs at GICD offsets */

#define ICC_PMR_EL1 "s3_0_c4_c6_0"
#define ICC_IAR0_EL1 "s3_0_c12_c8_0"
#define ICC_EOIR0_EL1 "s3_0_c12_c8_1"
#define ICC_IGRPEN0_EL1 "s3_0_c12_c12_6"
#define ICC_SGI0R_EL1 "s3_0_c12_c11_7"
#define ICC_ASGI1R_EL1 "s3_0_c12_c11_6"
#define ICC_IAR1_EL1 "s3_0_c12_c12_0"
#define ICC_EOIR1_EL1 "s3_0_c12_c12_1"
#define ICC_HPPIR1_EL1 "s3_0_c12_c12_2"
#define ICC_CTLR_EL1 "s3_0_c12_c12_4"
#define ICC_SRE_EL1 "s3_0_c12_c12_5"
#define ICC_IGRPEN1_EL1 "s3_0_c12_c12_7"
#define ICC_DIR_EL1 "s3_0_c12_c11_1"
#define ICC_RPR_EL1 "s3_0_c12_c11_3"
#define ICC_SGI1R_EL1 "s3_0_c12_c11_5"
#define icc_read(r) ({ u64 __v; asm volatile("mrs %0, " r : "=r"(__v)); __v; })
#define icc_write(v, r) asm volatile("msr " r ", %0" : : "r"((u64)(v)) : "memory")

/* A CPU interface register write: the ICC_* system register (then an ISB, as its effects need) on a GICv3,
 * the GICC_* frame register on a GICv2. */
#define cpuif_write(v, icc, gicc) do {				\
	if (gic_version() == 3) {				\
		icc_write(v, icc);				\
		isb();						\
	} else {						\
		writel(v, GICC_BASE + (gicc));			\
	}							\
} while (0)

static int version;

int gic_version(void)
{
	if (!version)
		version = (read_sysreg(id_aa64pfr0_el1) >> 24) & 0xf ? 3 : 2;
	return version;
}

static u64 rd_base(void)
{
	return GICR_BASE + 0x20000UL * (u64)smp_processor_id();
}

/* The frame holding the per-INTID registers of `intid`: this CPU's SGI_base for SGIs/PPIs on a GICv3. */
static u64 bank(unsigned int intid)
{
	return gic_version() == 3 && intid < 32 ? rd_base() + GICR_SGI : GICD_BASE;
}

static void bit_write(unsigned int reg, unsigned int intid)
{
	writel(1U << (intid % 32), bank(intid) + reg + 4 * (intid / 32));
	dsb(sy);
}

static bool bit_read(unsigned int reg, unsigned int intid)
{
	return (readl(bank(intid) + reg + 4 * (intid / 32)) >> (intid % 32)) & 1;
}

void gic_cpu_init(void)
{
	unsigned int i;
	if (gic_version() == 2) {
		for (i = 0; i < 32; i += 4)
			writel(0xa0a0a0a0, GICD_BASE + GICD_IPRIORITYR + i);
		writel(0xff, GICC_BASE + GICC_PMR);
		writel(1, GICC_BASE + GICC_CTLR);               /* EnableGrp0: Group 0 as IRQ */
		return;
	}
	writel(0, rd_base() + GICR_WAKER);                      /* ProcessorSleep = 0 */
	writel(~0U, rd_base() + GICR_SGI + GICD_IGROUPR);       /* SGIs and PPIs: Group 1 */
	writel(0xffff, rd_base() + GICR_SGI + GICD_ISENABLER);  /* SGIs enabled (a GICv2's always are) */
	for (i = 0; i < 32; i += 4)
		writel(0xa0a0a0a0, rd_base() + GICR_SGI + GICD_IPRIORITYR + i);
	icc_write(icc_read(ICC_SRE_EL1) | 1, ICC_SRE_EL1);
	isb();
	icc_write(0xff, ICC_PMR_EL1);
	icc_write(1, ICC_IGRPEN1_EL1);
	isb();
}

void gic_init(void)
{
	unsigned int i, nr = 32 * ((readl(GICD_BASE + GICD_TYPER) & 0x1f) + 1);
	writel(0, GICD_BASE + GICD_CTLR);
	for (i = 32; i < nr; i += 32) {
		if (gic_version() == 3)
			writel(~0U, GICD_BASE + GICD_IGROUPR + i / 8);
		writel(~0U, GICD_BASE + GICD_ICENABLER + i / 8);
		writel(~0U, GICD_BASE + GICD_ICACTIVER + i / 8);
	}
	for (i = 32; i < nr; i += 4) {
		writel(0xa0a0a0a0, GICD_BASE + GICD_IPRIORITYR + i);
		if (gic_version() == 2)         /* SPIs to CPU 0 (GICv3: GICD_IROUTER resets to affinity 0) */
			writel(0x01010101, GICD_BASE + GICD_ITARGETSR + i);
	}
	/* GICv2: EnableGrp0; GICv3 (DS=1): EnableGrp0 | EnableGrp1, ARE is RAO */
	writel(gic_version() == 3 ? 0x13 : 1, GICD_BASE + GICD_CTLR);
	gic_cpu_init();
}

void gic_enable_irq(unsigned int intid) { bit_write(GICD_ISENABLER, intid); }
void gic_disable_irq(unsigned int intid) { bit_write(GICD_ICENABLER, intid); }
void gic_set_pending(unsigned int intid) { bit_write(GICD_ISPENDR, intid); }
void gic_clear_pending(unsigned int intid) { bit_write(GICD_ICPENDR, intid); }
void gic_clear_active(unsigned int intid) { bit_write(GICD_ICACTIVER, intid); }
bool gic_irq_pending(unsigned int intid) { return bit_read(GICD_ISPENDR, intid); }
bool gic_irq_active(unsigned int intid) { return bit_read(GICD_ISACTIVER, intid); }

void gic_set_priority(unsigned int intid, u8 prio)
{
	writeb(prio, bank(intid) + GICD_IPRIORITYR + intid);
	dsb(sy);
}

void gic_set_group(unsigned int intid, int group)
{
	u64 reg = bank(intid) + GICD_IGROUPR + 4 * (intid / 32);
	u32 v = readl(reg), bit = 1U << (intid % 32);
	writel(group ? v | bit : v & ~bit, reg);
}

u32 gic_read_iar(void)
{
	u32 iar = gic_version() == 3 ? (u32)icc_read(ICC_IAR1_EL1) : readl(GICC_BASE + GICC_IAR);
	dsb(sy);
	return iar;
}

void gic_write_eoir(u32 iar) { cpuif_write(iar, ICC_EOIR1_EL1, GICC_EOIR); }

void gic_write_dir(u32 iar) { cpuif_write(iar, ICC_DIR_EL1, GICC_DIR); }

void gic_set_eoimode(bool split)
{
	if (gic_version() == 3) {
		icc_write((icc_read(ICC_CTLR_EL1) & ~2UL) | (split ? 2 : 0), ICC_CTLR_EL1);
		isb();
	} else {
		u32 v = readl(GICC_BASE + GICC_CTLR);
		writel(split ? v | (1U << 9) : v & ~(1U << 9), GICC_BASE + GICC_CTLR);
	}
}

void gic_set_pmr(u8 pmr) { cpuif_write(pmr, ICC_PMR_EL1, GICC_PMR); }

u32 gic_read_rpr(void)
{
	return gic_version() == 3 ? (u32)icc_read(ICC_RPR_EL1) : readl(GICC_BASE + GICC_RPR);
}

u32 gic_read_hppir(void)
{
	return gic_version() == 3 ? (u32)icc_read(ICC_HPPIR1_EL1) : readl(GICC_BASE + GICC_HPPIR);
}

/* GICD_SGIR (v2): TargetListFilter [25:24], CPUTargetList [23:16], INTID [3:0];
 * ICC_SGI1R_EL1 (v3): IRM [40], Aff1 [23:16], INTID [27:24], TargetList [15:0] (Aff0 bits). */
static void sgi(unsigned int filter, int cpu, unsigned int id)
{
	if (gic_version() == 2) {
		dsb(sy);
		writel(filter << 24 | (filter ? 0 : 1U << (16 + cpu)) | (id & 0xf), GICD_BASE + GICD_SGIR);
		return;
	}
	u64 v = (u64)(id & 0xf) << 24;
	if (filter == 1)
		v |= 1ULL << 40;
	else
		v |= (u64)(cpu / 16) << 16 | 1ULL << (cpu % 16);
	dsb(sy);
	icc_write(v, ICC_SGI1R_EL1);
	isb();
}

void gic_send_sgi(int cpu, unsigned int id) { sgi(0, cpu, id); }
void gic_send_sgi_others(unsigned int id) { sgi(1, 0, id); }

void gic_send_sgi_self(unsigned int id)
{
	if (gic_version() == 2)
		sgi(2, 0, id);
	else
		sgi(0, smp_processor_id(), id);
}

/* Group 0 as FIQ: GICv2 GICC_CTLR.FIQEn [3] (IHI 0048B 4.4.1), GICv3 ICC_IGRPEN0_EL1 (Group 0 is FIQ there). */
void gic_fiq_enable(void)
{
	if (gic_version() == 2) {
		writel(readl(GICC_BASE + GICC_CTLR) | (1U << 3), GICC_BASE + GICC_CTLR);
		return;
	}
	icc_write(1, ICC_IGRPEN0_EL1);
	isb();
}

u32 gic_read_iar_fiq(void)
{
	u32 iar;

	if (gic_version() == 2)
		return gic_read_iar();          /* one acknowledge register for both groups */
	iar = (u32)icc_read(ICC_IAR0_EL1);
	dsb(sy);
	return iar;
}

void gic_write_eoir_fiq(u32 iar) { cpuif_write(iar, ICC_EOIR0_EL1, GICC_EOIR); }   /* GICv2: one EOIR */

/* GICv3 only: an SGI to this CPU through ICC_SGI0R_EL1 / ICC_ASGI1R_EL1 (the ICC_SGI1R_EL1 layout). */
static u64 sgi_self_value(unsigned int id)
{
	int cpu = smp_processor_id();

	return (u64)(id & 0xf) << 24 | (u64)(cpu / 16) << 16 | 1ULL << (cpu % 16);
}

void gic_send_sgi0_self(unsigned int id)
{
	dsb(sy);
	icc_write(sgi_self_value(id), ICC_SGI0R_EL1);
	isb();
}

void gic_send_asgi1_self(unsigned int id)
{
	dsb(sy);
	icc_write(sgi_self_value(id), ICC_ASGI1R_EL1);
	isb();
}
