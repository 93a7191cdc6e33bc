/*
 * Guest entry, secondary-CPU entry and the exception vector table.
 *
 * Boot (PSCI / QEMU -kernel): the boot CPU enters _start at EL1 (or EL2) with the MMU off. It clears .bss,
 * keeps the x0-x3 it was entered with in boot_args[] (a raw image booted by QEMU's -kernel stub gets the
 * device tree address in x0; an ELF gets zeros), takes the stack of its CPU number, enables FP/SIMD, installs the vectors, and calls main(); main's return
 * value goes to exit(). Secondaries are started with PSCI CPU_ON at secondary_entry and run
 * secondary_main(cpu) (smp.c). CPU number = MPIDR Aff1 * 16 + Aff0; at EL2 it is read from VMPIDR_EL2, which
 * the harness sets per vCPU and which resets to MPIDR_EL1 on hardware and QEMU (Arm ARM D17.2.190).
 */
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x20, x0                 // x0-x3 of the boot (QEMU -kernel raw image: x0 = device tree)
    mov     x21, x1
    mov     x22, x2
    mov     x23, x3
    bl      cpu_number              // x0 = CPU number
    mov     x19, x0
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  adrp    x1, boot_args         // after the .bss clear: boot_args lives in .bss
    add     x1, x1, :lo12:boot_args
    stp     x20, x21, [x1]
    stp     x22, x23, [x1, #16]
    mov     x0, x19
    bl      cpu_setup               // stack, FP, vectors (preserves x19)
    bl      console_init
    bl      main
    bl      exit                    // does not return
    b       .

    .bss
    .balign 8
    .global boot_args
boot_args:
    .skip   32

    .section .text.boot, "ax"
    .global secondary_entry
secondary_entry:                    // PSCI CPU_ON entry point; x0 = context id (unused)
    bl      cpu_number
    mov     x19, x0
    bl      cpu_setup
    mov     x0, x19
    bl      secondary_main          // does not return
    b       .

/* x0 = CPU number from (V)MPIDR. Clobbers x0-x2. */
cpu_number:
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.eq    1f
    mrs     x1, mpidr_el1
    b       2f
1:  mrs     x1, vmpidr_el2
2:  and     x0, x1, #0xff
    ubfx    x2, x1, #8, #8
    add     x0, x0, x2, lsl #4
    ret

/* x0 = CPU number: SP = top of its stack; FP/SIMD on; VBAR. Clobbers x0-x3. */
cpu_setup:
    ldr     x1, =GUEST_NR_CPUS      // link.ld: the number of per-CPU stacks
    cmp     x0, x1
    b.hs    .                       // no stack for this CPU: park it (smmu-harness refuses such --cpus)
    ldr     x2, =GUEST_STACK_SIZE
    add     x0, x0, #1
    mul     x0, x0, x2
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, x0
    mov     sp, x1
    adr     x2, vectors
    mrs     x3, CurrentEL
    cmp     x3, #(2 << 2)
    b.eq    1f
    mrs     x3, cpacr_el1           // CPACR_EL1.FPEN = ZEN = 0b11: no FP/SIMD or SVE traps (Arm ARM D17.2.30)
    orr     x3, x3, #(3 << 20)
    orr     x3, x3, #(3 << 16)
    msr     cpacr_el1, x3
    msr     vbar_el1, x2
    b       2f
1:  mov     x3, #0x32ff             // CPTR_EL2 (E2H=0): RES1 bits, TZ=0, TFP=0 (Arm ARM D17.2.32)
    msr     cptr_el2, x3
    msr     vbar_el2, x2
2:  isb
    ret

/*
 * Vector table (Arm ARM D1.10.2): 16 entries of 0x80 bytes, 2 KiB aligned. Every entry saves x0-x30 and the
 * SP in a struct pt_regs on the stack (guest.h) and calls do_exception(vector, regs) (exceptions.c), which
 * runs the handler installed for a synchronous exception from the current EL (ESR.EC) or reports an unhandled
 * exception and exits. When the handler returns, the registers are restored and ERET goes to the ELR (which
 * do_exception wrote back from regs->elr).
 */
#define PT_REGS_SIZE 288

    .macro vector idx
    .balign 0x80
    sub     sp, sp, #PT_REGS_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\idx
    b       vector_common
    .endm

    .balign 0x800
    .global vectors
vectors:
    .irp idx, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vector \idx
    .endr

vector_common:                      // x0 = vector number; x0/x1 saved; sp = struct pt_regs
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    add     x1, sp, #PT_REGS_SIZE
    stp     x30, x1, [sp, #240]     // x30, SP before the frame
    mov     x1, sp
    add     x29, sp, #232           // frame record {x29, x30} of the interrupted code
    bl      do_exception            // returns only when a handler handled it
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #PT_REGS_SIZE
    eret
