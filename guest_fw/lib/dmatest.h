/*
 * DMA test device access (register map: README.md "DMA test device", devmodel/dmatest.py). Commands complete
 * inside the write to CMD, or wait (STALLED: the transaction is stalled in the SMMU; PRI_WAIT: a page request
 * group is outstanding) until the SMMU's CMD_RESUME / CMD_PRI_RESP ends the wait; STATUS then says DONE,
 * FAULT (SMMU fault, FAULT_TYPE = event type), BUSERR, BADCMD, ATS_ERR or PRI_ERR. When the device is assigned to a VM, SID reads as the vSID the VMM gives it (the IORT mapping of
 * a real board) and is read-only.
 */
#ifndef GUEST_DMATEST_H
#define GUEST_DMATEST_H

#include "guest.h"

#define DMATEST_BASE 0x09100000UL
#define DMATEST_ID_VALUE 0x444D4154u   /* "DMAT" */

#define DMATEST_ID 0x00
#define DMATEST_STATUS 0x04
#define DMATEST_SID 0x08
#define DMATEST_SSID 0x0C
#define DMATEST_IOVA 0x10
#define DMATEST_LEN 0x18
#define DMATEST_CMD 0x1C
#define DMATEST_DATA 0x20
#define DMATEST_DST 0x28
#define DMATEST_FAULT_TYPE 0x30
#define DMATEST_COUNT 0x34
#define DMATEST_FAULT_ADDR 0x38
#define DMATEST_ATTR 0x40
#define DMATEST_PCIE_CTRL 0x44
#define DMATEST_PRI_STATUS 0x48
#define DMATEST_PRI_ALLOC 0x4C
#define DMATEST_STAG 0x50
#define DMATEST_PRG_INDEX 0x54
#define DMATEST_ATC_ENTRIES 0x58
#define DMATEST_ATC_INVS 0x5C
#define DMATEST_MSI_ADDR 0x60          /* completion MSI: a DMA write of MSI_DATA to MSI_ADDR (through the SMMU) */
#define DMATEST_MSI_DATA 0x68
#define DMATEST_MSI_CTRL 0x6C          /* bit0 EN */
#define DMATEST_MSI_COUNT 0x70
#define DMATEST_MSI_STATUS 0x74        /* bit0 SENT, bit1 FAULT, bit2 BUSERR, bit3 STALLED */
#define DMATEST_MSI_SENT (1u << 0)
#define DMATEST_MSI_FAULT (1u << 1)

#define DMATEST_CMD_READ64 1
#define DMATEST_CMD_WRITE64 2
#define DMATEST_CMD_COPY 3

#define DMATEST_ST_DONE (1u << 0)
#define DMATEST_ST_FAULT (1u << 1)
#define DMATEST_ST_BUSERR (1u << 2)
#define DMATEST_ST_BADCMD (1u << 3)
#define DMATEST_ST_STALLED (1u << 4)
#define DMATEST_ST_PRI_WAIT (1u << 5)
#define DMATEST_ST_ATS_ERR (1u << 6)
#define DMATEST_ST_PRI_ERR (1u << 7)
#define DMATEST_ST_WAITING (DMATEST_ST_STALLED | DMATEST_ST_PRI_WAIT)

#define DMATEST_PCIE_ATS_EN (1u << 0)   /* ATS Control.Enable */
#define DMATEST_PCIE_PRI_EN (1u << 1)   /* PRI Control.Enable */
#define DMATEST_PCIE_PRI_RESET (1u << 2)

#define DMATEST_SSV (1u << 31)

#define DMATEST_ATTR_PRIV (1u << 0)    /* privileged access */
#define DMATEST_ATTR_EXEC (1u << 1)    /* instruction fetch (reads only) */

static inline u32 dmatest_id(uintptr_t base) { return readl(base + DMATEST_ID); }
/* The completion MSI each ending command sends (addr = the doorbell's IOVA, data = the EventID); 0 disables. */
static inline void dmatest_set_msi(uintptr_t base, u64 addr, u32 data, bool enable)
{
	writeq(addr, base + DMATEST_MSI_ADDR);
	writel(data, base + DMATEST_MSI_DATA);
	writel(enable ? 1 : 0, base + DMATEST_MSI_CTRL);
}
static inline u32 dmatest_sid(uintptr_t base) { return readl(base + DMATEST_SID); }
static inline u32 dmatest_fault_type(uintptr_t base) { return readl(base + DMATEST_FAULT_TYPE); }

/* SubstreamID for the next commands; ssid < 0: none (SSV = 0). */
static inline void dmatest_set_ssid(uintptr_t base, int ssid)
{
	writel(ssid < 0 ? 0 : ((u32)ssid & 0xfffff) | DMATEST_SSV, base + DMATEST_SSID);
}

/* 64-bit read at iova through the SMMU; returns STATUS (DMATEST_ST_DONE on success). */
static inline u32 dmatest_read64(uintptr_t base, u64 iova, u64 *out)
{
	writeq(iova, base + DMATEST_IOVA);
	writel(DMATEST_CMD_READ64, base + DMATEST_CMD);
	*out = readq(base + DMATEST_DATA);
	return readl(base + DMATEST_STATUS);
}

static inline u32 dmatest_write64(uintptr_t base, u64 iova, u64 value)
{
	writeq(value, base + DMATEST_DATA);
	writeq(iova, base + DMATEST_IOVA);
	writel(DMATEST_CMD_WRITE64, base + DMATEST_CMD);
	return readl(base + DMATEST_STATUS);
}

static inline u32 dmatest_copy(uintptr_t base, u64 src, u64 dst, u32 len)
{
	writeq(src, base + DMATEST_IOVA);
	writeq(dst, base + DMATEST_DST);
	writel(len, base + DMATEST_LEN);
	writel(DMATEST_CMD_COPY, base + DMATEST_CMD);
	return readl(base + DMATEST_STATUS);
}

/* PCIe function set-up as pci_enable_pri / pci_enable_ats do it: PRI allocation, then the enables. */
static inline void dmatest_enable_ats_pri(uintptr_t base, u32 pri_reqs)
{
	writel(pri_reqs, base + DMATEST_PRI_ALLOC);
	writel(DMATEST_PCIE_ATS_EN | (pri_reqs ? DMATEST_PCIE_PRI_EN : 0), base + DMATEST_PCIE_CTRL);
}

#endif
