/* smmu-harness-build: no-runtime
 * Generic timer at an exact deadline (tests/harness/test_timer_machine.py): x19 = CNTVCT_EL0, CNTV_CVAL_EL0 = x19 +
 * `delta`, enable, poll CNTV_CTL_EL0 until ISTATUS, then x20 = CNTVCT_EL0 and x22 = the CTL value seen;
 * semihosting SYS_EXIT(0).
 */
    .text
    .global _start
_start:
    mrs     x19, cntvct_el0
    ldr     x1, delta
    add     x21, x19, x1
    msr     cntv_cval_el0, x21
    mov     x0, #1                  // ENABLE
    msr     cntv_ctl_el0, x0
    isb
1:  mrs     x22, cntv_ctl_el0
    tbz     x22, #2, 1b             // until ISTATUS
    isb
    mrs     x20, cntvct_el0
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, exit_block
    hlt     #0xf000
    b       .

    .balign 8
    .global delta
delta:
    .quad   5000
exit_block:
    .quad   0x20026, 0              // ADP_Stopped_ApplicationExit, status 0
