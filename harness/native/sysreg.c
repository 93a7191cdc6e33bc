/*
 * Native MRS prefilter of a vCPU (harness/sysregs.py, harness/native/sysreg.py).
 *
 * The one Unicorn UC_HOOK_INSN/UC_ARM64_INS_MRS hook of a vCPU, in C. For each MRS:
 * - an encoding no Python handler serves (bit clear in `python`) returns 0 at once: Unicorn executes it,
 *   as the Python hook's decline does, without a call into Python;
 * - CNTPCT_EL0 / CNTVCT_EL0 read at an EL where `fast` allows it (Python decides: EL1 of a vCPU without EL2,
 *   where the access is always allowed and Unicorn itself moves the PC) while the machine's virtual clock is
 *   lent here (`sr_clock.lent`) is a clock sample computed here with harness/clock.py's rule: the slice's
 *   time plus 16 << k ticks (k: samples so far in the slice, capped at 40), served only when that stays below
 *   the slice's cap (its planned end or the earliest deadline); the sample that reaches the cap reads the cap
 *   and ends the slice there (`stopped`, uc_emu_stop: what the clock's `stop` does from an MRS hook); every
 *   other case goes to Python;
 * - anything else calls `callback`, which runs the Python handlers (and first takes the clock back).
 * Python lends the clock just before each counted emu_start and takes it back (now, k, samples) at the next
 * observation point (harness/observe.py): before any Python callback of that Unicorn runs and when
 * emu_start returns. So the values, and every trace, are the pure-Python path's.
 *
 * The layouts are mirrored by harness/native/sysreg.py (`SrClock`, `SrCpu`); `sr_abi()` and the sizes let the
 * loader refuse a library built from another version of this file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#define SR_ABI 2
#define SR_ENCODINGS 32768               /* (op0 & 1) << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2 */
#define SR_SAMPLE_STEP 16u               /* harness/clock.py SAMPLE_STEP, _MAX_SHIFT */
#define SR_MAX_SHIFT 40u
#define SR_FAST_PCT 1u                   /* sr_cpu.fast bits: CNTPCT_EL0 / CNTVCT_EL0 at EL1 served here */
#define SR_FAST_VCT 2u

/* CNTPCT_EL0 = S3_3_C14_C0_1, CNTVCT_EL0 = S3_3_C14_C0_2 (Arm DDI 0487 D17.10) */
#define SR_IDX(op0, op1, crn, crm, op2) ((((op0) & 1u) << 14) | ((op1) << 11) | ((crn) << 7) | ((crm) << 3) | (op2))
#define SR_CNTPCT SR_IDX(3u, 3u, 14u, 0u, 1u)
#define SR_CNTVCT SR_IDX(3u, 3u, 14u, 0u, 2u)

typedef struct sr_clock {
    uint64_t now;                        /* virtual time, ticks */
    uint64_t cap;                        /* samples here stay below it */
    uint64_t samples;                    /* samples taken here since Python took the clock back */
    uint32_t k;                          /* samples in the current slice */
    uint32_t lent;                       /* 1: this struct holds the clock */
    uint32_t stopped;                    /* 1: a sample here reached the cap and stopped the slice */
    uint32_t pad;
} sr_clock;

struct sr_cpu;
typedef uint32_t (*sr_callback)(struct sr_cpu *cpu, int reg, const uc_arm64_cp_reg *cp);

typedef struct sr_cpu {
    sr_clock *clock;
    uc_engine *uc;
    sr_callback callback;
    uc_hook hook;
    uint64_t cntvoff;                    /* what CNTVCT_EL0 subtracts (CNTVOFF_EL2), set when the clock is lent */
    uint64_t served;                     /* accesses answered here (added to SysregHooks.served) */
    uint32_t fast;                       /* SR_FAST_* */
    uint32_t pad;
    uint8_t python[SR_ENCODINGS / 8];    /* encodings a Python read handler serves */
} sr_cpu;

static uc_err (*p_reg_read)(uc_engine *, int, void *);
static uc_err (*p_reg_write)(uc_engine *, int, const void *);
static uc_err (*p_hook_add)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...);
static uc_err (*p_emu_stop)(uc_engine *);

int sr_abi(void) { return SR_ABI; }
int sr_sizeof_clock(void) { return (int)sizeof(sr_clock); }
int sr_sizeof_cpu(void) { return (int)sizeof(sr_cpu); }

int sr_init(void *reg_read, void *reg_write, void *hook_add, void *emu_stop)
{
    if (!reg_read || !reg_write || !hook_add || !emu_stop)
        return -1;
    p_emu_stop = (uc_err (*)(uc_engine *))emu_stop;
    p_reg_read = (uc_err (*)(uc_engine *, int, void *))reg_read;
    p_reg_write = (uc_err (*)(uc_engine *, int, const void *))reg_write;
    p_hook_add = (uc_err (*)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...))hook_add;
    return 0;
}

/* A counter read served here: 1 (value written to Xt), or 0 (Python decides). */
static int sr_counter(sr_cpu *c, uc_engine *uc, int reg, uint32_t idx)
{
    sr_clock *k = c->clock;
    uint64_t pstate = 0, step, t, value;
    uint32_t bit = idx == SR_CNTPCT ? SR_FAST_PCT : SR_FAST_VCT;
    int at_cap;

    if (!k->lent || k->stopped || !(c->fast & bit) || k->now >= k->cap)
        return 0;
    if (p_reg_read(uc, UC_ARM64_REG_PSTATE, &pstate) != UC_ERR_OK || ((pstate >> 2) & 3) != 1)
        return 0;
    step = (uint64_t)SR_SAMPLE_STEP << (k->k < SR_MAX_SHIFT ? k->k : SR_MAX_SHIFT);
    at_cap = step >= k->cap - k->now;
    t = at_cap ? k->cap : k->now + step;
    value = bit == SR_FAST_PCT ? t : t - c->cntvoff;
    if (p_reg_write(uc, reg, &value) != UC_ERR_OK)
        return 0;                        /* not served: Python answers */
    k->now = t;
    k->k++;
    k->samples++;
    c->served++;
    if (at_cap) {                        /* the slice ends at its cap, after this instruction */
        k->stopped = 1;
        p_emu_stop(uc);
    }
    return 1;
}

static uint32_t sr_on_mrs(uc_engine *uc, int reg, const uc_arm64_cp_reg *cp, void *user)
{
    sr_cpu *c = (sr_cpu *)user;
    uint32_t idx;

    if (cp->op0 < 2 || cp->op0 > 3 || cp->op1 > 7 || cp->crn > 15 || cp->crm > 15 || cp->op2 > 7)
        return 0;
    idx = SR_IDX(cp->op0, cp->op1, cp->crn, cp->crm, cp->op2);
    if (!(c->python[idx >> 3] & (1u << (idx & 7))))
        return 0;                        /* nobody serves it: Unicorn executes it */
    if ((idx == SR_CNTPCT || idx == SR_CNTVCT) && sr_counter(c, uc, reg, idx))
        return 1;                        /* Unicorn moves the PC (an access it implements) */
    return c->callback(c, reg, cp);
}

sr_cpu *sr_new(uc_engine *uc, sr_clock *clock, void *callback)
{
    sr_cpu *c;
    if (!p_hook_add || !uc || !clock || !callback)
        return NULL;
    c = (sr_cpu *)calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->clock = clock;
    c->uc = uc;
    c->callback = (sr_callback)callback;
    if (p_hook_add(uc, &c->hook, UC_HOOK_INSN, (void *)sr_on_mrs, c, 1, 0, UC_ARM64_INS_MRS) != UC_ERR_OK) {
        free(c);
        return NULL;
    }
    return c;
}

/* Called once the vCPU's Unicorn is gone (its hook went with it). */
void sr_free(sr_cpu *c)
{
    free(c);
}
