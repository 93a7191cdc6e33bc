/*
 * The virtio-iommu scenario's guest (harness/scenarios/virtio_iommu.py): the SVA-style rounds of sva.h with
 * the DMA test device behind a virtio-iommu (guest_fw/lib/viommu.c) instead of an SMMU the guest programs.
 *
 * mode 0 (MAP/UNMAP, virtio 1.2): ATTACH the endpoint to a domain, MAP IOVA TEST_VA + i -> A_i; each round
 *   DMA-reads the IOVA, changes the mapping (UNMAP, MAP -> B_i: the VMM shadows both into the host IOMMU),
 *   DMA-reads again and reports fresh (B_i) / stale (A_i).
 * mode 1 (page-table sharing): ATTACH_TABLE with the CPU's own stage-1 context (TTBR0_EL1, TCR_EL1, MAIR_EL1,
 *   the ASID of TTBR0_EL1), then sva_round: repoint the PTE, TLBI VAE1IS + DSB ISH, and an INVALIDATE
 *   (VA scope, leaf, 4 KiB) unless the PASID_TABLE_FMT property says BTM (the guest then relies on its
 *   broadcasts, as Linux's SVA code skips the command queue with BTM).
 * Parameters: 0 rounds, 1 mode, 2 force INVALIDATE even with BTM, 3 the endpoint ID (the device tree's
 * `iommus = <&viommu ID>` cell). Exit codes: 2 attach refused, 3 no virtio-iommu, 4 PROBE failed, 5 the
 * extension is not offered, 6 a MAP/UNMAP failed.
 */
#include "sva.h"
#include "viommu.h"

#define DOMAIN 1
#define MODE_MAP 0
#define MODE_TABLE 1

static struct viommu vi;

static void invalidate_va(u64 asid, u64 va)
{
	u8 st = viommu_invalidate(&vi, DOMAIN, VIOMMU_INVAL_S_VA, VIOMMU_INVAL_F_LEAF, 0, asid, va, 1, 12);

	if (st != VIOMMU_S_OK)
		printf("viommu: INVALIDATE %#llx failed (status %u)\n", va, st);
}

static int map_round(u64 i)
{
	u64 iova = TEST_VA + i * 4096, v;
	u32 s;

	s = dma_read64(iova, &v);
	port_cmd(PORT_CMD_REPORT, 2 * i, sva_classify(s, v, sva_val_a(i), sva_val_b(i)), v);
	if (viommu_unmap(&vi, DOMAIN, iova, iova + 4095) != VIOMMU_S_OK ||
	    viommu_map(&vi, DOMAIN, iova, iova + 4095, (u64)(uintptr_t)page_b[i],
		       VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE) != VIOMMU_S_OK)
		return 6;
	s = dma_read64(iova, &v);
	port_cmd(PORT_CMD_REPORT, 2 * i + 1, sva_classify(s, v, sva_val_b(i), sva_val_a(i)), v);
	port_yield(i);
	return 0;
}

static int run_map(u64 rounds, u32 ep)
{
	u8 st = viommu_attach(&vi, DOMAIN, ep, 0);

	if (st != VIOMMU_S_OK) {
		printf("viommu: ATTACH failed (status %u)\n", st);
		return 2;
	}
	for (u64 i = 0; i < rounds; i++)
		if (viommu_map(&vi, DOMAIN, TEST_VA + i * 4096, TEST_VA + i * 4096 + 4095, (u64)(uintptr_t)page_a[i],
			       VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE) != VIOMMU_S_OK)
			return 6;
	for (u64 i = 0; i < rounds; i++)
		if (map_round(i))
			return 6;
	port_cmd(PORT_CMD_DONE, 1, 0, 0);
	return 0;
}

static int run_table(u64 rounds, u64 asid, u32 ep, bool force)
{
	bool forward;
	u8 st;

	if (!viommu_has(&vi, VIOMMU_F_ATTACH_TABLE) || !vi.has_pgtf) {
		printf("viommu: page-table sharing is not offered\n");
		return 5;
	}
	st = viommu_attach_cpu_tables(&vi, DOMAIN, ep);
	if (st != VIOMMU_S_OK) {
		printf("viommu: ATTACH_TABLE failed (status %u)\n", st);
		return 2;
	}
	forward = force || !(vi.pstf_flags & VIOMMU_PSTF_F_BTM);
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);     /* the CPU's tables map EL1 pages */
	for (u64 i = 0; i < rounds; i++)
		sva_round(i, asid, forward ? invalidate_va : 0);
	port_cmd(PORT_CMD_DONE, 1, forward, 0);
	return 0;
}

int main(void)
{
	u64 rounds = port_param(0), mode = port_param(1), force = port_param(2), asid;
	u32 ep = port_param(3);
	int r;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	asid = sva_setup(rounds);
	r = viommu_init(&vi, VIOMMU_MMIO_DEFAULT, mode == MODE_TABLE);
	if (r) {
		printf("viommu: init failed (%d)\n", r);
		return 3;
	}
	if (viommu_probe(&vi, ep) != VIOMMU_S_OK) {
		printf("viommu: PROBE of endpoint %#x failed\n", ep);
		return 4;
	}
	return mode == MODE_TABLE ? run_table(rounds, asid, ep, force) : run_map(rounds, ep);
}
