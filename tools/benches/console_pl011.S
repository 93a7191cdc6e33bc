/* smmu-harness-build: no-runtime
 * Benchmark guest for tools/benches/qemu.py: 50,000 characters written to the PL011 data register of QEMU
 * virt's UART (0x0900_0000, Arm DDI 0183: UARTDR at 0x000, UARTFR.TXFF bit 5 at 0x018, UARTCR at 0x030),
 * polling TXFF before each one as a driver does, cycling through a 64-byte line, then semihosting
 * SYS_EXIT(ADP_Stopped_ApplicationExit, 0). The count is `chars` (a literal: the same ELF runs under QEMU).
 */
    .text
    .global _start
_start:
    ldr     x19, chars
    adr     x20, line
    movz    x21, #0x0900, lsl #16   // PL011 base
    mov     w0, #0x301              // UARTCR: UARTEN | TXE | RXE
    str     w0, [x21, #0x30]
1:  ldr     w0, [x21, #0x18]        // UARTFR
    tbnz    w0, #5, 1b              // TXFF: wait
    and     x2, x19, #63
    ldrb    w1, [x20, x2]
    str     w1, [x21]               // UARTDR
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
