/*
 * Guest SVA through the VMM's vSMMU (scenario no-btm-forwarding: the nested stage of Eric Auger's SMMUv3 series on the iommufd
 * stack of harness/vmm.py + harness/vsmmu.py, guest driver guest_fw/lib/vsmmu.c).
 *
 * The guest probes its vSMMU, installs a stage-1 vSTE for its device (vSID read from the device) whose CD
 * shares its CPU tables (the VMM turns CFGI_STE into a nested IOMMU_HWPT_ALLOC), then runs the same rounds as
 * sva_btm.c. After each TLBI VAE1IS + DSB ISH it also sends TLBI_NH_VA + CMD_SYNC on the vSMMU unless the
 * vSMMU advertises BTM (IDR0.BTM: the host says the CPU's broadcasts reach the physical SMMU with this VM's
 * VMID), as Linux's SVA code skips the command queue with BTM.
 * Parameters: 0 rounds, 1 force forwarding even with BTM.
 */
#include "sva.h"
#include "vsmmu.h"

static struct vsmmu smmu;

static void forward_by_vsmmu(u64 asid, u64 va)
{
	vsmmu_tlbi_nh_va(&smmu, 0, asid, va, true);
}

int main(void)
{
	u64 rounds = port_param(0), force = port_param(1), asid, ste[8];
	int r, forward;
	u32 vsid;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	asid = sva_setup(rounds);
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
	for (u64 i = 0; i < rounds; i++)
		sva_round(i, asid, forward ? forward_by_vsmmu : 0);
	port_cmd(PORT_CMD_DONE, 1, forward, 0);
	return 0;
}
