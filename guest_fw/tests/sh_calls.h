/*
 * Semihosting calls with their parameter block built on the stack ("Semihosting for AArch32 and AArch64":
 * X1 points to a block of 64-bit fields), for the sh_*.c guests.
 */
#ifndef SH_CALLS_H
#define SH_CALLS_H
#include "guest.h"

static inline s64 sh(u64 op, u64 p) { return (s64)semihosting_call(op, p); }
static inline s64 err(void) { return sh(0x13, 0); }                  /* SYS_ERRNO */
static inline s64 one(u64 op, u64 a) { u64 b[1] = { a }; return sh(op, (u64)b); }
static inline s64 two(u64 op, u64 a, u64 c) { u64 b[2] = { a, c }; return sh(op, (u64)b); }
static inline s64 three(u64 op, u64 a, u64 c, u64 d) { u64 b[3] = { a, c, d }; return sh(op, (u64)b); }
static inline s64 sopen(const char *n, u64 mode) { return three(0x01, (u64)n, mode, strlen(n)); }

#endif
