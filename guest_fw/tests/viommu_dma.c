/*
 * A guest driving a virtio-iommu with MAP/UNMAP (virtio v1.2 5.13) through guest_fw/lib/viommu.c, with the
 * DMA test device at 0x0910_0000 as endpoint 0x10 behind it (`smmu-harness run --virtio-iommu`; with
 * `--viommu-pgtable` it also checks the extension's probe properties).
 *
 * Under qemu-system-aarch64 -M virt -cpu max -semihosting the same image runs too: QEMU 7.2 virt has
 * virtio-iommu only on PCI (`-device virtio-iommu-device` is refused), so the guest finds no virtio-iommu
 * among the 32 virtio-mmio transports, says so and exits 0 without touching anything else.
 *
 * Exit status: 0 all checks passed (or no virtio-iommu), else the number of failed checks.
 */
#include "guest.h"
#include "dmatest.h"
#include "viommu.h"

#define EP 0x10
#define IOVA 0x10000000UL

static u64 page[512] __aligned(4096);
static struct viommu vi;
static int fails;

static void check(bool ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	fails += !ok;
}

static int find_viommu(void)
{
	for (int i = 31; i >= 0; i--)
		if (readl(VIRTIO_MMIO_BASE(i)) == 0x74726976 && readl(VIRTIO_MMIO_BASE(i) + 8) == 23)
			return i;
	return -1;
}

int main(void)
{
	struct viommu_fault f;
	int idx = find_viommu(), r;
	u64 v;
	u32 s;

	if (idx < 0) {
		printf("viommu: no virtio-iommu on virtio-mmio\n");
		return 0;
	}
	r = viommu_init(&vi, VIRTIO_MMIO_BASE(idx), true);
	printf("viommu: transport %d, init %d, features %#llx\n", idx, r, vi.features);
	if (r)
		return 1;
	check(viommu_has(&vi, VIOMMU_F_MAP_UNMAP) && viommu_has(&vi, VIOMMU_F_PROBE), "MAP_UNMAP and PROBE");
	check(viommu_probe(&vi, EP) == VIOMMU_S_OK, "PROBE");
	check(vi.nr_resv == 1 && vi.resv[0].subtype == 1, "one RESV_MEM MSI region");
	if (viommu_has(&vi, VIOMMU_F_ATTACH_TABLE))
		check(vi.has_pgtf && vi.pgtf_format == 1 && vi.has_pstf && vi.asid_bits, "page-table format properties");
	page[0] = 0x5eedf00d;
	check(viommu_attach(&vi, 1, EP, 0) == VIOMMU_S_OK, "ATTACH");
	check(viommu_attach(&vi, 1, EP + 1, 0) == VIOMMU_S_NOENT, "ATTACH of an unknown endpoint: NOENT");
	check(viommu_map(&vi, 1, IOVA, IOVA + 0x1fff, (u64)(uintptr_t)page, VIOMMU_MAP_F_READ) == VIOMMU_S_OK, "MAP");
	check(viommu_map(&vi, 1, IOVA + 0x1000, IOVA + 0x1fff, (u64)(uintptr_t)page, 1) == VIOMMU_S_INVAL,
	      "overlapping MAP: INVAL");
	s = dmatest_read64(DMATEST_BASE, IOVA, &v);
	check(s == DMATEST_ST_DONE && v == 0x5eedf00d, "DMA through the mapping");
	check(viommu_unmap(&vi, 1, IOVA, IOVA + 0xfff) == VIOMMU_S_RANGE, "UNMAP splitting a mapping: RANGE");
	check(viommu_unmap(&vi, 1, IOVA, IOVA + 0x1fff) == VIOMMU_S_OK, "UNMAP");
	s = dmatest_read64(DMATEST_BASE, IOVA, &v);
	check(s & DMATEST_ST_FAULT, "DMA after UNMAP faults");
	check(viommu_read_fault(&vi, &f) && f.reason == VIOMMU_FAULT_R_MAPPING && f.endpoint == EP &&
	      f.address == IOVA && (f.flags & VIOMMU_FAULT_F_ADDRESS), "the fault on the event queue");
	check(viommu_detach(&vi, 1, EP) == VIOMMU_S_OK, "DETACH");
	printf("viommu: %d request kicks, %d failed\n", vi.kicks, fails);
	return fails;
}
