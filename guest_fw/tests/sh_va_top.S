/* smmu-harness-build: no-runtime
 * A semihosting write that ends at the top of the 64-bit VA space: the guest maps VA 0xFFFFFFFFFFFFF000
 * (TTBR1_EL1) to a data page and makes SYS_ELAPSED with X1 = 0xFFFFFFFFFFFFFFF8, so the 8 bytes written end
 * at 2^64. The call succeeds (X0 = 0, as under QEMU): the exit status is 0, else 1.
 */
    .text
    .global _start
_start:
    adr     x1, l1_lo                   // TTBR0_EL1: L1[1] = the 1 GiB block of RAM at 0x40000000
    adr     x2, l1_hi                   // TTBR1_EL1: L1[511] -> L2[511] -> L3[511] = `page`
    adr     x3, l2_hi
    adr     x4, l3_hi
    adr     x5, page
    ldr     x6, =0x40000701             // block, AttrIndx 0, SH inner, AF
    str     x6, [x1, #8]
    orr     x6, x3, #3
    str     x6, [x2, #4088]
    orr     x6, x4, #3
    str     x6, [x3, #4088]
    ldr     x7, =0x0060000000000703     // page, AttrIndx 0, SH inner, AF, UXN, PXN
    orr     x6, x5, x7
    str     x6, [x4, #4088]
    mov     x6, #0xff
    msr     mair_el1, x6
    ldr     x6, =(25 | (25 << 16) | (2 << 30) | (2 << 32))  // T0SZ = T1SZ = 25, TG0 4K, TG1 4K, IPS 40 bits
    msr     tcr_el1, x6
    msr     ttbr0_el1, x1
    msr     ttbr1_el1, x2
    isb
    mrs     x6, sctlr_el1
    orr     x6, x6, #1
    msr     sctlr_el1, x6
    isb
    mov     x0, #0x30                   // SYS_ELAPSED
    mov     x1, #-8                     // 0xFFFFFFFFFFFFFFF8
    hlt     #0xf000
    cmp     x0, #0
    cset    x4, ne
    adr     x1, exit_block
    str     x4, [x1, #8]
    mov     x0, #0x18                   // SYS_EXIT {ADP_Stopped_ApplicationExit, status}
    hlt     #0xf000
    b       .
    .ltorg

    .balign 8
exit_block:
    .quad   0x20026, 0

    .balign 4096
l1_lo:
    .skip   4096
l1_hi:
    .skip   4096
l2_hi:
    .skip   4096
l3_hi:
    .skip   4096
page:
    .skip   4096
