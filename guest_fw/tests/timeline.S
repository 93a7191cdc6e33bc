/* smmu-harness-build: no-runtime
 * A known number of instructions between two broadcast TLBIs (tests/harness/test_trace_timeline.py): TLBI
 * VMALLE1IS, DSB ISH, then `iterations` x 2 instructions, TLBI VMALLE1IS, DSB ISH; semihosting SYS_EXIT(0).
 */
    .text
    .global _start
_start:
    ldr     x0, iterations
    tlbi    vmalle1is
    dsb     ish
1:  subs    x0, x0, #1
    b.ne    1b
    tlbi    vmalle1is
    dsb     ish
    mov     x0, #0x18
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global iterations
iterations:
    .quad   500000
exit_block:
    .quad   0x20026, 0
