/*
 * Native half of the TLBI trap (harness/trap.py, harness/native/__init__.py).
 *
 * One Unicorn UC_HOOK_INSN/UC_ARM64_INS_SYS hook per vCPU and one UC_HOOK_CODE hook per DSB address, both in
 * C: a TLBI (SYS with CRn 8, or CRn 9 for the FEAT_XS nXS forms) and a DSB executed after it are appended to
 * the vCPU's record buffer without calling Python; Python decodes and delivers the records, in order, at the
 * next point where anything else can observe them (harness/observe.py) or when the buffer fills (the hook
 * calls back into Python, which empties it, and returns).
 *
 * Why that is allowed: a broadcast TLBI only has to be complete, for the other observers, once the issuing PE
 * has executed a DSB after it (Arm DDI 0487, "Ordering and completion of TLB maintenance instructions"); in
 * this synchronous model no other agent runs between two points where Python code runs, so
 * nothing can tell a delivery at the next such point from a delivery at the instruction.
 *
 * What the hook still does on its own CPU, as the Python hook does: for an encoding the CPU model's Unicorn
 * executes (class TT_NATIVE) it returns 0 and Unicorn executes the TLBI (its own TLB flush, PC + 4); for one it
 * does not (TT_EMULATED: Outer Shareable, range, nXS, FEAT_TLBIW, RME on Unicorn 2.1's models) it writes
 * PC + 4, flushes the TLB with UC_CTL_TLB_FLUSH and returns 1. An encoding that is undefined at the current
 * EL (TT_UNDEFINED: the table is built by Python from devmodel/tlbi.py's decoder) goes to Python at once,
 * after the records before it, so that the guest takes its undefined-instruction exception at that PC.
 *
 * The layout of tt_cpu is mirrored by harness/native/__init__.py (`TtCpu`); `tt_abi()` and `tt_sizeof()` let
 * the loader refuse a library built from another version of this file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#define TT_ABI 1

enum { TT_PASS = 0, TT_NATIVE = 1, TT_EMULATED = 2, TT_UNDEFINED = 3 };   /* tt_cpu.cls values */
enum { TT_REC_TLBI = 1, TT_REC_DSB = 2 };                                  /* record kinds */
enum { TT_WHY_FULL = 1, TT_WHY_UNDEFINED = 2 };                            /* callback reasons */

#define TT_ENCODINGS 2048            /* (CRn & 1) << 10 | op1 << 7 | CRm << 3 | op2 */
#define TT_DSB_SYNCS 0x100u          /* site info bit: a full DSB of a shareable domain (sends a DVM Sync) */

/* One record: a TLBI (info = kind | EL << 8 | encoding << 16 | emulated << 32, xt = Xt) or a DSB (info =
 * kind | site info << 8, xt = 0). */
typedef struct {
    uint64_t pc;
    uint64_t xt;
    uint64_t info;
} tt_rec;

struct tt_cpu;
typedef uint32_t (*tt_callback)(struct tt_cpu *cpu, uint32_t why);

typedef struct tt_site {
    struct tt_cpu *cpu;
    uint32_t info;                    /* what tt_add_dsb was given: the DSB's domain/full bits | TT_DSB_SYNCS */
    uc_hook hook;
    struct tt_site *next;
} tt_site;

typedef struct tt_cpu {
    uint32_t n;                       /* records in buf */
    uint32_t cap;
    uint32_t pending;                 /* a TLBI was recorded since the last syncing DSB: DSBs are recorded */
    uint32_t why;                     /* reason of the current callback */
    tt_rec undefined;                 /* the TLBI handed to Python with TT_WHY_UNDEFINED */
    tt_rec *buf;
    uc_engine *uc;
    tt_callback callback;
    uc_hook sys_hook;
    tt_site *sites;
    uint8_t cls[4][TT_ENCODINGS];     /* [PSTATE.EL][encoding] -> TT_* class */
} tt_cpu;

/* The Unicorn entry points, from the library the Python binding loaded (passed by tt_init): no link-time
 * dependency, and never a second copy of libunicorn in the process. */
static uc_err (*p_reg_read)(uc_engine *, int, void *);
static uc_err (*p_reg_write)(uc_engine *, int, const void *);
static uc_err (*p_ctl)(uc_engine *, uc_control_type, ...);
static uc_err (*p_hook_add)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...);

int tt_abi(void) { return TT_ABI; }
int tt_sizeof(void) { return (int)sizeof(tt_cpu); }

int tt_init(void *reg_read, void *reg_write, void *ctl, void *hook_add)
{
    if (!reg_read || !reg_write || !ctl || !hook_add)
        return -1;
    p_reg_read = (uc_err (*)(uc_engine *, int, void *))reg_read;
    p_reg_write = (uc_err (*)(uc_engine *, int, const void *))reg_write;
    p_ctl = (uc_err (*)(uc_engine *, uc_control_type, ...))ctl;
    p_hook_add = (uc_err (*)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...))hook_add;
    return 0;
}

static inline void tt_push(tt_cpu *c, uint64_t pc, uint64_t xt, uint64_t info)
{
    tt_rec *r = &c->buf[c->n++];
    r->pc = pc;
    r->xt = xt;
    r->info = info;
    if (c->n >= c->cap) {             /* Python empties the buffer and returns */
        c->why = TT_WHY_FULL;
        c->callback(c, TT_WHY_FULL);
        c->n = 0;                     /* whatever the callback did: never write past the end */
    }
}

static uint32_t tt_on_sys(uc_engine *uc, int reg, const uc_arm64_cp_reg *cp, void *user)
{
    tt_cpu *c = (tt_cpu *)user;
    uint64_t pstate = 0, pc = 0;
    uint32_t crn = cp->crn, enc, cls, el;
    (void)reg;

    if (crn != 8 && crn != 9)
        return 0;                     /* DC / IC / AT / others: Unicorn executes them */
    enc = ((crn & 1) << 10) | ((cp->op1 & 7) << 7) | ((cp->crm & 15) << 3) | (cp->op2 & 7);
    p_reg_read(uc, UC_ARM64_REG_PSTATE, &pstate);
    el = (uint32_t)(pstate >> 2) & 3;
    cls = c->cls[el][enc];
    p_reg_read(uc, UC_ARM64_REG_PC, &pc);
    if (cls == TT_UNDEFINED || cls == TT_PASS) {
        c->undefined.pc = pc;
        c->undefined.xt = cp->val;
        c->undefined.info = TT_REC_TLBI | ((uint64_t)el << 8) | ((uint64_t)enc << 16);
        c->why = TT_WHY_UNDEFINED;
        return c->callback(c, TT_WHY_UNDEFINED);     /* the records before it first, then the exception */
    }
    c->pending = 1;
    tt_push(c, pc, cp->val, TT_REC_TLBI | ((uint64_t)el << 8) | ((uint64_t)enc << 16)
                            | ((uint64_t)(cls == TT_EMULATED) << 32));
    if (cls == TT_NATIVE)
        return 0;                     /* Unicorn executes it: PC + 4 and its own TLB flush */
    pc += 4;                          /* not implemented by Unicorn: skip it ourselves */
    p_reg_write(uc, UC_ARM64_REG_PC, &pc);
    p_ctl(uc, UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0));
    return 1;
}

static void tt_on_dsb(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    tt_site *s = (tt_site *)user;
    tt_cpu *c = s->cpu;
    (void)uc;
    (void)size;
    if (!c->pending)
        return;                       /* no TLBI since the last syncing DSB: nothing to complete */
    if (s->info & TT_DSB_SYNCS)
        c->pending = 0;
    tt_push(c, address, 0, TT_REC_DSB | ((uint64_t)s->info << 8));
}

tt_cpu *tt_new(uc_engine *uc, uint32_t cap, void *callback)
{
    tt_cpu *c;
    if (!p_hook_add || !uc || !callback || cap == 0)
        return NULL;
    c = (tt_cpu *)calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->buf = (tt_rec *)calloc(cap, sizeof(tt_rec));
    if (!c->buf) {
        free(c);
        return NULL;
    }
    c->cap = cap;
    c->uc = uc;
    c->callback = (tt_callback)callback;
    if (p_hook_add(uc, &c->sys_hook, UC_HOOK_INSN, (void *)tt_on_sys, c, 1, 0, UC_ARM64_INS_SYS) != UC_ERR_OK) {
        free(c->buf);
        free(c);
        return NULL;
    }
    return c;
}

int tt_add_dsb(tt_cpu *c, uint64_t address, uint32_t info)
{
    tt_site *s = (tt_site *)calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->cpu = c;
    s->info = info;
    if (p_hook_add(c->uc, &s->hook, UC_HOOK_CODE, (void *)tt_on_dsb, s, address, address) != UC_ERR_OK) {
        free(s);
        return -1;
    }
    s->next = c->sites;
    c->sites = s;
    return 0;
}

/* Called once the vCPU's Unicorn is gone (its hooks went with it): the memory only. */
void tt_free(tt_cpu *c)
{
    tt_site *s, *next;
    if (!c)
        return;
    for (s = c->sites; s; s = next) {
        next = s->next;
        free(s);
    }
    free(c->buf);
    free(c);
}

/*
 * Trace lines from compact records (harness/trace/sinks.py `CompactLog`, the design of QEMU's simple trace
 * backend: binary records at the event, formatted later in bulk). Independent of the trap above.
 *
 * A record in `log` is `tid, seq, ts, value...` (int64). Template `tid` starts at prog[index[tid]]: nvalues,
 * nholes, the pieces' total length, the nholes + 1 pieces as (offset in blob, length), then the nholes hole
 * kinds: 0 seq, 1 ts, 2 + i the decimal text of value i, TT_HOLE_HEX | (2 + i) its text as Python's `%#x`
 * writes it ("0x0", "-0x5"). Writes whole records' lines to out (at most cap bytes); returns the int64s
 * consumed, with the bytes written in res[0] and the records in res[1].
 */
#define TT_HOLE_HEX 0x100
#define TT_INT_TEXT 24                /* the longest text of an int64 hole, "-0x8000000000000000" or decimal */

static char *tt_int_text(char *p, int64_t v, int hex)
{
    char tmp[TT_INT_TEXT];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = hex ? "0123456789abcdef"[u & 15] : (char)('0' + u % 10);
        u = hex ? u >> 4 : u / 10;
    } while (u);
    if (v < 0)
        *p++ = '-';
    if (hex) {
        *p++ = '0';
        *p++ = 'x';
    }
    while (n)
        *p++ = tmp[--n];
    return p;
}

long tt_render(const int64_t *log, long n, const int64_t *index, long ntpl, const int64_t *prog,
               const char *blob, char *out, long cap, long *res)
{
    long i = 0, used = 0, recs = 0;
    while (i < n) {
        int64_t tid = log[i], nval, nholes, k;
        const int64_t *t, *pieces, *kinds;
        char *p;
        if (tid < 0 || tid >= ntpl)
            break;                    /* not a record this table knows: the caller's bug, stop here */
        t = prog + index[tid];
        nval = t[0];
        nholes = t[1];
        pieces = t + 3;
        kinds = pieces + 2 * (nholes + 1);
        if (i + 3 + nval > n)
            break;
        if (used + t[2] + nholes * TT_INT_TEXT > cap)
            break;                    /* out is full: the caller writes it and calls again */
        p = out + used;
        for (k = 0;; k++) {
            int64_t kind, v;
            memcpy(p, blob + pieces[2 * k], (size_t)pieces[2 * k + 1]);
            p += pieces[2 * k + 1];
            if (k == nholes)
                break;
            kind = kinds[k];
            if ((kind & 0xFF) >= 2 + nval)
                kind = 0;             /* no such value (a malformed table): show the seq, never read past */
            v = log[i + 1 + (kind & 0xFF)];
            p = tt_int_text(p, v, (kind & TT_HOLE_HEX) != 0);
        }
        used = p - out;
        i += 3 + nval;
        recs++;
    }
    res[0] = used;
    res[1] = recs;
    return i;
}
