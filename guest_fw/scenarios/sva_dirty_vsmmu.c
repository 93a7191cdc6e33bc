/*
 * Scenario sva-dirty through the VMM's vSMMU (harness/vmm.py with httu=True): the guest installs a stage-1
 * vSTE whose CD shares its CPU tables with HA = HD = 1 (after checking IDR0.HTTU = 2), and after its TLBI
 * VAE1IS + DSB ISH also sends TLBI_NH_VA + CMD_SYNC unless the vSMMU advertises BTM (dirty.h has the rounds).
 * Parameters: 0 rounds.
 */
#include "dirty.h"
#include "vsmmu.h"

static struct vsmmu smmu;

static void forward_by_vsmmu(u64 asid, u64 va)
{
	vsmmu_tlbi_nh_va(&smmu, 0, asid, va, true);
}

int main(void)
{
	u64 rounds = port_param(0), asid, ste[8];
	int r;

	asid = dirty_setup();
	r = vsmmu_init(&smmu, VSMMU_BASE);
	if (r) {
		printf("sva-dirty: vSMMU init failed (%d)\n", r);
		return 3;
	}
	if (IDR0_HTTU(smmu.idr0) != 2) {
		printf("sva-dirty: the vSMMU offers no hardware dirty state (IDR0.HTTU %u)\n", IDR0_HTTU(smmu.idr0));
		return 4;
	}
	cd_share_cpu_tables_with(cd_table, CD_HA | CD_HD);
	vsmmu_ste_s1(ste, (u64)(uintptr_t)cd_table, 0);
	r = vsmmu_install_ste(&smmu, readl(DMATEST_BASE + DMATEST_SID), ste);
	if (r || vsmmu_events_pending(&smmu)) {
		printf("sva-dirty: installing the vSTE failed (%d, %u events)\n", r, vsmmu_events_pending(&smmu));
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);
	port_cmd(PORT_CMD_REPORT, 0, SCN_FRESH, 0);
	for (u64 i = 0; i < rounds; i++)
		dirty_round(i, asid, (smmu.idr0 & IDR0_BTM) ? 0 : forward_by_vsmmu);
	port_cmd(PORT_CMD_DONE, 1, !!(smmu.idr0 & IDR0_BTM), 0);
	return 0;
}
