/* smmu-harness-build: no-runtime
 * Benchmark guest for tools/benches/qemu.py: `iterations` (1,000,000) times TLBI VAE1IS, X1 (ASID 42, the
 * guest's own image page) then DSB ISH - the broadcast invalidation and its completion, as Linux's
 * flush_tlb_page does (arch/arm64/include/asm/tlbflush.h) - at EL1 with the MMU off, then semihosting
 * SYS_EXIT(ADP_Stopped_ApplicationExit, 0).
 */
    .text
    .global _start
_start:
    ldr     x0, iterations
    adr     x1, _start
    lsr     x1, x1, #12             // VA[55:12]
    movz    x2, #42
    orr     x1, x1, x2, lsl #48     // ASID
loop:
    tlbi    vae1is, x1
    dsb     ish
    subs    x0, x0, #1
    b.ne    loop
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global iterations
iterations:
    .quad   1000000
exit_block:
    .quad   0x20026, 0              // ADP_Stopped_ApplicationExit, status 0
