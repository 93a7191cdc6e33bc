/*
 * Benchmark guest for tools/benches/qemu.py (harness half only): DMA through the SMMU model with a stage-1
 * and a stage-2 mapping. It needs the VMM set-up of harness/vmm.py (`setup_nested_vm`: a vSMMU at
 * 0x0905_0000, the DMA test device assigned at 0x0910_0000, the host's stage 2 under the guest's stage 1).
 * The guest brings its vSMMU up, maps IOVA -> buf (stage 1, 4 KiB page), installs the S1 STE of the device's
 * vSID, then `iterations` times starts a READ64 DMA at IOVA + (i % 512) * 8 and checks its status and data:
 * each DMA is one MMIO exit to the device, a translation through both stages (IOTLB hits after the first),
 * and a bus read. Exits 0 when every DMA returned the word it should.
 */
#include "guest.h"
#include "dmatest.h"
#include "pgtable.h"
#include "vsmmu.h"

#define IOVA 0x10000000ULL
#define ASID 5

static u64 buf[512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static struct vsmmu smmu;
static struct pgtable pt;
volatile u64 iterations = 100000;

int main(void)
{
	const uintptr_t dev = DMATEST_BASE;
	u64 ste[8], v = 0, n = iterations, bad = 0;
	int r;

	r = vsmmu_init(&smmu, VSMMU_BASE);
	r |= pgtable_init(&pt, 39);
	r |= pgtable_map(&pt, IOVA, (u64)(uintptr_t)buf, 4096, PGT_READ | PGT_WRITE, false);
	vsmmu_cd_write(cd_table, ASID, &pt, true);
	vsmmu_ste_s1(ste, (u64)(uintptr_t)cd_table, 0);
	r |= vsmmu_install_ste(&smmu, dmatest_sid(dev), ste);
	if (r) {
		printf("dma_loop: set-up failed (%d)\n", r);
		return 1;
	}
	for (int i = 0; i < 512; i++)
		buf[i] = 0xd0a0000000000000ULL | i;
	for (u64 i = 0; i < n; i++) {
		u32 st = dmatest_read64(dev, IOVA + (i % 512) * 8, &v);
		bad += st != DMATEST_ST_DONE || v != (0xd0a0000000000000ULL | (i % 512));
	}
	printf("dma_loop: %llu DMAs, %llu bad\n", (unsigned long long)n, (unsigned long long)bad);
	return bad != 0;
}
