/* smmu-harness-build: no-runtime
 * Bad guest: no vector table (VBAR_EL1 = 0, nothing there), yet it sets up a GICv2, enables the virtual timer's
 * PPI 27, fires the timer and unmasks IRQs: the IRQ cannot be entered. smmu-harness ends the run with the death
 * line (139); QEMU would loop on the prefetch abort of the vector fetch.
 */
    .text
    .global _start
_start:
    ldr     x0, =0x08000000         // GICD
    mov     w1, #1
    str     w1, [x0]                // GICD_CTLR.EnableGrp0
    mov     w1, #(1 << 27)
    str     w1, [x0, #0x100]        // GICD_ISENABLER0: PPI 27
    ldr     x2, =0x08010000         // GICC
    mov     w1, #0xff
    str     w1, [x2, #4]            // GICC_PMR
    mov     w1, #1
    str     w1, [x2]                // GICC_CTLR.EnableGrp0
    mov     x1, #1
    msr     cntv_tval_el0, x1
    msr     cntv_ctl_el0, x1        // ENABLE
    isb
    msr     daifclr, #2
    .global after_unmask
after_unmask:
    b       .
