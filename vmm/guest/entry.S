/* entry.S: the guest's entry point, its exception stubs and the guarded verifier.
 * The VMM starts every vCPU in 64-bit mode at _start with rdi = cpu index and rsp = its stack. */
        .intel_syntax noprefix
        .code64

        .section .text.entry, "ax"
        .globl _start
_start:
        xor ebp, ebp
        call guest_main
1:      cli
        hlt
        jmp 1b

        .text
/* uint64_t verify_frame(const uint64_t *frame, uint64_t first): wrong bytes in the 4 KiB frame
 * whose qword i should be first + i * RAS_PATTERN_STEP, or ~0 when a machine check interrupted it.
 * It touches no stack, so the #MC handler's fixup only has to move RIP to verify_frame_fail: an
 * exception-table entry covering [verify_frame, verify_frame_end). */
        .globl verify_frame, verify_frame_end, verify_frame_fail
verify_frame:
        mov rdx, rsi
        mov ecx, 512
        xor eax, eax
        movabs r8, 0x9e3779b97f4a7c15
2:      mov r9, [rdi]
        xor r9, rdx
        jnz 4f
3:      add rdx, r8
        add rdi, 8
        dec ecx
        jnz 2b
        ret
4:      mov r10d, 8             /* count the bytes that differ */
5:      test r9b, r9b
        jz 6f
        inc rax
6:      shr r9, 8
        dec r10d
        jnz 5b
        jmp 3b
verify_frame_fail:
        mov rax, -1
        ret
verify_frame_end:

/* void probe_lost(volatile uint64_t *frame): tests only (config.probe): a load, a store and a
 * read-modify-write on a lost frame. rax holds RAS_PROBE_SENTINEL before the load. The #MC handler
 * moves RIP from probe_load to probe_load_next and from probe_rmw to probe_rmw_next. */
        .globl probe_lost, probe_load, probe_load_next, probe_store_next, probe_rmw, probe_rmw_next
probe_lost:
        movabs rax, 0x5a5a5a5a5a5a5a5a
probe_load:
        mov rax, [rdi]
probe_load_next:
        mov edx, 0x1234
        mov [rdi + 8], rdx
probe_store_next:
        nop
probe_rmw:
        add qword ptr [rdi + 16], 1
probe_rmw_next:
        ret

/* #MC (vector 18) and the poll interrupt (RAS_GUEST_POLL_VECTOR): save every register, let the
 * handler (frame) look at the banks and possibly move the saved RIP, restore, iretq. */
        .macro SAVE_CALL_RESTORE handler
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        cld
        call \handler
        pop r15
        pop r14
        pop r13
        pop r12
        pop r11
        pop r10
        pop r9
        pop r8
        pop rbp
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rbx
        pop rax
        iretq
        .endm

        .globl mc_entry, poll_entry
mc_entry:
        SAVE_CALL_RESTORE mc_handler
poll_entry:
        SAVE_CALL_RESTORE poll_handler

/* Every other exception is fatal: report it and halt this vCPU. */
        .macro ISR n
isr\n:
        .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
        .else
        push 0
        .endif
        push \n
        jmp isr_common
        .endm

        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,19,20,21,22,23,24,25,26,27,28,29,30,31
        ISR \n
        .endr

isr_common:
        mov rdi, rsp            /* [vector, error, rip, cs, rflags, rsp, ss] */
        and rsp, -16
        cld
        call fatal_handler
7:      cli
        hlt
        jmp 7b

        .section .rodata
        .globl isr_table
        .balign 8
isr_table:
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
        .quad isr\n
        .endr
        .quad mc_entry
        .irp n, 19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad isr\n
        .endr
