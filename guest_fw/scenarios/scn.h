/*
 * Guest side of the end-to-end scenarios (harness/scenarios/): the DMA test device, the SMMU context
 * descriptor the guest owns in nested mode, and the scenario port.
 *
 * DMA test device at IPA 0x0910_0000 (devmodel/dmatest.py register map; QEMU iommu-testdev-like): its DMA
 * goes through the physical SMMU model with the StreamID the host gave it.
 *
 * The scenario port at IPA 0x0911_0000 (harness/scenarios/platform.py `HostPort`) is a hypercall to the VMM
 * for guests without a vSMMU: ATTACH_NESTED hands the VMM the CD table's IPA and the VMM does what a vSMMU's
 * CFGI_STE of that vSTE would make it do (IOMMU_VIOMMU_ALLOC, IOMMU_VDEVICE_ALLOC, nested IOMMU_HWPT_ALLOC,
 * attach, through the host's iommufd and SMMU driver); INV is a paravirtual TLBI_NH_VA + CMD_SYNC
 * (IOMMU_HWPT_INVALIDATE). It also carries the scenario's parameters and per-round reports. Every access to
 * it is a trap to the host (a VM exit).
 *
 * CD layout: IHI 0070 5.4 (also devmodel/smmuv3/cd.py CD_LAYOUT, Linux CTXDESC_CD_0_*): word 0 T0SZ[5:0]
 * TG0[7:6] IR0[9:8] OR0[11:10] SH0[13:12] EPD0 14 EPD1 30 V 31 IPS[34:32] AA64 41 R 45 A 46 ASET 47
 * ASID[63:48]; word 1 TTB0[51:4]; word 3 MAIR.
 */
#ifndef SCN_H
#define SCN_H
#include "guest.h"
#include "dmatest.h"

#define PORT_BASE 0x09110000UL
#define PORT_CMD 0x00
#define PORT_ARG0 0x08
#define PORT_ARG1 0x10
#define PORT_ARG2 0x18
#define PORT_STATUS 0x20
#define PORT_GATE 0x28
#define PORT_INV 0x30              /* W: forward one TLBI_NH_VA (value in TLBI Xt format); read STATUS to sync */
#define PORT_PARAM(i) (0x100 + 8 * (i))

#define PORT_CMD_ATTACH_NESTED 1   /* ARG0 = CD table IPA, ARG1 = S1CDMAX: STATUS = 0 or an errno */
#define PORT_CMD_REPORT 2          /* ARG0 = round, ARG1 = outcome (SCN_*), ARG2 = value read */
#define PORT_CMD_YIELD 3           /* give the CPU back to the host scheduler (ends the run slice) */
#define PORT_CMD_DONE 5            /* ARG0 = step reached (opens other VMs' gates) */

/* outcomes reported per DMA */
#define SCN_FRESH 0                /* the DMA saw the value the guest's page tables say */
#define SCN_STALE 1                /* the DMA saw the page the guest unmapped before its TLBI + DSB */
#define SCN_FAULT 2                /* the DMA faulted */
#define SCN_OTHER 3                /* the DMA saw some other value (another VM's memory) */

static inline u64 port_param(int i) { return readq(PORT_BASE + PORT_PARAM(i)); }

static inline u64 port_cmd(u64 cmd, u64 a0, u64 a1, u64 a2)
{
	writeq(a0, PORT_BASE + PORT_ARG0);
	writeq(a1, PORT_BASE + PORT_ARG1);
	writeq(a2, PORT_BASE + PORT_ARG2);
	writeq(cmd, PORT_BASE + PORT_CMD);
	return readq(PORT_BASE + PORT_STATUS);
}

/*
 * Forward one invalidation the way a guest SMMU driver does on its vSMMU: one trapped write (the CMDQ_PROD
 * write publishing TLBI_NH_VA + CMD_SYNC) and one trapped read (polling CMDQ_CONS for the sync).
 */
static inline u64 port_forward_tlbi_va(u64 asid, u64 va)
{
	writeq((asid << 48) | ((va >> 12) & ((1ULL << 44) - 1)), PORT_BASE + PORT_INV);
	return readq(PORT_BASE + PORT_STATUS);
}

/* Yield the CPU: tell the host, then WFI (the run slice ends there; KVM puts the vCPU). */
static inline void port_yield(u64 round)
{
	port_cmd(PORT_CMD_YIELD, round, 0, 0);
	asm volatile("wfi" : : : "memory");
}

static inline void port_wait_gate(u64 step)
{
	while (readq(PORT_BASE + PORT_GATE) < step)
		;
}

/* One 64-bit DMA through the SMMU by the VM's assigned DMA test device; returns its STATUS register. */
static inline u32 dma_read64(u64 iova, u64 *val) { return dmatest_read64(DMATEST_BASE, iova, val); }
static inline u32 dma_write64(u64 iova, u64 val) { return dmatest_write64(DMATEST_BASE, iova, val); }

#define CD_V (1ULL << 31)
#define CD_EPD1 (1ULL << 30)
#define CD_AA64 (1ULL << 41)
#define CD_R (1ULL << 45)
#define CD_A (1ULL << 46)
#define CD_ASET (1ULL << 47)
#define CD_HD (1ULL << 42)            /* hardware dirty-state update (with HA) */
#define CD_HA (1ULL << 43)            /* hardware Access flag update */
#define CD_S (1ULL << 44)             /* stall faulting transactions */

/*
 * A CD sharing the CPU's EL1&0 stage-1 tables (TTBR0_EL1, TCR_EL1.T0SZ, MAIR_EL1, the ASID in TTBR0_EL1):
 * what SVA means. ASET = 0 so the SMMU takes the CPU's broadcast TLBIs by ASID. `extra0`: more word-0 bits
 * (CD.S 44 to stall faults, CD.HA 43 / CD.HD 42 for hardware access/dirty updates).
 */
static inline void cd_share_cpu_tables_with(u64 *cd, u64 extra0)
{
	u64 ttbr = read_sysreg(ttbr0_el1);
	u64 tcr = read_sysreg(tcr_el1);
	u64 asid = ttbr >> 48;
	u64 t0sz = tcr & 0x3f;
	u64 tg0 = (tcr >> 14) & 3;          /* TCR.TG0 and CD.TG0 share the encoding (0 = 4K) */
	u64 ips = (tcr >> 32) & 7;
	cd[1] = ttbr & 0x000ffffffffffff0ULL;
	cd[2] = 0;
	cd[3] = read_sysreg(mair_el1);
	for (int i = 4; i < 8; i++)
		cd[i] = 0;
	dsb(ishst);
	cd[0] = t0sz | (tg0 << 6) | (1ULL << 8) | (1ULL << 10) | (3ULL << 12) | CD_EPD1 | CD_V | (ips << 32) |
		CD_AA64 | CD_R | CD_A | (asid << 48) | extra0;
	dsb(ish);
}

static inline void cd_share_cpu_tables(u64 *cd) { cd_share_cpu_tables_with(cd, 0); }

/* The level-3 descriptor of `va` in the CPU's own tables (4K granule, 39-bit VA as guest_fw/lib/mmu.c). */
static inline u64 *pte_of(u64 va)
{
	u64 *t = (u64 *)(uintptr_t)(read_sysreg(ttbr0_el1) & 0x0000fffffffff000ULL);
	for (int level = 1; level < 3; level++)
		t = (u64 *)(uintptr_t)(t[(va >> (39 - 9 * level)) & 511] & 0x0000fffffffff000ULL);
	return &t[(va >> 12) & 511];
}

/* TLBI VAE1IS operand: ASID[63:48], VA[55:12] in Xt[43:0] */
static inline void tlbi_vae1is(u64 asid, u64 va)
{
	u64 xt = (asid << 48) | ((va >> 12) & ((1ULL << 44) - 1));
	asm volatile("tlbi vae1is, %0" : : "r"(xt) : "memory");
}

#endif
