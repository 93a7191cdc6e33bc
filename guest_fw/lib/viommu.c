/*
 * Guest virtio-iommu driver: see viommu.h. Register offsets: virtio v1.2 4.2.2 (MMIO Device Register Layout);
 * split virtqueue layout 2.7; request and property structures 5.13.6 and the extension in docs/virtio-iommu.md
 * (the harness's tests decode what this code sends with devmodel/virtio/iommu/layouts.py and pgtable.py).
 */
#include "viommu.h"

#define MMIO_MAGIC 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define MMIO_DEVICE_FEATURES 0x010
#define MMIO_DEVICE_FEATURES_SEL 0x014
#define MMIO_DRIVER_FEATURES 0x020
#define MMIO_DRIVER_FEATURES_SEL 0x024
#define MMIO_QUEUE_SEL 0x030
#define MMIO_QUEUE_NUM_MAX 0x034
#define MMIO_QUEUE_NUM 0x038
#define MMIO_QUEUE_READY 0x044
#define MMIO_QUEUE_NOTIFY 0x050
#define MMIO_STATUS 0x070
#define MMIO_QUEUE_DESC_LOW 0x080
#define MMIO_QUEUE_DESC_HIGH 0x084
#define MMIO_QUEUE_DRIVER_LOW 0x090
#define MMIO_QUEUE_DRIVER_HIGH 0x094
#define MMIO_QUEUE_DEVICE_LOW 0x0a0
#define MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define MMIO_CONFIG 0x100

#define ST_ACKNOWLEDGE 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define ST_DEVICE_NEEDS_RESET 0x40

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

#define T_ATTACH 1
#define T_DETACH 2
#define T_MAP 3
#define T_UNMAP 4
#define T_PROBE 5
#define T_ATTACH_TABLE 6
#define T_INVALIDATE 7

#define PROBE_T_RESV_MEM 1
#define PROBE_T_PAGE_SIZE_MASK 2
#define PROBE_T_OUTPUT_SIZE 4
#define PROBE_T_PASID_SIZE 5
#define PROBE_T_PAGE_TABLE_FMT 6
#define PROBE_T_PASID_TABLE_FMT 7
#define PROBE_T_MASK 0xfff
#define PGTF_ARM_LPAE 1
#define PSTF_ARM_SV3 2

#define FAULT_SIZE 24
#define PROBE_MAX 512

static u8 rings[2][4096] __aligned(4096);
static u8 reqbuf[128] __aligned(16);
static u8 tailbuf[PROBE_MAX + 4] __aligned(16);
static u8 faultbuf[VIOMMU_QSZ][FAULT_SIZE] __aligned(16);

static void put16(u8 *p, u16 v) { p[0] = v; p[1] = v >> 8; }
static void put32(u8 *p, u32 v) { put16(p, v); put16(p + 2, v >> 16); }
static void put64(u8 *p, u64 v) { put32(p, v); put32(p + 4, v >> 32); }
static u16 get16(const u8 *p) { return p[0] | (u16)p[1] << 8; }
static u32 get32(const u8 *p) { return get16(p) | (u32)get16(p + 2) << 16; }
static u64 get64(const u8 *p) { return get32(p) | (u64)get32(p + 4) << 32; }

bool viommu_has(const struct viommu *v, int feature) { return (v->features >> feature) & 1; }

static void vq_setup(struct viommu *v, struct viommu_vq *q, int index, u8 *mem)
{
	uintptr_t desc = (uintptr_t)mem, avail = desc + 16 * VIOMMU_QSZ, used = (avail + 6 + 2 * VIOMMU_QSZ + 3) & ~3UL;

	memset(mem, 0, 4096);
	q->num = VIOMMU_QSZ;
	q->desc = (void *)desc;
	q->avail = (volatile u16 *)avail;
	q->used = (volatile u32 *)used;
	q->last_used = q->avail_idx = 0;
	writel(index, v->base + MMIO_QUEUE_SEL);
	writel(VIOMMU_QSZ, v->base + MMIO_QUEUE_NUM);
	writel((u32)desc, v->base + MMIO_QUEUE_DESC_LOW);
	writel((u32)(desc >> 32), v->base + MMIO_QUEUE_DESC_HIGH);
	writel((u32)avail, v->base + MMIO_QUEUE_DRIVER_LOW);
	writel((u32)(avail >> 32), v->base + MMIO_QUEUE_DRIVER_HIGH);
	writel((u32)used, v->base + MMIO_QUEUE_DEVICE_LOW);
	writel((u32)(used >> 32), v->base + MMIO_QUEUE_DEVICE_HIGH);
	writel(1, v->base + MMIO_QUEUE_READY);
}

/* Publish chain `head` on q (the descriptors are filled in) */
static void vq_publish(struct viommu_vq *q, u16 head)
{
	q->avail[2 + q->avail_idx % q->num] = head;
	dsb(ishst);
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	dsb(ish);
}

static void post_fault_buffer(struct viommu *v, u16 slot)
{
	struct viommu_vq *q = &v->evt;

	q->desc[slot].addr = (u64)(uintptr_t)faultbuf[slot];
	q->desc[slot].len = FAULT_SIZE;
	q->desc[slot].flags = DESC_F_WRITE;
	q->desc[slot].next = 0;
	vq_publish(q, slot);
}

static u64 cfg64(struct viommu *v, u32 off)
{
	return readl(v->base + MMIO_CONFIG + off) | (u64)readl(v->base + MMIO_CONFIG + off + 4) << 32;
}

int viommu_init(struct viommu *v, uintptr_t base, bool want_tables)
{
	u64 offered, want;

	memset(v, 0, sizeof(*v));
	v->base = base;
	if (readl(base + MMIO_MAGIC) != 0x74726976 || readl(base + MMIO_DEVICE_ID) != 23)
		return -1;
	if (readl(base + MMIO_VERSION) != 2)
		return -2;
	writel(0, base + MMIO_STATUS);
	writel(ST_ACKNOWLEDGE, base + MMIO_STATUS);
	writel(ST_ACKNOWLEDGE | ST_DRIVER, base + MMIO_STATUS);
	writel(1, base + MMIO_DEVICE_FEATURES_SEL);
	offered = (u64)readl(base + MMIO_DEVICE_FEATURES) << 32;
	writel(0, base + MMIO_DEVICE_FEATURES_SEL);
	offered |= readl(base + MMIO_DEVICE_FEATURES);
	want = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIOMMU_F_INPUT_RANGE) | (1ULL << VIOMMU_F_DOMAIN_RANGE) |
	       (1ULL << VIOMMU_F_MAP_UNMAP) | (1ULL << VIOMMU_F_PROBE) | (1ULL << VIOMMU_F_MMIO) |
	       (1ULL << VIOMMU_F_BYPASS_CONFIG) | (want_tables ? 1ULL << VIOMMU_F_ATTACH_TABLE : 0);
	v->features = offered & want;
	writel(1, base + MMIO_DRIVER_FEATURES_SEL);
	writel(v->features >> 32, base + MMIO_DRIVER_FEATURES);
	writel(0, base + MMIO_DRIVER_FEATURES_SEL);
	writel((u32)v->features, base + MMIO_DRIVER_FEATURES);
	writel(ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK, base + MMIO_STATUS);
	if (!(readl(base + MMIO_STATUS) & ST_FEATURES_OK))
		return -3;
	v->page_size_mask = cfg64(v, 0);
	v->input_start = cfg64(v, 8);
	v->input_end = cfg64(v, 16);
	v->domain_start = readl(base + MMIO_CONFIG + 24);
	v->domain_end = readl(base + MMIO_CONFIG + 28);
	v->probe_size = readl(base + MMIO_CONFIG + 32);
	for (int i = 0; i < 2; i++) {
		writel(i, base + MMIO_QUEUE_SEL);
		if (readl(base + MMIO_QUEUE_NUM_MAX) < VIOMMU_QSZ || readl(base + MMIO_QUEUE_READY))
			return -4;
		vq_setup(v, i ? &v->evt : &v->req, i, rings[i]);
	}
	writel(ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK, base + MMIO_STATUS);
	for (u16 i = 0; i < VIOMMU_QSZ; i++)
		post_fault_buffer(v, i);
	writel(1, base + MMIO_QUEUE_NOTIFY);
	v->kicks++;
	return 0;
}

u8 viommu_request(struct viommu *v, const void *req, u32 rlen, void *wbuf, u32 wlen)
{
	struct viommu_vq *q = &v->req;
	u16 want;

	q->desc[0].addr = (u64)(uintptr_t)req;
	q->desc[0].len = rlen;
	q->desc[0].flags = DESC_F_NEXT;
	q->desc[0].next = 1;
	q->desc[1].addr = (u64)(uintptr_t)wbuf;
	q->desc[1].len = wlen;
	q->desc[1].flags = DESC_F_WRITE;
	q->desc[1].next = 0;
	memset(wbuf, 0, wlen);
	vq_publish(q, 0);
	writel(0, v->base + MMIO_QUEUE_NOTIFY);          /* the VM exit: the device serves the request */
	v->kicks++;
	want = q->last_used + 1;
	/* used->idx, polled (no interrupt controller); a device in its error state (DEVICE_NEEDS_RESET, 2.1.2)
	 * answers nothing more: give up rather than spin for ever */
	while ((u16)(q->used[0] >> 16) != want)
		if (readl(v->base + MMIO_STATUS) & ST_DEVICE_NEEDS_RESET)
			return VIOMMU_S_NONE;
	dsb(ish);
	v->last_used_len = q->used[2 + 2 * (q->last_used % q->num)];
	q->last_used = want;
	if (v->last_used_len == 0)
		return VIOMMU_S_NONE;
	return ((u8 *)wbuf)[wlen - 4];
}

static u8 simple(struct viommu *v, u32 rlen)
{
	return viommu_request(v, reqbuf, rlen, tailbuf, 4);
}

static u8 *head(u8 type)
{
	memset(reqbuf, 0, sizeof(reqbuf));
	reqbuf[0] = type;
	return reqbuf;
}

u8 viommu_attach(struct viommu *v, u32 domain, u32 endpoint, u32 flags)
{
	u8 *r = head(T_ATTACH);

	put32(r + 4, domain);
	put32(r + 8, endpoint);
	put32(r + 12, flags);
	return simple(v, 20);
}

u8 viommu_detach(struct viommu *v, u32 domain, u32 endpoint)
{
	u8 *r = head(T_DETACH);

	put32(r + 4, domain);
	put32(r + 8, endpoint);
	return simple(v, 20);
}

u8 viommu_map(struct viommu *v, u32 domain, u64 virt_start, u64 virt_end, u64 phys, u32 flags)
{
	u8 *r = head(T_MAP);

	put32(r + 4, domain);
	put64(r + 8, virt_start);
	put64(r + 16, virt_end);
	put64(r + 24, phys);
	put32(r + 32, flags);
	return simple(v, 36);
}

u8 viommu_unmap(struct viommu *v, u32 domain, u64 virt_start, u64 virt_end)
{
	u8 *r = head(T_UNMAP);

	put32(r + 4, domain);
	put64(r + 8, virt_start);
	put64(r + 16, virt_end);
	return simple(v, 28);
}

static void parse_property(struct viommu *v, u16 type, const u8 *p, u16 len)
{
	switch (type) {
	case PROBE_T_RESV_MEM:
		if (len >= 20 && v->nr_resv < VIOMMU_MAX_RESV) {
			struct viommu_resv *r = &v->resv[v->nr_resv++];
			r->subtype = p[0];
			r->start = get64(p + 4);
			r->end = get64(p + 12);
		}
		break;
	case PROBE_T_PAGE_SIZE_MASK:
		if (len >= 12)
			v->probe_page_size_mask = get64(p + 4);
		break;
	case PROBE_T_OUTPUT_SIZE:
		v->output_bits = p[0];
		break;
	case PROBE_T_PASID_SIZE:
		v->pasid_bits = p[0];
		break;
	case PROBE_T_PAGE_TABLE_FMT:
		if (len >= 12) {
			v->has_pgtf = true;
			v->pgtf_format = get16(p);
			v->asid_bits = p[2];
			v->pgtf_flags = get64(p + 4);
		}
		break;
	case PROBE_T_PASID_TABLE_FMT:
		if (len >= 12) {
			v->has_pstf = true;
			v->pstf_format = get16(p);
			v->pstf_flags = get64(p + 4);
		}
		break;
	}
}

u8 viommu_probe(struct viommu *v, u32 endpoint)
{
	u32 size = v->probe_size > PROBE_MAX ? PROBE_MAX : v->probe_size, off = 0;
	u8 *r = head(T_PROBE), st;

	put32(r + 4, endpoint);
	st = viommu_request(v, reqbuf, 72, tailbuf, size + 4);
	v->nr_resv = 0;
	v->has_pgtf = v->has_pstf = false;
	if (st != VIOMMU_S_OK)
		return st;
	/* 5.13.6.7: struct virtio_iommu_probe_property { le16 type; le16 length; u8 value[]; }, type 0 ends */
	while (off + 4 <= size) {
		u16 type = get16(tailbuf + off) & PROBE_T_MASK, len = get16(tailbuf + off + 2);
		if (!type || off + 4 + len > size)
			break;
		parse_property(v, type, tailbuf + off + 4, len);
		off += 4 + len;
	}
	return st;
}

u8 viommu_attach_pgt(struct viommu *v, u32 domain, u32 endpoint, u16 asid, u64 tcr, u64 ttbr0, u64 ttbr1,
		     u64 mair)
{
	u8 *r = head(T_ATTACH_TABLE);

	put32(r + 4, domain);
	put32(r + 8, endpoint);
	put16(r + 12, PGTF_ARM_LPAE);
	put16(r + 14, asid);
	put64(r + 16, tcr);
	put64(r + 24, ttbr0);
	put64(r + 32, ttbr1);
	put64(r + 40, mair);
	return simple(v, 76);
}

u8 viommu_attach_pst(struct viommu *v, u32 domain, u32 endpoint, u64 s1contextptr, u8 s1fmt, u8 s1dss,
		     u32 s1cdmax)
{
	u8 *r = head(T_ATTACH_TABLE);

	put32(r + 4, domain);
	put32(r + 8, endpoint);
	put16(r + 12, PSTF_ARM_SV3);
	r[14] = s1fmt;
	r[15] = s1dss;
	put64(r + 16, s1contextptr);
	put32(r + 24, s1cdmax);
	return simple(v, 76);
}

u8 viommu_invalidate(struct viommu *v, u32 domain, u16 scope, u16 flags, u32 pasid, u64 asid, u64 virt_start,
		     u64 nr_pages, u8 granule)
{
	u8 *r = head(T_INVALIDATE);

	put16(r + 4, scope);
	put16(r + 6, flags);
	put32(r + 8, domain);
	put32(r + 12, pasid);
	put64(r + 16, asid);
	put64(r + 24, virt_start);
	put64(r + 32, nr_pages);
	r[40] = granule;
	return simple(v, 60);
}

u8 viommu_attach_cpu_tables(struct viommu *v, u32 domain, u32 endpoint)
{
	u64 ttbr = read_sysreg(ttbr0_el1);

	/* the ASID has its own field: TTBR0_EL1[63:48] is not part of the table address */
	return viommu_attach_pgt(v, domain, endpoint, ttbr >> 48, read_sysreg(tcr_el1), ttbr & 0x0000ffffffffffffULL,
				 0, read_sysreg(mair_el1));
}

bool viommu_read_fault(struct viommu *v, struct viommu_fault *f)
{
	struct viommu_vq *q = &v->evt;
	u32 id;
	const u8 *b;

	if ((u16)(q->used[0] >> 16) == q->last_used)
		return false;
	dsb(ish);
	id = q->used[1 + 2 * (q->last_used % q->num)];        /* used ring element {le32 id; le32 len} */
	q->last_used++;
	if (id >= VIOMMU_QSZ)
		return false;
	b = faultbuf[id];
	/* struct virtio_iommu_fault { u8 reason; u8 reserved[3]; le32 flags; le32 endpoint; u8 reserved2[4];
	 * le64 address; } */
	f->reason = b[0];
	f->flags = get32(b + 4);
	f->endpoint = get32(b + 8);
	f->address = get64(b + 16);
	post_fault_buffer(v, id);
	writel(1, v->base + MMIO_QUEUE_NOTIFY);
	v->kicks++;
	return true;
}
