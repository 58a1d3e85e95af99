# faultd's fake clock functions for x86_64 (TimeChaos). READ-ONLY REFERENCE: this file is never
# assembled by the build. The bytes in `src/vdso/fake.rs` were produced once from it with
#   as --64 -o fake.o fake_x86_64.S && objdump -d -M intel --insn-width=16 -z fake.o
# and the listing is pasted beside them. If you change this file, regenerate both.
#
# One page, position independent, called with the C ABI (System V): uses only rax, rcx, rdx,
# rsi, rdi, r11 (caller-saved; `syscall` clobbers rcx and r11) and its own stack slots.
#
# Layout (offsets in the page):
#   0x00 off_sec   i64  offset seconds
#   0x08 off_nsec  i64  offset nanoseconds, always normalized to [0, 1e9) by faultd
#   0x10 mask      u64  bit n set = clock id n is shifted (n in 0..63)
#   0x18 reserved  u64  zero
#   0x20 add_offset (internal)
#   then the three entry points, each 16-byte aligned.
        .intel_syntax noprefix
        .text
page:
off_sec:  .quad 0
off_nsec: .quad 0
mask:     .quad 0
reserved: .quad 0

# add_offset: the timespec at [rsi] += (off_sec, off_nsec), tv_nsec normalized into [0, 1e9)
# (inputs: tv_nsec in [0, 1e9), off_nsec in [0, 1e9); the negative branch is defensive).
# Clobbers rax, rcx.
add_offset:
        mov     rax, [rip + off_sec]
        add     [rsi], rax
        mov     rax, [rsi + 8]
        add     rax, [rip + off_nsec]
        mov     ecx, 1000000000
        cmp     rax, rcx
        jl      1f
        sub     rax, rcx
        inc     qword ptr [rsi]
        jmp     2f
1:      test    rax, rax
        jns     2f
        add     rax, rcx
        dec     qword ptr [rsi]
2:      mov     [rsi + 8], rax
        ret

# int fake_clock_gettime(clockid_t clk /* edi */, struct timespec *ts /* rsi */)
# The real syscall (never the vDSO, which is what gets patched); on success, if bit `clk` of
# the mask is set (0 <= clk < 64), add the offset. Returns the syscall's result (0 or -errno,
# as the vDSO does; libc turns -errno into errno).
        .balign 16
fake_clock_gettime:
        mov     eax, 228                # SYS_clock_gettime (rdi, rsi survive `syscall`)
        syscall
        test    rax, rax
        jnz     9f
        cmp     edi, 63                 # unsigned: negative (CPU-time) clock ids are never shifted
        ja      9f
        mov     ecx, edi
        mov     rdx, [rip + mask]
        bt      rdx, rcx
        jnc     9f
        call    add_offset
        xor     eax, eax
9:      ret

# int fake_gettimeofday(struct timeval *tv /* rdi */, struct timezone *tz /* rsi */)
# The real gettimeofday syscall fills tv and tz (and reports EFAULT); then, if tv is not NULL
# and bit 0 (CLOCK_REALTIME) is set, tv is replaced by the shifted CLOCK_REALTIME reading
# truncated to microseconds, so it agrees exactly with fake_clock_gettime(CLOCK_REALTIME).
        .balign 16
fake_gettimeofday:
        mov     eax, 96                 # SYS_gettimeofday
        syscall
        test    rax, rax
        jnz     9f
        test    rdi, rdi
        jz      9f
        test    byte ptr [rip + mask], 1
        jz      9f
        push    rdi                     # tv, at [rsp + 16] below
        sub     rsp, 16                 # struct timespec at [rsp]
        mov     eax, 228                # SYS_clock_gettime(CLOCK_REALTIME, rsp)
        xor     edi, edi
        mov     rsi, rsp
        syscall
        test    rax, rax
        jnz     8f                      # cannot fail; keep the real tv if it does
        call    add_offset
        mov     rdi, [rsp + 16]
        mov     rax, [rsp]
        mov     [rdi], rax              # tv_sec
        mov     rax, [rsp + 8]          # tv_nsec in [0, 1e9)
        xor     edx, edx
        mov     ecx, 1000
        div     rcx
        mov     [rdi + 8], rax          # tv_usec in [0, 1e6)
8:      add     rsp, 16
        pop     rdi
        xor     eax, eax
9:      ret

# time_t fake_time(time_t *tloc /* rdi */)
# Bit 0 clear: the real time syscall. Bit 0 set: shifted CLOCK_REALTIME seconds (carry from
# the nanoseconds included, so it agrees with fake_clock_gettime), stored to *tloc if not NULL.
        .balign 16
fake_time:
        test    byte ptr [rip + mask], 1
        jnz     1f
        mov     eax, 201                # SYS_time
        syscall
        ret
1:      push    rdi                     # tloc, at [rsp + 16] below
        sub     rsp, 16
        mov     eax, 228                # SYS_clock_gettime(CLOCK_REALTIME, rsp)
        xor     edi, edi
        mov     rsi, rsp
        syscall
        test    rax, rax
        jnz     8f                      # cannot fail; return -errno if it does
        call    add_offset
        mov     rax, [rsp]
        mov     rdi, [rsp + 16]
        test    rdi, rdi
        jz      8f
        mov     [rdi], rax
8:      add     rsp, 16
        pop     rdi
        ret
        .balign 16
end:
