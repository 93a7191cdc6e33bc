/*
 * Minimal guest SMMUv3 driver: see vsmmu.h. The bring-up order follows Linux arm_smmu_device_reset()
 * (CR0 off, CR2, stream table, command queue on, CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC, event queue on,
 * SMMUEN), command submission follows arm_smmu_cmdq_issue_cmdlist() without the lock-free parts, and
 * error recovery follows arm_smmu_cmdq_skip_err() (the failing entry becomes a CMD_SYNC, GERRORN acks).
 */
#include "vsmmu.h"

#define POLL_LIMIT 100000

/* STE (IHI 0070 5.2; Linux STRTAB_STE_0_* / STRTAB_STE_1_*) */
#define STE0_V (1ULL << 0)
#define STE0_CFG(c) ((u64)(c) << 1)
#define STE0_S1FMT(f) ((u64)(f) << 4)
#define STE0_S1CTXPTR_MASK 0x000fffffffffffc0ULL
#define STE0_S1CDMAX(n) ((u64)(n) << 59)
#define STE1_S1CIR_WBRA (1ULL << 2)
#define STE1_S1COR_WBRA (1ULL << 4)
#define STE1_S1CSH_ISH (3ULL << 6)

/* CD (IHI 0070 5.4; Linux CTXDESC_CD_0_* / CTXDESC_CD_1_TTB0_MASK) */
#define CD0_T0SZ(n) ((u64)(n) << 0)
#define CD0_TG0_4K (0ULL << 6)
#define CD0_IR0_WBWA (1ULL << 8)
#define CD0_OR0_WBWA (1ULL << 10)
#define CD0_SH0_ISH (3ULL << 12)
#define CD0_EPD1 (1ULL << 30)
#define CD0_V (1ULL << 31)
#define CD0_IPS_48 (5ULL << 32)
#define CD0_AA64 (1ULL << 41)
#define CD0_R (1ULL << 45)
#define CD0_A (1ULL << 46)
#define CD0_ASET (1ULL << 47)
#define CD0_ASID(a) ((u64)(a) << 48)
#define CD1_TTB0_MASK 0x000ffffffffffff0ULL

/* commands (IHI 0070 4; Linux CMDQ_*) */
#define CMD0_SID(s) ((u64)(s) << 32)
#define CMD0_SSID(s) ((u64)((s) & 0xfffff) << 12)
#define CMD0_VMID(v) ((u64)(v) << 32)
#define CMD0_ASID(a) ((u64)(a) << 48)
#define CMD1_LEAF (1ULL << 0)
#define CMD1_VA_MASK 0xfffffffffffff000ULL
#define CMD1_RANGE_ALL 31ULL
#define SYNC0_CS_IRQ (1ULL << 12)
#define SYNC0_MSH_ISH (3ULL << 22)
#define SYNC0_MSIATTR_OIWB (0xfULL << 24)
#define SYNC0_MSIDATA(d) ((u64)(d) << 32)
#define SYNC1_MSIADDR_MASK 0x000ffffffffffffcULL

#define CR2_RECINVSID (1u << 1)
#define CR2_PTM (1u << 2)

static u64 strtab_mem[(1 << VSMMU_STRTAB_LOG2) * 8] __aligned(64 << VSMMU_STRTAB_LOG2);
static u64 cmdq_mem[(1 << VSMMU_CMDQ_LOG2) * 2] __aligned(16 << VSMMU_CMDQ_LOG2);
static u64 evtq_mem[(1 << VSMMU_EVTQ_LOG2) * 4] __aligned(32 << VSMMU_EVTQ_LOG2);
static u64 priq_mem[(1 << VSMMU_PRIQ_LOG2) * 2] __aligned(16 << VSMMU_PRIQ_LOG2);
static volatile u32 sync_mem __aligned(64);

void vsmmu_cd_write(u64 *cd, u16 asid, const struct pgtable *pt, bool aset)
{
	for (int i = 1; i < 8; i++)
		cd[i] = 0;
	cd[1] = (u64)(uintptr_t)pt->root & CD1_TTB0_MASK;
	cd[3] = PGT_MAIR;
	dsb(ishst);
	cd[0] = CD0_T0SZ(pgtable_t0sz(pt)) | CD0_TG0_4K | CD0_IR0_WBWA | CD0_OR0_WBWA | CD0_SH0_ISH | CD0_EPD1 |
		CD0_V | CD0_IPS_48 | CD0_AA64 | CD0_R | CD0_A | (aset ? CD0_ASET : 0) | CD0_ASID(asid);
	dsb(ishst);
}

void vsmmu_ste_s1(u64 ste[8], u64 cd_ipa, int s1cdmax)
{
	for (int i = 0; i < 8; i++)
		ste[i] = 0;
	ste[0] = STE0_V | STE0_CFG(STE_CFG_S1) | STE0_S1FMT(0) | (cd_ipa & STE0_S1CTXPTR_MASK) |
		 STE0_S1CDMAX(s1cdmax);
	ste[1] = STE1_S1CIR_WBRA | STE1_S1COR_WBRA | STE1_S1CSH_ISH;
}

static u32 rd(struct vsmmu *s, u32 off) { return readl(s->base + off); }
static void wr(struct vsmmu *s, u32 off, u32 v) { writel(v, s->base + off); }

static int write_cr0(struct vsmmu *s, u32 val)
{
	wr(s, SMMU_CR0, val);
	for (int i = 0; i < POLL_LIMIT; i++)
		if (rd(s, SMMU_CR0ACK) == val)
			return 0;
	return -3;
}

u64 *vsmmu_ste(struct vsmmu *s, u32 sid)
{
	return &s->strtab[(sid & ((1u << VSMMU_STRTAB_LOG2) - 1)) * 8];
}

static u32 q_idx(u32 p, int log2) { return p & ((1u << log2) - 1); }
static u32 q_wrap(u32 p, int log2) { return (p >> log2) & 1; }
static u32 q_next(u32 p, int log2) { return (p + 1) & ((2u << log2) - 1); }
/* Entries between cons and prod (the wrap bit tells a full queue from an empty one, IHI 0070 3.5.1). */
static u32 q_pending(u32 prod, u32 cons, int log2)
{
	prod &= (2u << log2) - 1;
	if (q_wrap(prod, log2) == q_wrap(cons, log2))
		return q_idx(prod, log2) - q_idx(cons, log2);
	return (1u << log2) - q_idx(cons, log2) + q_idx(prod, log2);
}

/* Is the queue full from the driver's view? Uses the cached CONS first and reads CMDQ_CONS (a VM exit on a
 * vSMMU) only when the cached value says full, as Linux keeps llq.cons. */
static bool cmdq_full(struct vsmmu *s, bool refresh)
{
	const int l = VSMMU_CMDQ_LOG2;
	if (refresh)
		s->cmdq_cons = rd(s, SMMU_CMDQ_CONS) & ((2u << l) - 1);
	return q_idx(s->cmdq_cons, l) == q_idx(s->cmdq_prod, l) && q_wrap(s->cmdq_cons, l) != q_wrap(s->cmdq_prod, l);
}

int vsmmu_queue(struct vsmmu *s, u64 w0, u64 w1)
{
	const int l = VSMMU_CMDQ_LOG2;
	if (cmdq_full(s, false)) {
		int i;
		for (i = 0; i < POLL_LIMIT && cmdq_full(s, true); i++)
			vsmmu_kick(s);
		if (i == POLL_LIMIT)
			return -1;
	}
	s->cmdq[q_idx(s->cmdq_prod, l) * 2] = w0;
	s->cmdq[q_idx(s->cmdq_prod, l) * 2 + 1] = w1;
	s->cmdq_prod = q_next(s->cmdq_prod, l);
	return 0;
}

void vsmmu_kick(struct vsmmu *s)
{
	dsb(ishst);
	wr(s, SMMU_CMDQ_PROD, s->cmdq_prod);
}

/* Recover from a command error: the failing entry becomes a CMD_SYNC without signal, GERROR is acked. */
static u32 skip_error(struct vsmmu *s)
{
	const int l = VSMMU_CMDQ_LOG2;
	u32 cons = rd(s, SMMU_CMDQ_CONS);
	u32 err = CMDQ_CONS_ERR(cons);
	u32 i = q_idx(cons, l);
	s->cmdq[i * 2] = CMD_SYNC;
	s->cmdq[i * 2 + 1] = 0;
	dsb(ishst);
	wr(s, SMMU_GERRORN, rd(s, SMMU_GERROR));
	return err ? err : CMDQ_ERR_ILL;
}

int vsmmu_sync(struct vsmmu *s)
{
	u32 seq = ++s->sync_seq;
	u32 err = 0;
	u64 addr = (u64)(uintptr_t)s->sync_word;
	int r = vsmmu_queue(s, CMD_SYNC | SYNC0_CS_IRQ | SYNC0_MSH_ISH | SYNC0_MSIATTR_OIWB | SYNC0_MSIDATA(seq),
			    addr & SYNC1_MSIADDR_MASK);
	if (r)
		return -1;
	vsmmu_kick(s);
	for (int i = 0; i < POLL_LIMIT; i++) {
		if (*s->sync_word == seq) {
			s->last_error = err;
			return err;
		}
		if ((rd(s, SMMU_GERROR) ^ rd(s, SMMU_GERRORN)) & GERROR_CMDQ_ERR) {
			u32 e = skip_error(s);
			if (!err)
				err = e;
		}
	}
	s->last_error = err ? err : (u32)-1;
	return -1;
}

static int cmd_sync(struct vsmmu *s, u64 w0, u64 w1)
{
	if (vsmmu_queue(s, w0, w1))
		return -1;
	return vsmmu_sync(s);
}

int vsmmu_cfgi_ste(struct vsmmu *s, u32 sid)
{
	return cmd_sync(s, CMD_CFGI_STE | CMD0_SID(sid), CMD1_LEAF);
}

int vsmmu_cfgi_cd(struct vsmmu *s, u32 sid, u32 ssid, bool leaf)
{
	return cmd_sync(s, CMD_CFGI_CD | CMD0_SID(sid) | CMD0_SSID(ssid), leaf ? CMD1_LEAF : 0);
}

int vsmmu_cfgi_cd_all(struct vsmmu *s, u32 sid)
{
	return cmd_sync(s, CMD_CFGI_CD_ALL | CMD0_SID(sid), 0);
}

int vsmmu_tlbi_nh_va(struct vsmmu *s, u16 vmid, u16 asid, u64 va, bool leaf)
{
	return cmd_sync(s, CMD_TLBI_NH_VA | CMD0_VMID(vmid) | CMD0_ASID(asid),
			(va & CMD1_VA_MASK) | (leaf ? CMD1_LEAF : 0));
}

int vsmmu_tlbi_nh_asid(struct vsmmu *s, u16 vmid, u16 asid)
{
	return cmd_sync(s, CMD_TLBI_NH_ASID | CMD0_VMID(vmid) | CMD0_ASID(asid), 0);
}

int vsmmu_tlbi_nh_all(struct vsmmu *s, u16 vmid)
{
	return cmd_sync(s, CMD_TLBI_NH_ALL | CMD0_VMID(vmid), 0);
}

int vsmmu_tlbi_nsnh_all(struct vsmmu *s)
{
	return cmd_sync(s, CMD_TLBI_NSNH_ALL, 0);
}

int vsmmu_install_ste(struct vsmmu *s, u32 sid, const u64 ste[8])
{
	u64 *dst = vsmmu_ste(s, sid);
	dst[0] = 0;                      /* invalid while the other words change */
	dsb(ishst);
	for (int i = 1; i < 8; i++)
		dst[i] = ste[i];
	dsb(ishst);
	dst[0] = ste[0];
	return vsmmu_cfgi_ste(s, sid);
}

int vsmmu_init(struct vsmmu *s, uintptr_t base)
{
	int r;
	memset(s, 0, sizeof(*s));
	s->base = base;
	s->idr0 = rd(s, SMMU_IDR0);
	s->idr1 = rd(s, SMMU_IDR1);
	s->idr5 = rd(s, SMMU_IDR5);
	if (!s->idr0 && !s->idr1)
		return -1;
	if (!(s->idr0 & IDR0_S1P))
		return -2;
	s->strtab = strtab_mem;
	s->cmdq = cmdq_mem;
	s->evtq = evtq_mem;
	s->sync_word = &sync_mem;
	memset(strtab_mem, 0, sizeof(strtab_mem));
	memset(cmdq_mem, 0, sizeof(cmdq_mem));
	memset(evtq_mem, 0, sizeof(evtq_mem));
	sync_mem = 0;
	dsb(ishst);

	if ((r = write_cr0(s, 0)))
		return r;
	wr(s, SMMU_CR2, CR2_RECINVSID | CR2_PTM);
	writeq((u64)(uintptr_t)strtab_mem, base + SMMU_STRTAB_BASE);
	wr(s, SMMU_STRTAB_BASE_CFG, VSMMU_STRTAB_LOG2);          /* FMT linear, LOG2SIZE */
	writeq((u64)(uintptr_t)cmdq_mem | VSMMU_CMDQ_LOG2, base + SMMU_CMDQ_BASE);
	wr(s, SMMU_CMDQ_PROD, 0);
	wr(s, SMMU_CMDQ_CONS, 0);
	s->cmdq_prod = 0;
	s->cmdq_cons = 0;
	if ((r = write_cr0(s, CR0_CMDQEN)))
		return r;
	/* CFGI_ALL (CFGI_STE_RANGE with Range 31), TLBI_NSNH_ALL, CMD_SYNC */
	if (vsmmu_queue(s, CMD_CFGI_STE_RANGE, CMD1_RANGE_ALL) || vsmmu_queue(s, CMD_TLBI_NSNH_ALL, 0))
		return -4;
	if (vsmmu_sync(s))
		return -4;
	writeq((u64)(uintptr_t)evtq_mem | VSMMU_EVTQ_LOG2, base + SMMU_EVTQ_BASE);
	wr(s, SMMU_EVTQ_PROD, 0);
	wr(s, SMMU_EVTQ_CONS, 0);
	s->evtq_cons = 0;
	if ((r = write_cr0(s, CR0_CMDQEN | CR0_EVTQEN)))
		return r;
	u32 en = CR0_CMDQEN | CR0_EVTQEN;
	if (s->idr0 & IDR0_PRI) {        /* page request queue, as arm_smmu_device_reset with FEAT_PRI */
		int l = IDR1_PRIQS(s->idr1) < VSMMU_PRIQ_LOG2 ? (int)IDR1_PRIQS(s->idr1) : VSMMU_PRIQ_LOG2;
		s->priq = priq_mem;
		s->priq_log2 = l;
		memset(priq_mem, 0, sizeof(priq_mem));
		dsb(ishst);
		writeq((u64)(uintptr_t)priq_mem | (u64)l, base + SMMU_PRIQ_BASE);
		wr(s, SMMU_PRIQ_PROD, 0);
		wr(s, SMMU_PRIQ_CONS, 0);
		s->priq_cons = 0;
		en |= CR0_PRIQEN;
		if ((r = write_cr0(s, en)))
			return r;
	}
	return write_cr0(s, en | CR0_SMMUEN);
}

u32 vsmmu_events_pending(struct vsmmu *s)
{
	return q_pending(rd(s, SMMU_EVTQ_PROD), s->evtq_cons, VSMMU_EVTQ_LOG2);
}

bool vsmmu_read_event(struct vsmmu *s, u64 ev[4])
{
	const int l = VSMMU_EVTQ_LOG2;
	u32 i;
	if (!vsmmu_events_pending(s))
		return false;
	i = q_idx(s->evtq_cons, l);
	for (int k = 0; k < 4; k++)
		ev[k] = s->evtq[i * 4 + k];
	s->evtq_cons = q_next(s->evtq_cons, l);
	wr(s, SMMU_EVTQ_CONS, s->evtq_cons);
	return true;
}

u32 vsmmu_pprs_pending(struct vsmmu *s)
{
	if (!s->priq)
		return 0;
	return q_pending(rd(s, SMMU_PRIQ_PROD), s->priq_cons, s->priq_log2);
}

bool vsmmu_read_ppr(struct vsmmu *s, u64 ppr[2])
{
	if (!vsmmu_pprs_pending(s))
		return false;
	const int l = s->priq_log2;
	u32 i = q_idx(s->priq_cons, l);
	ppr[0] = s->priq[i * 2];
	ppr[1] = s->priq[i * 2 + 1];
	s->priq_cons = q_next(s->priq_cons, l);
	wr(s, SMMU_PRIQ_CONS, s->priq_cons);
	return true;
}

int vsmmu_resume(struct vsmmu *s, u32 sid, u32 stag, int resp)
{
	int r = vsmmu_queue(s, CMD_RESUME | ((u64)(resp & 3) << 12) | CMD0_SID(sid), stag & 0xffff);
	if (!r)
		vsmmu_kick(s);
	return r;
}

int vsmmu_stall_term(struct vsmmu *s, u32 sid)
{
	return cmd_sync(s, CMD_STALL_TERM | CMD0_SID(sid), 0);
}

int vsmmu_pri_resp(struct vsmmu *s, u32 sid, int ssid, u32 grpid, int resp)
{
	u64 w0 = CMD_PRI_RESP | CMD0_SID(sid) | (ssid < 0 ? 0 : (1ULL << 11) | CMD0_SSID((u32)ssid));
	int r = vsmmu_queue(s, w0, (grpid & 0x1ff) | ((u64)(resp & 3) << 12));
	if (!r)
		vsmmu_kick(s);
	return r;
}

int vsmmu_atc_inv(struct vsmmu *s, u32 sid, int ssid, u64 addr, u64 size)
{
	u64 w0 = CMD_ATC_INV | CMD0_SID(sid) | (ssid < 0 ? 0 : (1ULL << 11) | CMD0_SSID((u32)ssid));
	u64 w1 = ATC_INV_SIZE_ALL;
	if (size) {                        /* arm_smmu_atc_inv_to_cmd: the smallest aligned 2^n pages span */
		u64 first = addr >> 12, last = (addr + size - 1) >> 12, span = 0;
		while ((first ^ last) >> span)
			span++;
		w1 = ((first & ~((1ULL << span) - 1)) << 12) | span;
	}
	return cmd_sync(s, w0, w1);
}
