/*
 * Native console path (harness/console.py, harness/native/__init__.py): the guest's console output without a
 * Python callback per character.
 *
 * Two kinds of hook per vCPU, both in C:
 *
 * - the vCPU's UC_HOOK_INTR hook. For an undefined-instruction exception (QEMU's EXCP_UDEF) at EL1 or EL2
 *   with that regime's stage 1 off (VA == IPA, as harness/vacache.py answers then) whose PC holds
 *   `HLT #0xF000` in guest RAM, the console calls SYS_WRITEC (X1 -> one byte in RAM) and SYS_WRITE0 (X1 -> a
 *   NUL-terminated string wholly in RAM, at most CN_STRING_MAX bytes) are done here: the bytes are appended to
 *   the vCPU's buffer, X0 = 0xDEADBEEF (QEMU leaves it corrupted: common_semi_dead_cb) and PC + 4, as
 *   devmodel/semihosting.py answers; so is SYS_WRITE (block and buffer in RAM, at most the buffer's size) to a
 *   handle Python has marked as `:tt` opened for writing (`tt_out`: stdout or stderr), X0 = 0 (all written).
 *   Everything else (other exceptions, other operations, MMU on, anything outside RAM, EL0) goes to Python
 *   (`cn_callback(CN_WHY_INTR)`), which first delivers the buffer.
 * - the PL011's MMIO region, mapped with C accessors: a UARTDR write (offset 0, 1/2/4 bytes) is buffered
 *   while Python has said the transmit side has no side effect but the byte (CN_UART_TX: UART and
 *   transmitter enabled, TXRIS already set, no PL011 trace event), and a UARTFR read (offset 0x18, 1/2/4
 *   bytes) answers the value Python computed while nothing can change it (CN_UART_FR: the guest does not
 *   listen, so no input is pulled). Every other access goes to Python (CN_WHY_MMIO_READ/WRITE).
 *
 * Python delivers the buffer, in order, at every observation point (harness/observe.py: before each Python
 * callback of the vCPU's Unicorn and when emu_start returns), when the buffer is full or its source changes
 * (CN_WHY_FULL), and before anything these hooks hand to Python. The hooks take the Python path while the
 * TLBI trap holds records (`tlbi_n`, the native trap's count), so a byte buffered here is always older than
 * every TLBI record pending: draining the console first keeps the guest's order. CN_SUSPEND (set by Python
 * while an instruction interrupted in an MMIO callback is recorded or replayed, harness/vcpu.py
 * stop_after_access) sends every access to Python.
 *
 * The layout of cn_cpu is mirrored by harness/native/__init__.py (`CnCpu`); `cn_abi()` and `cn_sizeof()` let
 * the loader refuse a library built from another version of this file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#define CN_ABI 2

enum { CN_WHY_INTR = 1, CN_WHY_FULL = 2, CN_WHY_MMIO_READ = 3, CN_WHY_MMIO_WRITE = 4 };
enum { CN_SRC_NONE = 0, CN_SRC_SEMIHOSTING = 1, CN_SRC_UART = 2, CN_SRC_SEMIHOSTING_ERR = 3 };
enum { CN_SEMIHOSTING = 1, CN_UART_TX = 2, CN_UART_FR = 4, CN_SUSPEND = 8 };        /* cn_cpu.flags */

#define CN_EXCP_UDEF 1u               /* QEMU target/arm/cpu.h EXCP_UDEF: what Unicorn reports for HLT */
#define CN_HLT_SEMIHOSTING 0xD45E0000u /* HLT #0xF000 (Arm ARM C6.2 HLT: 0xD4400000 | imm16 << 5) */
#define CN_SYS_WRITEC 0x03u
#define CN_SYS_WRITE0 0x04u
#define CN_SYS_WRITE 0x05u
#define CN_DEAD 0xDEADBEEFull
#define CN_STRING_MAX 4096u           /* longer SYS_WRITE0 strings go to Python */
#define CN_UARTDR 0x000u
#define CN_UARTFR 0x018u

struct cn_cpu;
typedef uint64_t (*cn_callback)(struct cn_cpu *cpu, uint32_t why);

typedef struct cn_cpu {
    uint32_t n;                       /* bytes in buf */
    uint32_t cap;
    uint32_t src;                     /* CN_SRC_* of the bytes in buf */
    uint32_t flags;                   /* CN_* set by Python */
    uint32_t uart_fr;                 /* what a UARTFR read answers while CN_UART_FR */
    uint32_t why;                     /* reason of the current callback */
    uint64_t arg[3];                  /* callback arguments: intno; or offset, size, value of an MMIO access */
    uint64_t uart_last;               /* the last value written to UARTDR here */
    uint64_t native_calls;            /* semihosting calls and UART accesses done here (statistics) */
    uint64_t tt_out[2];               /* bit h: semihosting handle h (< 64) is `:tt` opened for stdout / stderr */
    uint8_t *buf;
    const uint8_t *ram;               /* the VM's RAM (host memory) at IPA ram_base */
    uint64_t ram_base;
    uint64_t ram_size;
    const uint32_t *tlbi_n;           /* the native TLBI trap's record count for this vCPU, or NULL */
    uc_engine *uc;
    cn_callback callback;
    uc_hook intr_hook;
} cn_cpu;

static uc_err (*p_reg_read)(uc_engine *, int, void *);
static uc_err (*p_reg_write_batch)(uc_engine *, int const *, void *const *, int);
static uc_err (*p_hook_add)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...);
static uc_err (*p_mmio_map)(uc_engine *, uint64_t, uint64_t, uc_cb_mmio_read_t, void *, uc_cb_mmio_write_t,
                            void *);

int cn_abi(void) { return CN_ABI; }
int cn_sizeof(void) { return (int)sizeof(cn_cpu); }

int cn_init(void *reg_read, void *reg_write_batch, void *hook_add, void *mmio_map)
{
    if (!reg_read || !reg_write_batch || !hook_add || !mmio_map)
        return -1;
    p_reg_read = (uc_err (*)(uc_engine *, int, void *))reg_read;
    p_reg_write_batch = (uc_err (*)(uc_engine *, int const *, void *const *, int))reg_write_batch;
    p_hook_add = (uc_err (*)(uc_engine *, uc_hook *, int, void *, void *, uint64_t, uint64_t, ...))hook_add;
    p_mmio_map = (uc_err (*)(uc_engine *, uint64_t, uint64_t, uc_cb_mmio_read_t, void *, uc_cb_mmio_write_t,
                             void *))mmio_map;
    return 0;
}

/* [addr, addr + len) lies in the VM's RAM: its offset there, else -1. */
static inline int64_t cn_ram_offset(const cn_cpu *c, uint64_t addr, uint64_t len)
{
    uint64_t off = addr - c->ram_base;
    if (addr < c->ram_base || off > c->ram_size || len > c->ram_size - off)
        return -1;
    return (int64_t)off;
}

static inline int cn_tlbi_pending(const cn_cpu *c)
{
    return c->tlbi_n && *c->tlbi_n;
}

/* Append `len` (<= cap) bytes of source `src`; Python empties the buffer first when they do not fit or the
 * source changes, and after bytes that end a line (harness/machine.py write_console flushes at newlines: a line
 * is seen at once even if the guest then spins where nothing calls Python). */
static void cn_push(cn_cpu *c, uint32_t src, const uint8_t *data, uint32_t len)
{
    if (c->n && (c->src != src || c->n + len > c->cap)) {
        c->why = CN_WHY_FULL;
        c->callback(c, CN_WHY_FULL);
        c->n = 0;                     /* whatever the callback did: never write past the end */
    }
    memcpy(c->buf + c->n, data, len);
    c->n += len;
    c->src = src;
    c->native_calls++;
    if (memchr(data, '\n', len)) {   /* a complete line is printed now, as the Python path's writer does */
        c->why = CN_WHY_FULL;
        c->callback(c, CN_WHY_FULL);
        c->n = 0;
    }
}

/* SYS_WRITE {handle, buf, len} (block and buffer in RAM) to a `:tt` handle: the source and the bytes, or 0. */
static int cn_tt_write(const cn_cpu *c, uint64_t param, uint32_t *src, int64_t *off, uint32_t *len)
{
    uint64_t block[3];
    uint32_t h;
    int64_t boff = cn_ram_offset(c, param, sizeof(block));
    if (boff < 0)
        return 0;
    memcpy(block, c->ram + boff, sizeof(block));
    h = (uint32_t)block[0];           /* QEMU keeps guest handles in an int */
    if (h >= 64 || block[2] > c->cap)
        return 0;
    if (c->tt_out[0] >> h & 1)
        *src = CN_SRC_SEMIHOSTING;
    else if (c->tt_out[1] >> h & 1)
        *src = CN_SRC_SEMIHOSTING_ERR;
    else
        return 0;
    *off = cn_ram_offset(c, block[1], block[2]);
    *len = (uint32_t)block[2];
    return *off >= 0;
}

static uint64_t cn_read_sctlr(uc_engine *uc, uint32_t el)
{
    uc_arm64_cp_reg r = {1, 0, 3, el == 2 ? 4 : 0, 0, 0};   /* SCTLR_ELx: op0 3, op1 0/4, CRn 1, CRm 0, op2 0 */
    if (p_reg_read(uc, UC_ARM64_REG_CP_REG, &r) != UC_ERR_OK)
        return 1;                     /* unknown: treat as MMU on (the Python path) */
    return r.val;
}

/* The semihosting console calls this hook does itself: 1 when done (X0, PC written), 0 for Python. */
static int cn_semihosting(cn_cpu *c, uc_engine *uc)
{
    uint64_t pc = 0, x0 = 0, x1 = 0, pstate = 0, ret = CN_DEAD;
    uint32_t el, word, op, len, src = CN_SRC_SEMIHOSTING;
    int64_t off;
    const uint8_t *s, *nul;

    if (cn_tlbi_pending(c))
        return 0;
    p_reg_read(uc, UC_ARM64_REG_PSTATE, &pstate);
    el = (uint32_t)(pstate >> 2) & 3;
    if ((el != 1 && el != 2) || (cn_read_sctlr(uc, el) & 1))
        return 0;                     /* EL0 (userspace option), or stage 1 on: Python's translation cache */
    p_reg_read(uc, UC_ARM64_REG_PC, &pc);
    off = cn_ram_offset(c, pc, 4);
    if (off < 0)
        return 0;
    memcpy(&word, c->ram + off, 4);   /* little-endian host (the loader checks) */
    if (word != CN_HLT_SEMIHOSTING)
        return 0;
    p_reg_read(uc, UC_ARM64_REG_X0, &x0);
    op = (uint32_t)x0;                /* W0 */
    if (op != CN_SYS_WRITEC && op != CN_SYS_WRITE0 && op != CN_SYS_WRITE)
        return 0;
    p_reg_read(uc, UC_ARM64_REG_X1, &x1);
    if (op == CN_SYS_WRITE) {
        if (!cn_tt_write(c, x1, &src, &off, &len))
            return 0;
        ret = 0;                      /* every byte written */
    } else if (op == CN_SYS_WRITEC) {
        off = cn_ram_offset(c, x1, 1);
        if (off < 0)
            return 0;
        len = 1;
    } else {
        off = cn_ram_offset(c, x1, 0);
        if (off < 0)
            return 0;
        len = (uint32_t)((c->ram_size - (uint64_t)off) < CN_STRING_MAX ? c->ram_size - (uint64_t)off
                                                                          : CN_STRING_MAX);
        nul = memchr(c->ram + off, 0, len);
        if (!nul)
            return 0;                 /* unterminated in RAM, or long: Python (which streams or faults) */
        len = (uint32_t)(nul - (c->ram + off));
    }
    s = c->ram + off;
    if (len > c->cap)
        return 0;
    if (len)
        cn_push(c, src, s, len);
    else
        c->native_calls++;
    pc += 4;
    /* X0 and PC in one uc_reg_write_batch, as harness/semihost.py writes them: Unicorn 2.1.4's uc_reg_write of
     * the PC in this hook leaves a later fault in the same block reported at the block's start (no state
     * restore), the batch write does not (tests/harness/test_console_native.py, the fault case) */
    {
        int ids[2] = {UC_ARM64_REG_X0, UC_ARM64_REG_PC};
        void *vals[2] = {&ret, &pc};
        p_reg_write_batch(uc, ids, vals, 2);
    }
    return 1;
}

static void cn_on_intr(uc_engine *uc, uint32_t intno, void *user)
{
    cn_cpu *c = (cn_cpu *)user;
    if (intno == CN_EXCP_UDEF && (c->flags & (CN_SEMIHOSTING | CN_SUSPEND)) == CN_SEMIHOSTING
        && cn_semihosting(c, uc))
        return;
    c->arg[0] = intno;
    c->why = CN_WHY_INTR;
    c->callback(c, CN_WHY_INTR);
}

static inline int cn_small(unsigned size)
{
    return size == 1 || size == 2 || size == 4;
}

static uint64_t cn_uart_read(uc_engine *uc, uint64_t offset, unsigned size, void *user)
{
    cn_cpu *c = (cn_cpu *)user;
    (void)uc;
    if (offset == CN_UARTFR && cn_small(size) && (c->flags & (CN_UART_FR | CN_SUSPEND)) == CN_UART_FR) {
        c->native_calls++;
        return size == 4 ? c->uart_fr : c->uart_fr & ((1u << (8 * size)) - 1);
    }
    c->arg[0] = offset;
    c->arg[1] = size;
    c->arg[2] = 0;
    c->why = CN_WHY_MMIO_READ;
    return c->callback(c, CN_WHY_MMIO_READ);
}

static void cn_uart_write(uc_engine *uc, uint64_t offset, unsigned size, uint64_t value, void *user)
{
    cn_cpu *c = (cn_cpu *)user;
    uint8_t ch = (uint8_t)value;
    (void)uc;
    if (offset == CN_UARTDR && cn_small(size) && (c->flags & (CN_UART_TX | CN_SUSPEND)) == CN_UART_TX
        && !cn_tlbi_pending(c)) {
        c->uart_last = value;         /* before the push, which may deliver (and store UARTDR) at once */
        cn_push(c, CN_SRC_UART, &ch, 1);
        return;
    }
    c->arg[0] = offset;
    c->arg[1] = size;
    c->arg[2] = value;
    c->why = CN_WHY_MMIO_WRITE;
    c->callback(c, CN_WHY_MMIO_WRITE);
}

/* A vCPU's console state with its UC_HOOK_INTR hook (which replaces the Python one). */
cn_cpu *cn_new(uc_engine *uc, uint32_t cap, void *callback, void *ram, uint64_t ram_base, uint64_t ram_size)
{
    cn_cpu *c;
    uint16_t probe = 1;
    if (!p_hook_add || !uc || !callback || cap == 0 || !ram || *(uint8_t *)&probe != 1)
        return NULL;                  /* the guest is little-endian; so must this host be */
    c = (cn_cpu *)calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->buf = (uint8_t *)malloc(cap);
    if (!c->buf) {
        free(c);
        return NULL;
    }
    c->cap = cap;
    c->uc = uc;
    c->callback = (cn_callback)callback;
    c->ram = (const uint8_t *)ram;
    c->ram_base = ram_base;
    c->ram_size = ram_size;
    if (p_hook_add(uc, &c->intr_hook, UC_HOOK_INTR, (void *)cn_on_intr, c, 1, 0) != UC_ERR_OK) {
        free(c->buf);
        free(c);
        return NULL;
    }
    return c;
}

/* Map the PL011's region at `base` with the C accessors. */
int cn_map_uart(cn_cpu *c, uint64_t base, uint64_t size)
{
    return p_mmio_map(c->uc, base, size, cn_uart_read, c, cn_uart_write, c) == UC_ERR_OK ? 0 : -1;
}

/* Called once the vCPU's Unicorn is gone (its hooks went with it): the memory only. */
void cn_free(cn_cpu *c)
{
    if (!c)
        return;
    free(c->buf);
    free(c);
}
