/* smmu-harness-build: no-runtime
 * Benchmark guest for tools/benches/harness.py: x0 = iterations (from `iterations`, patched by the bench),
 * 4 plain instructions per iteration, then semihosting SYS_EXIT(0). Symbols loop_end/exit mark the exit path.
 */
    .text
    .global _start
_start:
    ldr     x0, iterations
    mov     x1, #0
    mov     x2, #0
loop:
    add     x1, x1, #1
    eor     x2, x2, x1
    subs    x0, x0, #1
    b.ne    loop
    .global loop_end
loop_end:
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global iterations
iterations:
    .quad   25000000
exit_block:
    .quad   0x20026, 0              // ADP_Stopped_ApplicationExit, status 0
