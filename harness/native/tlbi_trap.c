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
 * DSB hooks, two ways: one UC_HOOK_CODE per DSB address (`tt_add_dsb`), or - for vCPUs whose runs are counted,
 * where Unicorn's own instruction-count hook already calls the code-hook helper at every instruction and that
 * helper walks the whole code-hook list each time (helper_uc_tracecode) - one hook over [lowest, highest]
 * site that finds the address in a sorted table (`tt_ranged(c, 1)`): the same records in the same order, and a
 * list walk of one entry instead of one per DSB. Uncounted runs keep the per-address hooks (the range hook
 * would add a call at every instruction in the range there).
 *
 * The layout of tt_cpu is mirrored by harness/native/__init__.py (`TtCpu`); `tt_abi()` and `tt_sizeof()` let
 * the loader refuse a library built from another version of this file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#define TT_ABI 3

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
    uint64_t addr;
    uc_hook hook;                     /* 0 while the sites share the range hook */
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
    uint64_t *range_addr;             /* every DSB site, sorted by address (stable) */
    uint32_t *range_info;
    uint32_t range_n, range_cap;
    uc_hook range_hook;               /* 0: none */
    uint32_t ranged;                  /* 1: the range hook stands for the sites (tt_ranged) */
    uint32_t pad;
} tt_cpu;

/* The Unicorn entry points, from the library the Python binding loaded (passed by tt_init): no link-time
 * dependency, and never a second copy of libunicorn in the process. */
static uc_err (*p_reg_read)(uc_engine *, int, void *);
static uc_err (*p_reg_write)(uc_engine *, int, const void *);
static uc_err (*p_ctl)(uc_engine *, uc_control_type, ...);
static uc_err (*p_hook_add)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...);
static uc_err (*p_hook_del)(uc_engine *, uc_hook);

int tt_abi(void) { return TT_ABI; }
int tt_sizeof(void) { return (int)sizeof(tt_cpu); }

int tt_init(void *reg_read, void *reg_write, void *ctl, void *hook_add, void *hook_del)
{
    if (!reg_read || !reg_write || !ctl || !hook_add || !hook_del)
        return -1;
    p_hook_del = (uc_err (*)(uc_engine *, uc_hook))hook_del;
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

static inline void tt_dsb(tt_cpu *c, uint64_t address, uint32_t info)
{
    if (!c->pending)
        return;                       /* no TLBI since the last syncing DSB: nothing to complete */
    if (info & TT_DSB_SYNCS)
        c->pending = 0;
    tt_push(c, address, 0, TT_REC_DSB | ((uint64_t)info << 8));
}

static void tt_on_dsb(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    tt_site *s = (tt_site *)user;
    (void)uc;
    (void)size;
    tt_dsb(s->cpu, address, s->info);
}

/* The one hook over the ranged sites: every instruction in [lowest, highest] comes here. */
static void tt_on_range(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    tt_cpu *c = (tt_cpu *)user;
    uint32_t lo = 0, hi = c->range_n;
    (void)uc;
    (void)size;
    while (lo < hi) {                 /* first entry >= address */
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->range_addr[mid] < address)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < c->range_n && c->range_addr[lo] == address; lo++)
        tt_dsb(c, address, c->range_info[lo]);    /* a site added twice: twice, in order, as two hooks */
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

static int tt_add_range_hook(tt_cpu *c);
static int tt_record_site(tt_cpu *c, uint64_t address, uint32_t info);
static int tt_add_site_hook(tt_cpu *c, tt_site *s);

int tt_add_dsb(tt_cpu *c, uint64_t address, uint32_t info)
{
    tt_site *s = (tt_site *)calloc(1, sizeof(*s));
    if (!s || tt_record_site(c, address, info) != 0) {
        free(s);
        return -1;
    }
    s->cpu = c;
    s->info = info;
    s->addr = address;
    if (c->ranged ? tt_add_range_hook(c) != 0 : tt_add_site_hook(c, s) != 0) {
        free(s);
        return -1;                    /* (the table keeps the site: a failed add fails the whole run) */
    }
    s->next = c->sites;
    c->sites = s;
    return 0;
}

static int tt_record_site(tt_cpu *c, uint64_t address, uint32_t info)
{
    uint32_t i;
    if (c->range_n == c->range_cap) {
        uint32_t cap = c->range_cap ? 2 * c->range_cap : 64;
        uint64_t *a = (uint64_t *)realloc(c->range_addr, cap * sizeof(*a));
        uint32_t *f;
        if (!a)
            return -1;
        c->range_addr = a;
        f = (uint32_t *)realloc(c->range_info, cap * sizeof(*f));
        if (!f)
            return -1;
        c->range_info = f;
        c->range_cap = cap;
    }
    for (i = c->range_n; i > 0 && c->range_addr[i - 1] > address; i--) {     /* stable insertion */
        c->range_addr[i] = c->range_addr[i - 1];
        c->range_info[i] = c->range_info[i - 1];
    }
    c->range_addr[i] = address;
    c->range_info[i] = info;
    c->range_n++;
    return 0;
}

static int tt_add_range_hook(tt_cpu *c)
{
    if (c->range_hook) {
        p_hook_del(c->uc, c->range_hook);
        c->range_hook = 0;
    }
    if (p_hook_add(c->uc, &c->range_hook, UC_HOOK_CODE, (void *)tt_on_range, c, c->range_addr[0],
                   c->range_addr[c->range_n - 1]) != UC_ERR_OK) {
        c->range_hook = 0;
        return -1;
    }
    return 0;
}

static int tt_add_site_hook(tt_cpu *c, tt_site *s)
{
    return p_hook_add(c->uc, &s->hook, UC_HOOK_CODE, (void *)tt_on_dsb, s, s->addr, s->addr) == UC_ERR_OK ? 0 : -1;
}

/* One hook over every DSB site (on != 0: for counted runs, see the top of this file) or one per site. The
 * caller flushes the translation cache before the vCPU runs again (code translated with the other hooks). */
int tt_ranged(tt_cpu *c, int on)
{
    tt_site *s, **order;
    uint32_t n = 0, i;
    if (on ? c->ranged : !c->ranged)
        return 0;
    for (s = c->sites; s; s = s->next)
        n++;
    order = (tt_site **)calloc(n ? n : 1, sizeof(*order));
    if (!order)
        return -1;
    for (s = c->sites, i = n; s; s = s->next)
        order[--i] = s;                   /* the order they were added in */
    c->ranged = on ? 1 : 0;
    for (i = 0; i < n; i++) {
        if (on && order[i]->hook) {
            p_hook_del(c->uc, order[i]->hook);
            order[i]->hook = 0;
        } else if (!on && tt_add_site_hook(c, order[i]) != 0) {
            free(order);
            return -1;
        }
    }
    free(order);
    if (on)
        return n ? tt_add_range_hook(c) : 0;
    if (c->range_hook)
        p_hook_del(c->uc, c->range_hook);
    c->range_hook = 0;
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
    free(c->range_addr);
    free(c->range_info);
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

/*
 * Compact trace records straight from the trap's records (harness/trap.py `_deliver_cx`), for a vCPU whose DVM
 * receivers are all quiet and repeatable (devmodel/dvm.py): Python makes a plan once per raw record - the
 * compact template number of the records its traced steps emit (`gid`, a group), the group's records (`nseq`),
 * the message numbers it shows (`nmsg`), the messages it sends (`adv`), how it moves `pending` - and
 * `tt_cx_run` writes, for every record of a batch, the `gid, seq, ts, the other members' seqs, message numbers`
 * the Python loop appended, counting how often each plan was met. Python then hands each plan's count to the
 * receivers at once (`Interconnect.tlbi_repeat`, `sync_repeat`). It stops at a record it has no plan for (or
 * one made for another VMID), at one whose plan says Python traces it (TT_PLAN_PYTHON), and when `out` is full;
 * `st` carries the trace and trap state in and out.
 */
enum { TT_CX_SEQ, TT_CX_MSGS, TT_CX_TS, TT_CX_PENDING, TT_CX_TRAPS, TT_CX_OUT, TT_CX_WHY, TT_CX_VM, TT_CX_PLAN,
       TT_CX_STATE };
enum { TT_CX_DONE = 0, TT_CX_UNKNOWN = 1, TT_CX_PYTHON = 2, TT_CX_FULL = 3 };   /* st[TT_CX_WHY] */
#define TT_PLAN_TLBI 1u               /* the record is a TLBI (counted in st[TT_CX_TRAPS]) */
#define TT_PLAN_SETS 2u               /* it sets `pending` (a broadcast TLBI) */
#define TT_PLAN_CLEARS 4u             /* it clears `pending` (a DSB that sends the DVM Sync) */
#define TT_PLAN_PYTHON 8u             /* Python's traced steps take it */

typedef struct {
    uint64_t pc, xt, info;            /* the raw record: the key */
    int64_t gid;                      /* < 0: no trace record (no event of it enabled) */
    int64_t vm;                       /* the VMID the plan was made for */
    uint32_t nseq, nmsg, adv, flags;
    uint64_t count;                   /* times met since the last tt_cx_counts */
} tt_plan;

typedef struct {
    tt_plan *plan;
    uint32_t n, cap;
    uint32_t *slot;                   /* open addressing: plan index + 1, 0 = empty; 2 * cap slots (a power of 2) */
    uint32_t mask;
    uint32_t *touched;                /* plans met since the last tt_cx_counts, in first-met order */
    uint32_t ntouched;
} tt_cx;

tt_cx *tt_cx_new(uint32_t cap)
{
    tt_cx *cx;
    uint32_t slots = 16;
    if (cap == 0 || cap > (1u << 24))
        return NULL;
    while (slots < 2 * cap)
        slots <<= 1;
    cx = (tt_cx *)calloc(1, sizeof(*cx));
    if (!cx)
        return NULL;
    cx->plan = (tt_plan *)calloc(cap, sizeof(tt_plan));
    cx->slot = (uint32_t *)calloc(slots, sizeof(uint32_t));
    cx->touched = (uint32_t *)calloc(cap, sizeof(uint32_t));
    if (!cx->plan || !cx->slot || !cx->touched) {
        free(cx->plan);
        free(cx->slot);
        free(cx->touched);
        free(cx);
        return NULL;
    }
    cx->cap = cap;
    cx->mask = slots - 1;
    return cx;
}

void tt_cx_free(tt_cx *cx)
{
    if (!cx)
        return;
    free(cx->plan);
    free(cx->slot);
    free(cx->touched);
    free(cx);
}

/* Forget every plan (their counts too: the caller takes them first). */
void tt_cx_clear(tt_cx *cx)
{
    memset(cx->slot, 0, (size_t)(cx->mask + 1) * sizeof(uint32_t));
    cx->n = 0;
    cx->ntouched = 0;
}

static inline uint32_t tt_cx_hash(uint64_t pc, uint64_t xt, uint64_t info)
{
    uint64_t h = pc * 0x9E3779B97F4A7C15ull ^ xt * 0xC2B2AE3D27D4EB4Full ^ info * 0x165667B19E3779F9ull;
    return (uint32_t)(h ^ (h >> 29) ^ (h >> 47));
}

/* The slot of record (pc, xt, info): holding its plan, or the empty one where it goes. */
static uint32_t *tt_cx_find(tt_cx *cx, uint64_t pc, uint64_t xt, uint64_t info)
{
    uint32_t i = tt_cx_hash(pc, xt, info) & cx->mask;
    for (;; i = (i + 1) & cx->mask) {
        uint32_t s = cx->slot[i];
        const tt_plan *p;
        if (!s)
            return &cx->slot[i];
        p = &cx->plan[s - 1];
        if (p->pc == pc && p->xt == xt && p->info == info)
            return &cx->slot[i];
    }
}

/* Make (or replace) the plan of a record: its index, or -1 when the table is full (clear it and add again). */
long tt_cx_add(tt_cx *cx, uint64_t pc, uint64_t xt, uint64_t info, int64_t gid, int64_t vm, uint32_t nseq,
               uint32_t nmsg, uint32_t adv, uint32_t flags)
{
    uint32_t *s = tt_cx_find(cx, pc, xt, info);
    tt_plan *p;
    if (*s) {
        p = &cx->plan[*s - 1];
    } else {
        if (cx->n == cx->cap)
            return -1;
        p = &cx->plan[cx->n];
        memset(p, 0, sizeof(*p));
        *s = ++cx->n;
        p->pc = pc;
        p->xt = xt;
        p->info = info;
    }
    p->gid = gid;
    p->vm = vm;
    p->nseq = nseq ? nseq : 1;        /* a group has one record at least */
    p->nmsg = nmsg;
    p->adv = adv;
    p->flags = flags;
    return (long)(p - cx->plan);
}

/* One met plan (index `k`): how it moves `pending` and the trap count, and its count (first met: touched). */
static inline void tt_cx_step(tt_cx *cx, uint32_t k, int64_t *pending, int64_t *traps)
{
    tt_plan *p = &cx->plan[k];
    if (p->flags & TT_PLAN_SETS)
        *pending = 1;
    if (p->flags & TT_PLAN_CLEARS)
        *pending = 0;
    *traps += (p->flags & TT_PLAN_TLBI) != 0;
    if (p->count++ == 0)
        cx->touched[cx->ntouched++] = k;
}

long tt_cx_run(tt_cx *cx, const tt_rec *recs, long n, long i, int64_t *st, int64_t *out, long cap)
{
    int64_t seq = st[TT_CX_SEQ], msgs = st[TT_CX_MSGS], ts = st[TT_CX_TS], vm = st[TT_CX_VM];
    int64_t pending = st[TT_CX_PENDING], traps = st[TT_CX_TRAPS], used = st[TT_CX_OUT], why = TT_CX_DONE;
    for (; i < n; i++) {
        const tt_rec *r = &recs[i];
        uint32_t s, k;
        tt_plan *p;
        int64_t *o;
        if ((r->info & 0xFF) != TT_REC_TLBI && !pending)
            continue;                 /* a DSB with no broadcast TLBI before it: completes nothing */
        s = *tt_cx_find(cx, r->pc, r->xt, r->info);
        if (!s || cx->plan[s - 1].vm != vm) {
            why = TT_CX_UNKNOWN;
            break;
        }
        p = &cx->plan[s - 1];
        if (p->flags & TT_PLAN_PYTHON) {
            why = TT_CX_PYTHON;
            st[TT_CX_PLAN] = s - 1;
            break;
        }
        if (p->gid >= 0) {
            if (used + 2 + p->nseq + p->nmsg > cap) {
                why = TT_CX_FULL;
                break;
            }
            o = out + used;
            *o++ = p->gid;
            *o++ = seq + 1;
            *o++ = ts;
            for (k = 2; k <= p->nseq; k++)
                *o++ = seq + k;
            for (k = 1; k <= p->nmsg; k++)
                *o++ = msgs + k;
            used = o - out;
            seq += p->nseq;
        }
        msgs += p->adv;
        tt_cx_step(cx, s - 1, &pending, &traps);
    }
    st[TT_CX_SEQ] = seq;
    st[TT_CX_MSGS] = msgs;
    st[TT_CX_PENDING] = pending;
    st[TT_CX_TRAPS] = traps;
    st[TT_CX_OUT] = used;
    st[TT_CX_WHY] = why;
    return i;
}

/* `tt_cx_run` for an untraced delivery (harness/trap.py `_deliver_ux`): no trace records, only the trap state
 * and each plan's count. The plans are keyed by (pc & pc_mask, xt & xt_mask, info): untraced, a record's PC
 * changes nothing, nor its Xt when every receiver is `addressless` (what the per-record loop's `templates`
 * rely on). Stops at a record without a plan (or one made for another VMID). */
long tt_cx_tally(tt_cx *cx, const tt_rec *recs, long n, long i, int64_t *st, uint64_t pc_mask, uint64_t xt_mask)
{
    int64_t vm = st[TT_CX_VM], pending = st[TT_CX_PENDING], traps = st[TT_CX_TRAPS], why = TT_CX_DONE;
    for (; i < n; i++) {
        const tt_rec *r = &recs[i];
        uint32_t s;
        if ((r->info & 0xFF) != TT_REC_TLBI && !pending)
            continue;                 /* a DSB with no broadcast TLBI before it: completes nothing */
        s = *tt_cx_find(cx, r->pc & pc_mask, r->xt & xt_mask, r->info);
        if (!s || cx->plan[s - 1].vm != vm) {
            why = TT_CX_UNKNOWN;
            break;
        }
        tt_cx_step(cx, s - 1, &pending, &traps);
    }
    st[TT_CX_PENDING] = pending;
    st[TT_CX_TRAPS] = traps;
    st[TT_CX_WHY] = why;
    return i;
}

/* The plans met since the last call, as (index, count) pairs in first-met order (at most `cap` pairs);
 * returns the number of pairs and starts counting again. */
long tt_cx_counts(tt_cx *cx, int64_t *pairs, long cap)
{
    long k, n = cx->ntouched < (uint32_t)cap ? (long)cx->ntouched : cap;
    for (k = 0; k < n; k++) {
        tt_plan *p = &cx->plan[cx->touched[k]];
        pairs[2 * k] = cx->touched[k];
        pairs[2 * k + 1] = (int64_t)p->count;
        p->count = 0;
    }
    if (n < (long)cx->ntouched)       /* the rest for the next call */
        memmove(cx->touched, cx->touched + n, (cx->ntouched - (uint32_t)n) * sizeof(uint32_t));
    cx->ntouched -= (uint32_t)n;
    return n;
}
