/*
 * Scenario vmid-alias (seed 003): two VMs run this program, the same binary, so `buf` is at the same IPA in
 * both. Parameter 0 = role.
 *
 * Role A (device on a stage-2-only domain, IOVA = IPA): wait for gate 1 (its device is attached), DMA-read
 * buf (the SMMU caches the stage-2 translation of buf's IPA, tagged with A's VMID), report, open gate 2; wait
 * for gate 3 and report whether buf still holds A's value (report index 1).
 * Role B (SVA: nested, its CD shares its CPU tables, TEST_VA -> buf): attach, wait for gate 2, DMA-read
 * TEST_VA and report what it saw (index 0), DMA-write TEST_VA and check with the CPU that its own buf got it
 * (index 1), open gate 3.
 */
#include "scn.h"

#define TEST_VA 0x80000000UL
#define MARK_A 0xAAAA00000000AAAAULL
#define MARK_B 0xBBBB00000000BBBBULL
#define MARK_B_WRITE 0xBBBB0000DDDDBBBBULL
#define ROLE_A 0

static volatile u64 buf[512] __aligned(4096);
static u64 cd_table[8] __aligned(64);

static u64 outcome(u32 status, u64 v, u64 want)
{
	if (status != DMATEST_ST_DONE)
		return SCN_FAULT;
	return v == want ? SCN_FRESH : SCN_OTHER;
}

int main(void)
{
	u64 role = port_param(0), v, st;
	u32 s;

	mmu_map_identity_default();
	if (role == ROLE_A) {
		buf[0] = MARK_A;
		mmu_enable();
		port_wait_gate(1);
		s = dma_read64((u64)(uintptr_t)buf, &v);
		port_cmd(PORT_CMD_REPORT, 0, outcome(s, v, MARK_A), v);
		port_cmd(PORT_CMD_DONE, 2, 0, 0);
		port_wait_gate(3);
		v = buf[0];
		port_cmd(PORT_CMD_REPORT, 1, v == MARK_A ? SCN_FRESH : SCN_OTHER, v);
		return 0;
	}
	buf[0] = MARK_B;
	mmu_map(TEST_VA, (u64)(uintptr_t)buf, 4096, MT_NORMAL);
	mmu_enable();
	cd_share_cpu_tables(cd_table);
	st = port_cmd(PORT_CMD_ATTACH_NESTED, (u64)(uintptr_t)cd_table, 0, 0);
	if (st) {
		printf("vmid-alias: nested attach failed (errno %llu)\n", st);
		port_cmd(PORT_CMD_DONE, 3, 0, 0);
		return 2;
	}
	writel(DMATEST_ATTR_PRIV, DMATEST_BASE + DMATEST_ATTR);
	port_wait_gate(2);
	s = dma_read64(TEST_VA, &v);
	port_cmd(PORT_CMD_REPORT, 0, outcome(s, v, MARK_B), v);
	s = dma_write64(TEST_VA, MARK_B_WRITE);
	v = buf[0];
	port_cmd(PORT_CMD_REPORT, 1, s != DMATEST_ST_DONE ? SCN_FAULT : (v == MARK_B_WRITE ? SCN_FRESH : SCN_OTHER), v);
	port_cmd(PORT_CMD_DONE, 3, 0, 0);
	return 0;
}
