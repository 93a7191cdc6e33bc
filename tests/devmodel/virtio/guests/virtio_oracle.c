/*
 * virtio-mmio oracle guest: drives the virtio console QEMU's arm/run configuration gives kvm-unit-tests
 * (-device virtio-serial-device -device virtconsole,chardev=ctd -chardev testdev,id=ctd) and prints a
 * transcript of every access it makes, so tests/devmodel/virtio/test_qemu_oracle.py can replay the same
 * accesses on devmodel.virtio and compare every value read. Built by that test with harness.build
 * (guest_fw runtime, aarch64-linux-gnu-gcc); run with qemu-system-aarch64 -M virt -cpu max -m 128M.
 *
 * It finds the console on the 32 transports at 0x0a00_0000, then runs the script of the interface the
 * transport shows: Version 1 (QEMU's default force-legacy=true) programs QueuePFN like kvm-unit-tests'
 * lib/virtio-mmio.c; Version 2 (-global virtio-mmio.force-legacy=false) initializes like Linux's
 * drivers/virtio/virtio_mmio.c and adds event-index, indirect and hostile-driver cases. Each ends by sending
 * "<code>q" to chr-testdev, which makes QEMU exit with status (code << 1) | 1.
 *
 * Transcript lines (hex numbers): "R t off size val" / "W t off size val" register accesses of transport t,
 * "C t off size val" / "c t off size val" configuration space reads / writes (off from 0x100),
 * "M addr b0 b1 ..." guest memory writes, "Z addr len" zeroed memory, "m addr size val" guest memory reads,
 * "# ..." comments.
 */
#include "guest.h"

#define VIRTIO_MMIO_BASE 0x0a000000UL
#define VIRTIO_MMIO_SIZE 0x200
#define NR_TRANSPORTS 32
#define PAGE 4096

/* register offsets (spec 4.2.2, 4.2.4) */
#define MAGIC 0x000
#define VERSION 0x004
#define DEVICE_ID 0x008
#define VENDOR_ID 0x00c
#define DEV_FEAT 0x010
#define DEV_FEAT_SEL 0x014
#define DRV_FEAT 0x020
#define DRV_FEAT_SEL 0x024
#define GUEST_PAGE_SIZE 0x028
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_ALIGN 0x03c
#define QUEUE_PFN 0x040
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define ISR 0x060
#define ISR_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC 0x080
#define QUEUE_DRIVER 0x090
#define QUEUE_DEVICE 0x0a0
#define SHM_SEL 0x0ac
#define SHM_LEN 0x0b0
#define SHM_BASE 0x0b8
#define QUEUE_RESET 0x0c0
#define CONFIG_GEN 0x0fc
#define CONFIG 0x100

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

static uintptr_t base(int t) { return VIRTIO_MMIO_BASE + (uintptr_t)t * VIRTIO_MMIO_SIZE; }

static u32 rd_sized(int t, u32 off, int size)
{
	u32 v = size == 1 ? readb(base(t) + off) : size == 2 ? readw(base(t) + off) : readl(base(t) + off);

	printf("R %x %x %x %x\n", t, off, size, v);
	return v;
}

static u32 rd(int t, u32 off) { return rd_sized(t, off, 4); }

static void wr(int t, u32 off, u32 v)
{
	printf("W %x %x 4 %x\n", t, off, v);
	writel(v, base(t) + off);
}

static u32 cfg_rd(int t, u32 off, int size)
{
	uintptr_t a = base(t) + CONFIG + off;
	u32 v = size == 1 ? readb(a) : size == 2 ? readw(a) : readl(a);

	printf("C %x %x %x %x\n", t, off, size, v);
	return v;
}

static void cfg_wr(int t, u32 off, int size, u32 v)
{
	uintptr_t a = base(t) + CONFIG + off;

	printf("c %x %x %x %x\n", t, off, size, v);
	if (size == 1)
		writeb(v, a);
	else if (size == 2)
		writew(v, a);
	else
		writel(v, a);
}

/* guest memory, logged */
static void mw(u64 addr, const void *src, int n)
{
	const u8 *s = src;

	memcpy((void *)(uintptr_t)addr, src, n);
	printf("M %lx", (unsigned long)addr);
	for (int i = 0; i < n; i++)
		printf(" %x", s[i]);
	printf("\n");
	dsb(sy);
}

static void mw16(u64 addr, u16 v) { mw(addr, &v, 2); }

static void mzero(u64 addr, u32 len)
{
	memset((void *)(uintptr_t)addr, 0, len);
	printf("Z %lx %x\n", (unsigned long)addr, len);
	dsb(sy);
}

static u32 mr(u64 addr, int size)
{
	u32 v;

	dsb(sy);
	v = size == 2 ? *(volatile u16 *)(uintptr_t)addr : *(volatile u32 *)(uintptr_t)addr;
	printf("m %lx %x %x\n", (unsigned long)addr, size, v);
	return v;
}

/* driver side of one split virtqueue */
struct vq {
	int t, index;
	u32 num;
	u64 desc, avail, used;
	u16 avail_idx;
};

static u8 qmem[2][4 * PAGE] __aligned(PAGE);
static u8 bufs[64][64] __aligned(16);
static u8 itable[4][64] __aligned(16);
static int nbuf;

static u64 buf_with(const char *s)
{
	u8 *b = bufs[nbuf++ % 64];
	int n = strlen(s);

	mw((uintptr_t)b, s, n);
	return (uintptr_t)b;
}

static void desc_put(u64 table, int i, u64 addr, u32 len, u16 flags, u16 next)
{
	u8 d[16];

	for (int k = 0; k < 8; k++)
		d[k] = addr >> (8 * k);
	for (int k = 0; k < 4; k++)
		d[8 + k] = len >> (8 * k);
	d[12] = flags;
	d[13] = flags >> 8;
	d[14] = next;
	d[15] = next >> 8;
	mw(table + 16 * i, d, 16);
}

static void avail_put(struct vq *q, u16 head)
{
	mw16(q->avail + 4 + 2 * (q->avail_idx % q->num), head);
	q->avail_idx++;
	mw16(q->avail + 2, q->avail_idx);
}

static void kick(struct vq *q) { wr(q->t, QUEUE_NOTIFY, q->index); }

/* wait for the used index to reach `want` (unlogged polls), then log the used ring state */
static void used_check(struct vq *q, u16 want)
{
	for (int i = 0; i < 100000 && *(volatile u16 *)(uintptr_t)(q->used + 2) != want; i++)
		;
	mr(q->used + 2, 2);
	if (want) {
		u32 slot = (u16)(want - 1) % q->num;
		mr(q->used + 4 + 8 * slot, 4);
		mr(q->used + 8 + 8 * slot, 4);
	}
}

/* one device-readable buffer in descriptor `d` */
static void tx(struct vq *q, int d, const char *s)
{
	desc_put(q->desc, d, buf_with(s), strlen(s), 0, 0);
	avail_put(q, d);
	kick(q);
}

static void ack_all(int t) { wr(t, ISR_ACK, rd(t, ISR)); }

static int scan(void)
{
	int found = -1;

	for (int t = 0; t < NR_TRANSPORTS; t++) {
		rd(t, MAGIC);
		rd(t, VERSION);
		if (rd(t, DEVICE_ID) == 3 && found < 0)
			found = t;
		rd(t, VENDOR_ID);
	}
	return found;
}

static void probe_empty(int e)
{
	printf("# empty transport %d\n", e);
	rd(e, DEV_FEAT);
	wr(e, QUEUE_SEL, 0);
	rd(e, QUEUE_NUM_MAX);
	wr(e, STATUS, 1);
	rd(e, STATUS);
	rd(e, CONFIG_GEN);
	cfg_rd(e, 0, 4);
}

static void features(int t)
{
	for (u32 sel = 0; sel < 3; sel++) {
		wr(t, DEV_FEAT_SEL, sel);
		rd(t, DEV_FEAT);
	}
}

static void config_probe(int t)
{
	for (u32 off = 0; off < 12; off++)
		cfg_rd(t, off, 1);
	cfg_rd(t, 0, 2);
	cfg_rd(t, 2, 2);
	cfg_rd(t, 4, 4);
	cfg_rd(t, 8, 4);
	cfg_rd(t, 12, 1);
	cfg_rd(t, 12, 4);
	cfg_rd(t, 10, 4);
}

/* ---- Version 1: kvm-unit-tests' lib/virtio-mmio.c sequence ---- */
static void legacy_setup(int t, struct vq *q, int index)
{
	q->t = t;
	q->index = index;
	q->num = 128;
	q->desc = (uintptr_t)qmem[index];
	q->avail = q->desc + 16 * q->num;
	q->used = (q->avail + 6 + 2 * q->num + PAGE - 1) & ~(u64)(PAGE - 1);
	q->avail_idx = 0;
	wr(t, QUEUE_SEL, index);
	rd(t, QUEUE_NUM_MAX);
	rd(t, QUEUE_PFN);
	wr(t, QUEUE_NUM, q->num);
	wr(t, QUEUE_ALIGN, PAGE);
	mzero(q->desc, sizeof(qmem[0]));
	wr(t, QUEUE_PFN, q->desc / PAGE);
	rd(t, QUEUE_PFN);
}

static void legacy_script(int t)
{
	struct vq rx, txq;
	static const u32 queues[] = { 0, 1, 2, 3, 4, 62, 63, 64, 65 };

	features(t);
	wr(t, GUEST_PAGE_SIZE, PAGE);
	config_probe(t);
	for (unsigned i = 0; i < ARRAY_SIZE(queues); i++) {
		wr(t, QUEUE_SEL, queues[i]);
		rd(t, QUEUE_NUM_MAX);
		rd(t, QUEUE_PFN);
	}
	rd(t, STATUS);
	rd(t, ISR);
	rd_sized(t, MAGIC, 1);
	rd_sized(t, VERSION, 2);
	rd(t, QUEUE_READY);
	rd(t, CONFIG_GEN);
	cfg_wr(t, 8, 4, ' ');             /* emergency write: a blank for the testdev */

	legacy_setup(t, &rx, 0);
	legacy_setup(t, &txq, 1);
	tx(&txq, 0, "x");
	used_check(&txq, 1);
	ack_all(t);
	rd(t, ISR);
	desc_put(txq.desc, 1, buf_with("a"), 1, F_NEXT, 2);
	desc_put(txq.desc, 2, buf_with("b"), 1, 0, 0);
	avail_put(&txq, 1);
	kick(&txq);
	used_check(&txq, 2);
	ack_all(t);
	rd(t, STATUS);

	printf("# hostile: head out of range (legacy: no DEVICE_NEEDS_RESET)\n");
	avail_put(&txq, 200);
	kick(&txq);
	rd(t, STATUS);
	rd(t, ISR);
	tx(&txq, 3, "c");
	used_check(&txq, 2);
	wr(t, STATUS, 0);
	rd(t, STATUS);
	wr(t, QUEUE_SEL, 1);
	rd(t, QUEUE_PFN);
	legacy_setup(t, &rx, 0);
	legacy_setup(t, &txq, 1);
	tx(&txq, 0, "3q");                /* QEMU exits with 7 */
}

/* ---- Version 2: Linux virtio_mmio.c / virtio.c sequence ---- */
static void modern_queue(int t, struct vq *q, int index)
{
	q->t = t;
	q->index = index;
	q->num = 16;
	q->desc = (uintptr_t)qmem[index];
	q->avail = q->desc + PAGE;
	q->used = q->desc + 2 * PAGE;
	q->avail_idx = 0;
	wr(t, QUEUE_SEL, index);
	rd(t, QUEUE_READY);
	rd(t, QUEUE_NUM_MAX);
	wr(t, QUEUE_NUM, q->num);
	mzero(q->desc, sizeof(qmem[0]));
	wr(t, QUEUE_DESC, q->desc);
	wr(t, QUEUE_DESC + 4, q->desc >> 32);
	wr(t, QUEUE_DRIVER, q->avail);
	wr(t, QUEUE_DRIVER + 4, q->avail >> 32);
	wr(t, QUEUE_DEVICE, q->used);
	wr(t, QUEUE_DEVICE + 4, q->used >> 32);
	wr(t, QUEUE_READY, 1);
	rd(t, QUEUE_READY);
}

static void negotiate(int t, u32 lo, u32 hi)
{
	wr(t, STATUS, 0);
	rd(t, STATUS);
	wr(t, STATUS, 1);
	wr(t, STATUS, 3);
	wr(t, DRV_FEAT_SEL, 0);
	wr(t, DRV_FEAT, lo);
	wr(t, DRV_FEAT_SEL, 1);
	wr(t, DRV_FEAT, hi);
	wr(t, STATUS, 0xb);
	rd(t, STATUS);
}

static void modern_init(int t, struct vq *rx, struct vq *txq, u32 lo)
{
	negotiate(t, lo, 1);
	modern_queue(t, rx, 0);
	modern_queue(t, txq, 1);
	wr(t, STATUS, 0xf);
	rd(t, STATUS);
}

/* after a driver error: the device's answer, then a reset and a new initialization */
static void after_error(int t, struct vq *rx, struct vq *txq, u32 lo, u16 used)
{
	rd(t, STATUS);
	ack_all(t);
	rd(t, ISR);
	tx(txq, 5, "d");                  /* ignored by a broken device */
	used_check(txq, used);
	modern_init(t, rx, txq, lo);
}

static void modern_script(int t)
{
	struct vq rx, txq;
	u32 lo;

	features(t);
	wr(t, DEV_FEAT_SEL, 0);
	lo = rd(t, DEV_FEAT) & ((1u << 28) | (1u << 29));     /* INDIRECT_DESC, EVENT_IDX */
	printf("# FEATURES_OK with a feature not offered (bit 0), then without VERSION_1\n");
	negotiate(t, 1, 1);
	negotiate(t, 0, 0);
	modern_init(t, &rx, &txq, lo);
	config_probe(t);
	rd(t, CONFIG_GEN);
	wr(t, SHM_SEL, 0);
	rd(t, SHM_LEN);
	rd(t, SHM_LEN + 4);
	rd(t, SHM_BASE);
	rd(t, SHM_BASE + 4);
	wr(t, QUEUE_SEL, 63);
	rd(t, QUEUE_NUM_MAX);
	wr(t, QUEUE_SEL, 64);
	rd(t, QUEUE_NUM_MAX);
	rd(t, QUEUE_READY);
	wr(t, QUEUE_SEL, 1);
	rd(t, QUEUE_RESET);
	rd(t, QUEUE_PFN);

	printf("# event index: used_event 0, then 5, then 3\n");
	tx(&txq, 0, "x");
	used_check(&txq, 1);
	mr(txq.used + 4 + 8 * txq.num, 2);       /* avail_event */
	ack_all(t);
	mw16(txq.avail + 4 + 2 * txq.num, 5);    /* used_event */
	tx(&txq, 1, "y");
	used_check(&txq, 2);
	rd(t, ISR);
	desc_put((uintptr_t)itable[0], 0, buf_with("z"), 1, F_NEXT, 1);
	desc_put((uintptr_t)itable[0], 1, buf_with("w"), 1, 0, 0);
	desc_put(txq.desc, 2, (uintptr_t)itable[0], 32, F_INDIRECT, 0);
	avail_put(&txq, 2);
	kick(&txq);
	used_check(&txq, 3);
	rd(t, ISR);
	mw16(txq.avail + 4 + 2 * txq.num, 3);
	tx(&txq, 3, "v");
	used_check(&txq, 4);
	mr(txq.used + 4 + 8 * txq.num, 2);
	ack_all(t);

	printf("# hostile: head out of range\n");
	avail_put(&txq, 20);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: looping chain\n");
	desc_put(txq.desc, 0, buf_with("l"), 1, F_NEXT, 0);
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: available index jumps by 17\n");
	desc_put(txq.desc, 0, buf_with("j"), 1, 0, 0);
	txq.avail_idx += 16;
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: buffer outside memory\n");
	desc_put(txq.desc, 0, 0x10000000000ULL, 4, 0, 0);
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: device-readable after device-writable\n");
	desc_put(txq.desc, 0, buf_with("w"), 1, F_WRITE | F_NEXT, 1);
	desc_put(txq.desc, 1, buf_with("r"), 1, 0, 0);
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: next out of range\n");
	desc_put(txq.desc, 0, buf_with("n"), 1, F_NEXT, 16);
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	printf("# hostile: indirect table of 17 bytes\n");
	desc_put(txq.desc, 0, (uintptr_t)itable[1], 17, F_INDIRECT, 0);
	avail_put(&txq, 0);
	kick(&txq);
	after_error(t, &rx, &txq, lo, 0);

	tx(&txq, 0, "5q");                /* QEMU exits with 11 */
}

int main(void)
{
	int t, v;

	printf("# virtio-mmio oracle\n");
	t = scan();
	if (t < 0) {
		printf("# no virtio console found\n");
		return 1;
	}
	printf("# console on transport %d\n", t);
	probe_empty(t == 0 ? 1 : t - 1);
	v = rd(t, VERSION);
	if (v == 1)
		legacy_script(t);
	else
		modern_script(t);
	printf("# still running: the testdev did not end the run\n");
	return 1;
}
