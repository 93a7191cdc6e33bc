/*
 * Guest SVA through the VMM's vSMMU (scenario no-btm-forwarding; seed 002's nested stage on the iommufd
 * stack of harness/vmm.py + harness/vsmmu.py, guest driver guest_fw/lib/vsmmu.c).
 *
 * The guest probes its vSMMU, installs a stage-1 vSTE for its device (vSID read from the device) whose CD
 * shares its CPU tables (the VMM turns CFGI_STE into a nested IOMMU_HWPT_ALLOC), then runs the same rounds as
 * sva_btm.c. After each TLBI VAE1IS + DSB ISH it also sends TLBI_NH_VA + CMD_SYNC on the vSMMU unless the
 * vSMMU advertises BTM (IDR0.BTM: the host says the CPU's broadcasts reach the physical SMMU with this VM's
 * VMID), as Linux's SVA code skips the command queue with BTM.
 * Parameters: 0 rounds, 1 force forwarding even with BTM.
 */
#include "scn.h"
#include "vsmmu.h"

#define TEST_VA 0x80000000UL
#define MAX_ROUNDS 64
#define OA_MASK 0x0000fffffffff000ULL

static u64 page_a[MAX_ROUNDS][512] __aligned(4096);
static u64 page_b[MAX_ROUNDS][512] __aligned(4096);
static u64 cd_table[8] __aligned(64);
static struct vsmmu smmu;

int main(void)
{
	u64 rounds = port_param(0), force = port_param(1), asid, ste[8], v;
	int r, forward;
	u32 s, vsid;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	for (u64 i = 0; i < rounds; i++) {
		page_a[i][0] = sva_val_a(i);
		page_b[i][0] = sva_val_b(i);
	}
	mmu_map_identity_default();
	for (u64 i = 0; i < rounds; i++)
		mmu_map(TEST_VA + i * 4096, (u64)(uintptr_t)page_a[i], 4096, MT_NORMAL);
	mmu_enable();
	asid = read_sysreg(ttbr0_el1) >> 48;
	r = vsmmu_init(&smmu, VSMMU_BASE);
	if (r) {
		printf("sva: vSMMU init failed (%d)\n", r);
		return 3;
	}
	vsid = readl(DMATEST_BASE + DMATEST_SID);
	cd_share_cpu_tables(cd_table);
	vsmmu_ste_s1(ste, (u64)(uintptr_t)cd_table, 0);
	r = vsmmu_install_ste(&smmu, vsid, ste);
	if (r || vsmmu_events_pending(&smmu)) {
		printf("sva: installing the vSTE failed (%d, %u events)\n", r, vsmmu_events_pending(&smmu));
		return 2;
	}
	forward = force || !(smmu.idr0 & IDR0_BTM);
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);
	for (u64 i = 0; i < rounds; i++) {
		u64 va = TEST_VA + i * 4096, *pte = pte_of(va);
		s = dma_read64(va, &v);
		port_cmd(PORT_CMD_REPORT, 2 * i, sva_classify(s, v, sva_val_a(i), sva_val_b(i)), v);
		*pte = (*pte & ~OA_MASK) | (u64)(uintptr_t)page_b[i];
		dsb(ishst);
		tlbi_vae1is(asid, va);
		dsb(ish);
		isb();
		if (forward)
			vsmmu_tlbi_nh_va(&smmu, 0, asid, va, true);
		s = dma_read64(va, &v);
		port_cmd(PORT_CMD_REPORT, 2 * i + 1, sva_classify(s, v, sva_val_b(i), sva_val_a(i)), v);
		port_yield(i);
	}
	port_cmd(PORT_CMD_DONE, 1, forward, 0);
	return 0;
}
