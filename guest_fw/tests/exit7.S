/* smmu-harness-build: no-runtime
 * Assembly-only guest: prints a line through semihosting SYS_WRITE0 and exits with status 7 through
 * SYS_EXIT (ADP_Stopped_ApplicationExit, 7); "Semihosting for AArch32 and AArch64" chapter 6.
 */
    .text
    .global _start
_start:
    mov     x0, #0x04               // SYS_WRITE0
    adr     x1, message
    hlt     #0xf000
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
exit_block:
    .quad   0x20026                 // ADP_Stopped_ApplicationExit
    .quad   7                       // exit status
message:
    .asciz  "exit7: leaving with status 7\n"
