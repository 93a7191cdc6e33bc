/*
 * A minimal guest SMMUv3 driver (IHI 0070) for the VMM's vSMMU: linear stream table, one CD table per
 * stream, command queue with CMD_SYNC (MSI write to a guest word, as Linux arm_smmu_cmdq_poll_until_msi),
 * event queue, and the invalidations a guest issues (CFGI_STE, CFGI_CD, TLBI_NH_VA/ASID/ALL, TLBI_NSNH_ALL).
 *
 * Bit positions are those of Linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h (register offsets, STRTAB_STE_*,
 * CTXDESC_CD_*, CMDQ_*); the harness test tests/harness/test_vsmmu.py decodes what this code writes with
 * devmodel's layouts (devmodel/smmuv3/{ste,cd,commands}.py), so the two are checked against each other.
 *
 * Recoverable faults and ATS, when the SMMU offers them (IDR0.STALL_MODEL, IDR0.PRI, IDR0.ATS): stall event
 * fields (Stall, STAG), CMD_RESUME / CMD_STALL_TERM (arm_smmu_page_response: no CMD_SYNC after RESUME), the PRI
 * queue (set up by vsmmu_init when IDR0.PRI=1, as arm_smmu_device_reset; entries PRIQ_0_* / PRIQ_1_*),
 * CMD_PRI_RESP, CMD_ATC_INV (arm_smmu_atc_inv_to_cmd's Size encoding: 2^Size 4 KiB pages).
 *
 * Everything lives in guest RAM (.bss, so addresses are IPAs; guest MMU off or identity-mapped). Single CPU:
 * no locking. Not provided: 2-level stream/CD tables, wired interrupts (events are polled).
 */
#ifndef GUEST_VSMMU_H
#define GUEST_VSMMU_H

#include "guest.h"
#include "pgtable.h"

#define VSMMU_BASE 0x09050000UL

/* registers (page 0, page 1 at +0x10000) */
#define SMMU_IDR0 0x00
#define SMMU_IDR1 0x04
#define SMMU_IDR5 0x14
#define SMMU_CR0 0x20
#define SMMU_CR0ACK 0x24
#define SMMU_CR1 0x28
#define SMMU_CR2 0x2C
#define SMMU_GBPA 0x44
#define SMMU_IRQ_CTRL 0x50
#define SMMU_GERROR 0x60
#define SMMU_GERRORN 0x64
#define SMMU_STRTAB_BASE 0x80
#define SMMU_STRTAB_BASE_CFG 0x88
#define SMMU_CMDQ_BASE 0x90
#define SMMU_CMDQ_PROD 0x98
#define SMMU_CMDQ_CONS 0x9C
#define SMMU_EVTQ_BASE 0xA0
#define SMMU_EVTQ_PROD 0x100A8
#define SMMU_EVTQ_CONS 0x100AC
#define SMMU_PRIQ_BASE 0xC0
#define SMMU_PRIQ_PROD 0x100C8
#define SMMU_PRIQ_CONS 0x100CC

#define CR0_SMMUEN (1u << 0)
#define CR0_PRIQEN (1u << 1)
#define CR0_EVTQEN (1u << 2)
#define CR0_CMDQEN (1u << 3)
#define GERROR_CMDQ_ERR (1u << 0)
#define IDR0_S1P (1u << 1)
#define IDR0_S2P (1u << 0)
#define IDR0_BTM (1u << 5)
#define IDR0_HTTU(i) (((i) >> 6) & 3)        /* 1 access flag, 2 access + dirty */
#define IDR0_ATS (1u << 10)
#define IDR0_MSI (1u << 13)
#define IDR0_PRI (1u << 16)
#define IDR0_STALL_MODEL(i) (((i) >> 24) & 3) /* 0 stall + terminate, 1 terminate only, 2 stall forced */
#define IDR1_PRIQS(i) (((i) >> 11) & 0x1f)
#define CMDQ_CONS_ERR(c) (((c) >> 24) & 0x7f)
#define CMDQ_ERR_ILL 1
#define CMDQ_ERR_ABT 2

/* command opcodes (IHI 0070 4.x) */
#define CMD_CFGI_STE 0x03
#define CMD_CFGI_STE_RANGE 0x04
#define CMD_CFGI_CD 0x05
#define CMD_CFGI_CD_ALL 0x06
#define CMD_TLBI_NH_ALL 0x10
#define CMD_TLBI_NH_ASID 0x11
#define CMD_TLBI_NH_VA 0x12
#define CMD_TLBI_NH_VAA 0x13
#define CMD_TLBI_EL2_ALL 0x20
#define CMD_TLBI_S12_VMALL 0x28
#define CMD_TLBI_NSNH_ALL 0x30
#define CMD_ATC_INV 0x40
#define CMD_PRI_RESP 0x41
#define CMD_RESUME 0x44
#define CMD_STALL_TERM 0x45
#define CMD_SYNC 0x46

/* CMD_RESUME Resp (Linux CMDQ_RESUME_0_RESP_*) and CMD_PRI_RESP Resp (Linux enum pri_resp) */
#define RESUME_TERM 0
#define RESUME_RETRY 1
#define RESUME_ABORT 2
#define PRI_RESP_DENY 0
#define PRI_RESP_FAIL 1
#define PRI_RESP_SUCC 2
#define ATC_INV_SIZE_ALL 52

/* STE.Config */
#define STE_CFG_ABORT 0x0
#define STE_CFG_BYPASS 0x4
#define STE_CFG_S1 0x5

/* event record (IHI 0070 7.3) */
#define EVT_TYPE(e) ((u32)((e)[0] & 0xff))
#define EVT_SID(e) ((u32)((e)[0] >> 32))
#define EVT_INPUT_ADDR(e) ((e)[2])
#define EVT_SSV(e) ((u32)((e)[0] >> 11) & 1)
#define EVT_SSID(e) ((u32)((e)[0] >> 12) & 0xfffff)
#define EVT_STAG(e) ((u32)((e)[1] & 0xffff))
#define EVT_STALL(e) ((u32)((e)[1] >> 31) & 1)
#define EVT_PNU(e) ((u32)((e)[1] >> 33) & 1)
#define EVT_IND(e) ((u32)((e)[1] >> 34) & 1)
#define EVT_RNW(e) ((u32)((e)[1] >> 35) & 1)
#define EVT_F_ACCESS 0x12
#define EVT_F_PERMISSION 0x13

/* PRI queue entry (IHI 0070 8.1; Linux PRIQ_0_* / PRIQ_1_*) */
#define PPR_SID(p) ((u32)(p)[0])
#define PPR_SSID(p) ((u32)((p)[0] >> 32) & 0xfffff)
#define PPR_PRIV(p) ((u32)((p)[0] >> 58) & 1)
#define PPR_EXEC(p) ((u32)((p)[0] >> 59) & 1)
#define PPR_READ(p) ((u32)((p)[0] >> 60) & 1)
#define PPR_WRITE(p) ((u32)((p)[0] >> 61) & 1)
#define PPR_LAST(p) ((u32)((p)[0] >> 62) & 1)
#define PPR_SSV(p) ((u32)((p)[0] >> 63) & 1)
#define PPR_GRPID(p) ((u32)((p)[1] & 0x1ff))
#define PPR_ADDR(p) ((p)[1] & ~0xfffULL)

/* STE word 1 / CD word 0 fields the fault and ATS paths set */
#define STE1_S1STALLD (1ULL << 27)
#define STE1_EATS_TRANS (1ULL << 28)
#define CD0_HTTU_HD (1ULL << 42)
#define CD0_HTTU_HA (1ULL << 43)
#define CD0_STALL (1ULL << 44)
#define EVT_F_TRANSLATION 0x10
#define EVT_C_BAD_STE 0x04
#define EVT_F_CD_FETCH 0x09
#define EVT_C_BAD_CD 0x0A

#define VSMMU_STRTAB_LOG2 8          /* 256 StreamIDs */
#define VSMMU_CMDQ_LOG2 6            /* 64 commands */
#define VSMMU_EVTQ_LOG2 5            /* 32 events */
#define VSMMU_PRIQ_LOG2 5            /* 32 page requests (or IDR1.PRIQS if smaller) */

struct vsmmu {
	uintptr_t base;
	u32 idr0, idr1, idr5;
	u64 *strtab;                     /* 1 << VSMMU_STRTAB_LOG2 STEs of 8 u64 */
	u64 *cmdq;                       /* 2 u64 per command */
	u64 *evtq;                       /* 4 u64 per event */
	u64 *priq;                       /* 2 u64 per page request; NULL without IDR0.PRI */
	int priq_log2;
	u32 priq_cons;
	u32 cmdq_prod;                   /* index | wrap bit */
	u32 cmdq_cons;                   /* last CMDQ_CONS read (refreshed only when the queue looks full) */
	u32 evtq_cons;
	volatile u32 *sync_word;         /* CMD_SYNC MSI target */
	u32 sync_seq;
	u32 last_error;                  /* CMDQ_CONS.ERR of the last failed submission, 0 if none */
};

/* A context descriptor for a stage-1 table tree (4 KiB granule, TTB0 only, inner-shareable WBWA walks,
 * IPS 48 bits, R=1 so faults are recorded, A=1, AA64, MAIR = PGT_MAIR). `aset` = CD.ASET: 1 exempts the
 * ASID from broadcast TLB maintenance (Linux sets it for DMA domains), 0 shares it with the CPU (SVA).
 * Writes the 64 bytes at cd, word 0 (with V) last. */
void vsmmu_cd_write(u64 *cd, u16 asid, const struct pgtable *pt, bool aset);
/* The raw words of an STE for stage 1 with a linear CD table of 2^s1cdmax entries at cd_ipa. */
void vsmmu_ste_s1(u64 ste[8], u64 cd_ipa, int s1cdmax);

/* Probe, set up the tables and queues, enable (CR0/CR0ACK handshakes), CFGI_ALL + TLBI_NSNH_ALL + sync.
 * Returns 0, or a negative number: -1 no SMMU at base, -2 no stage 1, -3 a CR0ACK timeout, -4 sync error. */
int vsmmu_init(struct vsmmu *s, uintptr_t base);
u64 *vsmmu_ste(struct vsmmu *s, u32 sid);
/* Install a raw STE (V written last) and issue CFGI_STE + CMD_SYNC. Returns vsmmu_sync's result. */
int vsmmu_install_ste(struct vsmmu *s, u32 sid, const u64 ste[8]);

/* Queue one command (waits while the queue is full); not visible to the SMMU until vsmmu_kick. */
int vsmmu_queue(struct vsmmu *s, u64 w0, u64 w1);
/* Publish queued commands (CMDQ_PROD write: one VM exit). */
void vsmmu_kick(struct vsmmu *s);
/* Queue CMD_SYNC (CS=SIG_IRQ with an MSI write to sync_word), kick, and wait for it.
 * Returns 0, or CMDQ_CONS.ERR (the queue stopped at a command with that error; the driver then skips the
 * failing command, acknowledges GERROR.CMDQ_ERR and resumes, as Linux arm_smmu_cmdq_skip_err does). */
int vsmmu_sync(struct vsmmu *s);

int vsmmu_cfgi_ste(struct vsmmu *s, u32 sid);
int vsmmu_cfgi_cd(struct vsmmu *s, u32 sid, u32 ssid, bool leaf);
int vsmmu_cfgi_cd_all(struct vsmmu *s, u32 sid);
int vsmmu_tlbi_nh_va(struct vsmmu *s, u16 vmid, u16 asid, u64 va, bool leaf);
int vsmmu_tlbi_nh_asid(struct vsmmu *s, u16 vmid, u16 asid);
int vsmmu_tlbi_nh_all(struct vsmmu *s, u16 vmid);
int vsmmu_tlbi_nsnh_all(struct vsmmu *s);

/* Pop one event record; returns false when the queue is empty. */
bool vsmmu_read_event(struct vsmmu *s, u64 ev[4]);
/* Number of events waiting. */
u32 vsmmu_events_pending(struct vsmmu *s);

/* Pop one PRI queue entry; returns false when the queue is empty (or there is none). */
bool vsmmu_read_ppr(struct vsmmu *s, u64 ppr[2]);
u32 vsmmu_pprs_pending(struct vsmmu *s);

/* CMD_RESUME (sid, stag) with RESUME_RETRY / RESUME_ABORT / RESUME_TERM, published without a CMD_SYNC as Linux
 * arm_smmu_page_response does ("it doesn't do anything for RESUME"); returns vsmmu_queue's result. */
int vsmmu_resume(struct vsmmu *s, u32 sid, u32 stag, int resp);
int vsmmu_stall_term(struct vsmmu *s, u32 sid);
/* CMD_PRI_RESP for group grpid of sid (ssid < 0: no SubstreamID), PRI_RESP_*; published without a CMD_SYNC. */
int vsmmu_pri_resp(struct vsmmu *s, u32 sid, int ssid, u32 grpid, int resp);
/* CMD_ATC_INV of [addr, addr + size) of sid (ssid < 0: none; size 0: everything) + CMD_SYNC. */
int vsmmu_atc_inv(struct vsmmu *s, u32 sid, int ssid, u64 addr, u64 size);

#endif
