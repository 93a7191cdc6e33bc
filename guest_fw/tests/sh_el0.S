/* smmu-harness-build: no-runtime
 * Semihosting from EL0: the guest drops from EL1 to EL0 (ERET with SPSR_EL1 = EL0t) and calls SYS_WRITE0 and
 * SYS_EXIT(0) there. QEMU 7.2 treats HLT #0xF000 at EL0 as an undefined instruction unless
 * `-semihosting-config userspace=on` (smmu-harness: --semihosting-userspace); without it the exception goes
 * to the EL1 vector below, which reports it and exits with status 3 (from EL1, where semihosting works).
 */
    .text
    .global _start
_start:
    adr     x0, vectors
    msr     vbar_el1, x0
    adr     x0, el0
    msr     elr_el1, x0
    mov     x0, #0
    msr     spsr_el1, x0
    adr     x0, stack_top
    msr     sp_el0, x0
    isb
    eret
el0:
    mov     x0, #0x04
    adr     x1, msg0
    hlt     #0xf000
    mov     x0, #0x18
    adr     x1, exit0
    hlt     #0xf000
    b       .
    .balign 0x800
vectors:
    .rept 8
    .balign 0x80
    b       handler
    .endr
    .balign 0x80
    b       handler         // lower EL sync
    .balign 0x80
    b .
handler:
    mov     x0, #0x04
    adr     x1, msg1
    hlt     #0xf000
    mov     x0, #0x18
    adr     x1, exit3
    hlt     #0xf000
    b       .
    .balign 8
exit0: .quad 0x20026, 0
exit3: .quad 0x20026, 3
msg0: .asciz "semihosting at EL0\n"
msg1: .asciz "exception to EL1\n"
    .balign 16
    .space 256
stack_top:
