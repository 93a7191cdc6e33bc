/* smmu-harness-build: no-runtime
 * Counter reads (tests/harness/test_timer_machine.py): `n` reads of CNTVCT_EL0 (`n` <= 256), `gap` plain
 * instructions apart, stored at `counts`; semihosting SYS_EXIT(0).
 */
    .text
    .global _start
_start:
    adr     x2, counts
    ldr     x3, n
1:  mrs     x0, cntvct_el0
    str     x0, [x2], #8
    ldr     x4, gap
2:  subs    x4, x4, #1              // gap iterations of 2 instructions
    b.hi    2b
    subs    x3, x3, #1
    b.ne    1b
    mov     x0, #0x18
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global n, gap, counts
n:
    .quad   64
gap:
    .quad   1
exit_block:
    .quad   0x20026, 0
counts:
    .skip   256 * 8
