/*
 * A minimal guest virtio-iommu driver (OASIS virtio v1.2 section 5.13) on a virtio-mmio transport (4.2.2,
 * the Version 2 register interface: virtio-iommu requires VIRTIO_F_VERSION_1), with the page-table-sharing
 * extension of docs/virtio-iommu.md (F_ATTACH_TABLE 8, ATTACH_TABLE 6, INVALIDATE 7, probe properties 2..7).
 *
 * Like Linux drivers/iommu/virtio-iommu.c: each request is one chain of two descriptors, the device-readable
 * request and the device-writable tail (PROBE: probe_size bytes of properties and the tail); the status is the
 * first byte of the tail, at the end of the writable part. Event buffers of struct virtio_iommu_fault size wait
 * on the event queue. Every request is sent and waited for (one QueueNotify each: one VM exit); the used ring
 * is polled (no interrupt controller). Everything lives in .bss (guest MMU off or identity-mapped).
 *
 * Single CPU, no locking; one device. Not provided: indirect descriptors, event-index suppression, hot-plug.
 */
#ifndef GUEST_VIOMMU_H
#define GUEST_VIOMMU_H

#include "guest.h"

/* QEMU virt: transport i at 0x0a000000 + 0x200 * i; the first -device virtio-* gets transport 31 */
#define VIRTIO_MMIO_BASE(i) (0x0a000000UL + 0x200UL * (i))
#define VIOMMU_MMIO_DEFAULT VIRTIO_MMIO_BASE(31)

/* feature bits (5.13.3; F_ATTACH_TABLE: the extension) */
#define VIOMMU_F_INPUT_RANGE 0
#define VIOMMU_F_DOMAIN_RANGE 1
#define VIOMMU_F_MAP_UNMAP 2
#define VIOMMU_F_PROBE 4
#define VIOMMU_F_MMIO 5
#define VIOMMU_F_BYPASS_CONFIG 6
#define VIOMMU_F_ATTACH_TABLE 8
#define VIRTIO_F_VERSION_1 32

/* status codes (5.13.6) */
#define VIOMMU_S_OK 0
#define VIOMMU_S_IOERR 1
#define VIOMMU_S_UNSUPP 2
#define VIOMMU_S_DEVERR 3
#define VIOMMU_S_INVAL 4
#define VIOMMU_S_RANGE 5
#define VIOMMU_S_NOENT 6
#define VIOMMU_S_FAULT 7
#define VIOMMU_S_NOMEM 8
#define VIOMMU_S_NONE 0xff          /* the device returned the buffer unwritten (used length 0) */

#define VIOMMU_MAP_F_READ (1u << 0)
#define VIOMMU_MAP_F_WRITE (1u << 1)
#define VIOMMU_ATTACH_F_BYPASS (1u << 0)

/* INVALIDATE scope and flags (extension) */
#define VIOMMU_INVAL_S_DOMAIN 1
#define VIOMMU_INVAL_S_PASID 2
#define VIOMMU_INVAL_S_VA 4
#define VIOMMU_INVAL_F_CONFIG 1
#define VIOMMU_INVAL_F_LEAF 2

/* pstf_arm / pgtf_arm flags (extension) */
#define VIOMMU_PSTF_F_BTM 4
#define VIOMMU_PGTF_F_HW_ACCESS 1
#define VIOMMU_PGTF_F_HW_DIRTY 2

/* fault reasons and flags (5.13.6.9) */
#define VIOMMU_FAULT_R_UNKNOWN 0
#define VIOMMU_FAULT_R_DOMAIN 1
#define VIOMMU_FAULT_R_MAPPING 2
#define VIOMMU_FAULT_F_READ (1u << 0)
#define VIOMMU_FAULT_F_WRITE (1u << 1)
#define VIOMMU_FAULT_F_ADDRESS (1u << 8)

#define VIOMMU_QSZ 16
#define VIOMMU_MAX_RESV 4

struct viommu_vq {
	u16 num, last_used, avail_idx;
	struct { u64 addr; u32 len; u16 flags, next; } *desc;
	volatile u16 *avail;            /* flags, idx, ring[num], used_event */
	volatile u32 *used;             /* flags|idx, then {id, len} pairs */
};

struct viommu_resv { u8 subtype; u64 start, end; };

struct viommu_fault { u8 reason; u32 flags, endpoint; u64 address; };

struct viommu {
	uintptr_t base;
	u64 features;                   /* negotiated */
	u64 page_size_mask, input_start, input_end;
	u32 domain_start, domain_end, probe_size;
	struct viommu_vq req, evt;
	u32 kicks;                      /* QueueNotify writes (VM exits) */
	u32 last_used_len;
	/* from the last PROBE */
	int nr_resv;
	struct viommu_resv resv[VIOMMU_MAX_RESV];
	bool has_pgtf, has_pstf;
	u16 pgtf_format, pstf_format;
	u8 asid_bits, output_bits, pasid_bits;
	u64 pgtf_flags, pstf_flags, probe_page_size_mask;
};

/* Reset, negotiate VERSION_1 + the 1.2 features it offers (+ F_ATTACH_TABLE when `want_tables` and offered),
 * set up both queues, DRIVER_OK, post the event buffers. Returns 0, or -1 not a virtio-iommu at `base`,
 * -2 Version 1 (legacy) transport, -3 FEATURES_OK refused, -4 a queue unavailable. */
int viommu_init(struct viommu *v, uintptr_t base, bool want_tables);
bool viommu_has(const struct viommu *v, int feature);

/* One request: `req` (readable) and `wlen` writable bytes at `wbuf` (the tail is its last 4 bytes).
 * Returns the status (VIOMMU_S_*), VIOMMU_S_NONE if the device wrote nothing. */
u8 viommu_request(struct viommu *v, const void *req, u32 rlen, void *wbuf, u32 wlen);

u8 viommu_attach(struct viommu *v, u32 domain, u32 endpoint, u32 flags);
u8 viommu_detach(struct viommu *v, u32 domain, u32 endpoint);
u8 viommu_map(struct viommu *v, u32 domain, u64 virt_start, u64 virt_end, u64 phys, u32 flags);
u8 viommu_unmap(struct viommu *v, u32 domain, u64 virt_start, u64 virt_end);
/* PROBE `endpoint`; the parsed properties go into v (resv, pgtf, pstf, ...). */
u8 viommu_probe(struct viommu *v, u32 endpoint);
/* ATTACH_TABLE, format PGTF_ARM_LPAE: the guest's stage-1 context. */
u8 viommu_attach_pgt(struct viommu *v, u32 domain, u32 endpoint, u16 asid, u64 tcr, u64 ttbr0, u64 ttbr1,
		     u64 mair);
/* ATTACH_TABLE, format PSTF_ARM_SV3: the guest's CD table. */
u8 viommu_attach_pst(struct viommu *v, u32 domain, u32 endpoint, u64 s1contextptr, u8 s1fmt, u8 s1dss,
		     u32 s1cdmax);
u8 viommu_invalidate(struct viommu *v, u32 domain, u16 scope, u16 flags, u32 pasid, u64 asid, u64 virt_start,
		     u64 nr_pages, u8 granule);
/* The stage-1 context of this CPU's EL1&0 regime (TTBR0_EL1, TCR_EL1, MAIR_EL1): SVA's shared tables. */
u8 viommu_attach_cpu_tables(struct viommu *v, u32 domain, u32 endpoint);

/* Pop one fault report from the event queue (and give the buffer back); false when none. */
bool viommu_read_fault(struct viommu *v, struct viommu_fault *f);

#endif
