/* smmu-harness-build: no-runtime
 * Code loaded by semihosting over code that already ran: f (mov w0, #1; ret) is called, then SYS_READ puts the
 * 8 bytes of the root's code.bin (mov w0, #2; ret) over it, and after IC IALLU; DSB; ISB f is called again. QEMU
 * invalidates the translated code of every page a semihosting call writes (cpu_memory_rw_debug ->
 * address_space_write_rom), so the second call runs the new code: the exit status is 10 * first + second
 * (12), plus 256 * the bytes SYS_READ did not read (0).
 */
    .text
    .global _start
_start:
    adr     x21, stack_top
    mov     sp, x21
    bl      f
    mov     x19, x0
    mov     x0, #1                      // SYS_OPEN("code.bin", "rb")
    adr     x1, open_blk
    hlt     #0xf000
    adr     x1, read_blk
    str     x0, [x1]
    mov     x0, #6                      // SYS_READ {handle, f, 8}
    hlt     #0xf000
    mov     x22, x0
    ic      iallu
    dsb     sy
    isb
    bl      f
    mov     x20, x0
    mov     x2, #10
    madd    x19, x19, x2, x20
    add     x19, x19, x22, lsl #8
    adr     x1, exit_blk
    str     x19, [x1, #8]
    mov     x0, #0x18                   // SYS_EXIT {ADP_Stopped_ApplicationExit, status}
    hlt     #0xf000
    b       .
    .balign 64
f:  mov     w0, #1
    ret
    .balign 8
open_blk: .quad name, 1, 8
read_blk: .quad 0, f, 8
exit_blk: .quad 0x20026, 0
name: .asciz "code.bin"
    .balign 16
    .skip 256
stack_top:
