/*
 * Helpers for the TLBI guest tests: issue TLBIs by name and build their Xt operands
 * (Arm ARM C5.5 TLBI pages; field layout also in devmodel/tlbi.py).
 */
#ifndef TLBI_TEST_H
#define TLBI_TEST_H
#include "guest.h"

#define TLBI(op) asm volatile("tlbi " #op : : : "memory")
#define TLBI_X(op, x) asm volatile("tlbi " #op ", %0" : : "r"((u64)(x)) : "memory")
/* generic form for encodings the assembler does not name (FEAT_TLBIW VMALLWS2E1*) */
#define SYS_OP(op1, crn, crm, op2) asm volatile("sys #" #op1 ", c" #crn ", c" #crm ", #" #op2 : : : "memory")

/* VA operand: ASID[63:48] TTL[47:44] VA[55:12] */
static inline u64 xt_va(u64 asid, u64 ttl, u64 va)
{
	return (asid << 48) | ((ttl & 0xf) << 44) | ((va >> 12) & ((1ULL << 44) - 1));
}

/* IPA operand: NS[63] TTL[47:44] IPA[55:12] */
static inline u64 xt_ipa(u64 ns, u64 ttl, u64 ipa)
{
	return (ns << 63) | ((ttl & 0xf) << 44) | ((ipa >> 12) & ((1ULL << 44) - 1));
}

/* Range operand: ASID[63:48] TG[47:46] SCALE[45:44] NUM[43:39] TTL[38:37] BaseADDR[36:0] */
static inline u64 xt_range(u64 asid, u64 tg, u64 scale, u64 num, u64 ttl, u64 base)
{
	return (asid << 48) | ((tg & 3) << 46) | ((scale & 3) << 44) | ((num & 31) << 39) | ((ttl & 3) << 37) |
	       (base & ((1ULL << 37) - 1));
}

#endif
