/*
 * virtio-iommu oracle guest: drives QEMU's virtio-iommu-pci (QEMU virt exposes virtio-iommu only on PCI)
 * through the modern virtio-pci transport and replays a script of requests the test loaded into RAM, so
 * tests/devmodel/virtio/test_iommu_qemu_oracle.py can send the same script to devmodel.virtio.iommu and
 * compare every reply. Built by that test with harness.build (guest_fw runtime); run with
 *   qemu-system-aarch64 -M virt,highmem=off -cpu max -m 128M -nodefaults -semihosting
 *     -device virtio-iommu-pci,addr=1.0 -device virtio-rng-pci,addr=2.0
 *     -device loader,file=<script>,addr=0x47000000,force-raw=on
 * (highmem=off puts the ECAM at 0x3f00_0000 and the 32-bit MMIO window at 0x1000_0000, where the MMU-off
 * runtime reaches them.)
 *
 * PCI: the ECAM of the generic host (PCI Express base 7.2.2), the virtio-pci capabilities (virtio v1.2 4.1.4)
 * and the common configuration layout (4.1.4.3); initialization as Linux's virtio_pci_modern.c, polling the
 * used ring instead of MSI-X. Script (little-endian): records {u32 readable, u32 writable, readable bytes
 * padded to 8}, ended by readable = 0xffffffff. Output lines (hex): "F lo hi" device features, "S status",
 * "C off value" device configuration words, "Q i used_len b0 b1 ..." the device-writable bytes of request i
 * (pre-filled with 0xee so unwritten bytes show), "E" at the end.
 */
#include "guest.h"

#define ECAM 0x3f000000UL
#define BAR_BASE 0x10000000UL
#define SCRIPT 0x47000000UL
#define DEVFN (1 << 3)                 /* 00:01.0 */

/* common configuration (virtio v1.2 4.1.4.3) */
#define DFSELECT 0x00
#define DF 0x04
#define GFSELECT 0x08
#define GF 0x0c
#define STATUS 0x14
#define Q_SELECT 0x16
#define Q_SIZE 0x18
#define Q_ENABLE 0x1c
#define Q_NOFF 0x1e
#define Q_DESC 0x20
#define Q_AVAIL 0x28
#define Q_USED 0x30

#define QN 16

static uintptr_t cfg(u32 off) { return ECAM + ((u32)DEVFN << 12) + off; }

static uintptr_t common, notify, devcfg;
static u32 notify_mult;

static u8 rings[2][3 * 4096] __aligned(4096);
static u8 rbuf[4096] __aligned(16);
static u8 wbuf[0x10100] __aligned(16);
static u16 avail_idx, used_seen;

static void find_caps(void)
{
	u64 bar = BAR_BASE;

	writel(0xffffffff, cfg(0x20));                 /* size BAR4 (64-bit memory BAR of virtio-pci) */
	writel(0xffffffff, cfg(0x24));
	writel((u32)bar, cfg(0x20));
	writel((u32)(bar >> 32), cfg(0x24));
	writel(readl(cfg(0x04)) | 0x6, cfg(0x04));     /* memory space + bus master */
	for (u32 p = readb(cfg(0x34)) & 0xfc; p; p = readb(cfg(p + 1)) & 0xfc) {
		if (readb(cfg(p)) != 0x09)              /* vendor-specific: struct virtio_pci_cap */
			continue;
		u8 type = readb(cfg(p + 3)), barno = readb(cfg(p + 4));
		uintptr_t a = bar + readl(cfg(p + 8));

		if (barno != 4)
			continue;
		if (type == 1)
			common = a;
		else if (type == 2) {
			notify = a;
			notify_mult = readl(cfg(p + 16));
		} else if (type == 4)
			devcfg = a;
	}
}

static void setup_queue(int q)
{
	u8 *r = rings[q];

	writew(q, common + Q_SELECT);
	writew(QN, common + Q_SIZE);
	writeq((uintptr_t)r, common + Q_DESC);
	writeq((uintptr_t)r + 4096, common + Q_AVAIL);
	writeq((uintptr_t)r + 8192, common + Q_USED);
	writew(1, common + Q_ENABLE);
}

static void init(void)
{
	u64 f;

	writeb(0, common + STATUS);
	writeb(1, common + STATUS);
	writeb(1 | 2, common + STATUS);
	writel(0, common + DFSELECT);
	f = readl(common + DF);
	writel(1, common + DFSELECT);
	f |= (u64)readl(common + DF) << 32;
	printf("F %x %x\n", (u32)f, (u32)(f >> 32));
	f &= 0x7f | (1ULL << 32);                      /* the device-type bits and VERSION_1: no ring features */
	writel(0, common + GFSELECT);
	writel((u32)f, common + GF);
	writel(1, common + GFSELECT);
	writel((u32)(f >> 32), common + GF);
	writeb(1 | 2 | 8, common + STATUS);
	printf("S %x\n", readb(common + STATUS));
	setup_queue(0);
	setup_queue(1);
	writeb(1 | 2 | 8 | 4, common + STATUS);
	for (u32 off = 0; off < 40; off += 4)
		printf("C %x %x\n", off, readl(devcfg + off));
}

static void desc(int i, u64 addr, u32 len, u16 flags, u16 next)
{
	u8 *d = rings[0] + 16 * i;

	*(u64 *)d = addr;
	*(u32 *)(d + 8) = len;
	*(u16 *)(d + 12) = flags;
	*(u16 *)(d + 14) = next;
}

static void request(int i, const u8 *rd, u32 rlen, u32 wlen)
{
	u8 *avail = rings[0] + 4096, *used = rings[0] + 8192;
	int n = 0;

	memcpy(rbuf, rd, rlen);
	memset(wbuf, 0xee, wlen);
	if (rlen)
		desc(n++, (uintptr_t)rbuf, rlen, wlen ? 1 : 0, 1);
	if (wlen)
		desc(n++, (uintptr_t)wbuf, wlen, 2, 0);
	*(u16 *)(avail + 4 + 2 * (avail_idx % QN)) = 0;
	avail_idx++;
	dsb(sy);
	*(volatile u16 *)(avail + 2) = avail_idx;
	dsb(sy);
	writew(0, notify + readw(common + Q_NOFF) * notify_mult);     /* queue 0 is selected */
	for (int k = 0; k < 1000000 && *(volatile u16 *)(used + 2) == used_seen; k++)
		;
	if (*(volatile u16 *)(used + 2) == used_seen) {
		printf("Q %x none\n", i);
		return;
	}
	u32 len = *(volatile u32 *)(used + 8 + 8 * (used_seen % QN));

	used_seen++;
	printf("Q %x %x", i, len);
	for (u32 k = 0; k < wlen && k < 600; k++)
		printf(" %x", wbuf[k]);
	printf("\n");
}

int main(void)
{
	const u8 *s = (const u8 *)SCRIPT;

	if (readl(cfg(0)) != (0x1057u << 16 | 0x1af4)) {
		printf("X no virtio-iommu-pci at 00:01.0: %x\n", readl(cfg(0)));
		exit(1);
	}
	find_caps();
	init();
	writew(0, common + Q_SELECT);
	for (int i = 0;; i++) {
		u32 rlen = *(const u32 *)s, wlen = *(const u32 *)(s + 4);

		if (rlen == 0xffffffff)
			break;
		request(i, s + 8, rlen, wlen);
		s += 8 + ((rlen + 7) & ~7u);
	}
	printf("E\n");
	exit(0);
}
