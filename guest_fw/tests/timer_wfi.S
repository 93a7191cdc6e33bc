/* smmu-harness-build: no-runtime
 * Sleeping until a timer deadline (tests/harness/test_timer_machine.py): x19 = CNTVCT_EL0, CNTV_TVAL_EL0 = `delta`,
 * CNTV_CTL_EL0 = `ctl`, then WFI (or, when `suspend` is 1, PSCI CPU_SUSPEND over HVC); after the wake-up
 * x20 = CNTVCT_EL0; semihosting SYS_EXIT(0).
 */
    .text
    .global _start
_start:
    mrs     x19, cntvct_el0
    ldr     x1, delta
    msr     cntv_tval_el0, x1
    ldr     x1, ctl
    msr     cntv_ctl_el0, x1
    isb
    ldr     x1, suspend
    cbnz    x1, 2f
    wfi
    b       3f
2:  ldr     x0, =0xc4000001         // PSCI CPU_SUSPEND (power state 0: standby), entry, context
    mov     x1, #0
    mov     x2, #0
    mov     x3, #0
    hvc     #0
3:  isb
    mrs     x20, cntvct_el0
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global delta, ctl, suspend
delta:
    .quad   100000
ctl:
    .quad   1                       // ENABLE
suspend:
    .quad   0
exit_block:
    .quad   0x20026, 0
    .ltorg
