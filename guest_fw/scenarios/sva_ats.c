/*
 * Guest SVA with ATS (scenario sva-ats) through the VMM's vSMMU (harness/vmm.py with ats=True).
 *
 * The guest shares its CPU tables with its device and installs a vSTE with EATS=0b01: the host enables ATS at
 * the function, and the device caches the translations the SMMU gives it in its ATC. Each round (sva.h) the
 * device reads a page, the guest points the PTE at another page and runs TLBI VAE1IS + DSB ISH; with BTM the
 * SMMU's TLB follows the broadcast, without it the guest also sends TLBI_NH_VA + CMD_SYNC on its vSMMU (as
 * sva_vsmmu.c). Neither reaches the device's ATC: unless the guest also sends CMD_ATC_INV + CMD_SYNC (which the
 * VMM forwards to the host as an ATS Invalidate Request, arm_smmu_atc_inv_domain), the device's next read
 * still goes to the old page through its ATC.
 * Parameters: 0 rounds, 1 ATC_INV after the TLB invalidation (1, the default of the scenario) or not (0).
 */
#include "sva.h"
#include "vsmmu.h"

static struct vsmmu smmu;
static u32 vsid;
static bool btm, atc_inv;

static void invalidate(u64 asid, u64 va)
{
	if (!btm)
		vsmmu_tlbi_nh_va(&smmu, 0, asid, va, true);
	if (atc_inv)
		vsmmu_atc_inv(&smmu, vsid, -1, va & ~0xfffULL, 4096);
}

int main(void)
{
	u64 rounds = port_param(0), asid, ste[8];
	int r;

	atc_inv = port_param(1);
	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	asid = sva_setup(rounds);
	r = vsmmu_init(&smmu, VSMMU_BASE);
	if (r) {
		printf("sva-ats: vSMMU init failed (%d)\n", r);
		return 3;
	}
	if (!(smmu.idr0 & IDR0_ATS)) {
		printf("sva-ats: the vSMMU offers no ATS (IDR0 %#x)\n", smmu.idr0);
		return 4;
	}
	btm = smmu.idr0 & IDR0_BTM;
	vsid = readl(DMATEST_BASE + DMATEST_SID);
	cd_share_cpu_tables(cd_table);
	vsmmu_ste_s1(ste, (u64)(uintptr_t)cd_table, 0);
	ste[1] |= STE1_EATS_TRANS;
	r = vsmmu_install_ste(&smmu, vsid, ste);
	if (r || vsmmu_events_pending(&smmu)) {
		printf("sva-ats: installing the vSTE failed (%d, %u events)\n", r, vsmmu_events_pending(&smmu));
		return 2;
	}
	dmatest_enable_ats_pri(DMATEST_BASE, 0);
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);
	for (u64 i = 0; i < rounds; i++)
		sva_round(i, asid, invalidate);
	port_cmd(PORT_CMD_DONE, 1, btm, readl(DMATEST_BASE + DMATEST_ATC_INVS));
	return 0;
}
