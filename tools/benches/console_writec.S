/* smmu-harness-build: no-runtime
 * Benchmark guest for tools/benches/console.py: 50,000 characters printed one semihosting SYS_WRITEC at a
 * time ("Semihosting for AArch32 and AArch64": X1 points to the character), cycling through a 64-byte line,
 * then SYS_EXIT(ADP_Stopped_ApplicationExit, 0). The count is `chars` (a literal: the same ELF runs under
 * QEMU, which nothing patches).
 */
    .text
    .global _start
_start:
    ldr     x19, chars
    adr     x20, line
1:  and     x2, x19, #63
    add     x1, x20, x2
    mov     x0, #0x03               // SYS_WRITEC
    hlt     #0xf000
    subs    x19, x19, #1
    b.ne    1b
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global chars
chars:
    .quad   50000
exit_block:
    .quad   0x20026                 // ADP_Stopped_ApplicationExit
    .quad   0                       // status
line:
    .ascii  "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n\n"
