/*
 * kvmharness guest writer: a bare-metal 64-bit loop that dirties guest memory
 * at a chosen rate, in a pattern the host can replay exactly.
 *
 * Why it looks like this: on nested KVM runners (kvm_pvm) a guest runs on the
 * hardware only in 64-bit mode at CPL 3; anything else is emulated ~5000x
 * slower (docs/platform.md).  So this code runs at CPL 3 with no
 * IDT, no stack, no interrupts, and talks to the host only through shared
 * memory (the control block) and an MMIO doorbell.  The same setup is valid
 * on hardware KVM.
 *
 * ---- contract -------------------------------------------------------------
 * Entry:   offset 0 of this image, loaded at KVMH_CODE_GPA, 64-bit mode, CPL 3,
 *          identity-mapped paging.  %rdi = guest physical address of this
 *          vCPU's control block (guest/layout.h).  Other registers: any.
 *          Position independent: only relative jumps, absolute addresses
 *          come from layout.h.
 * Control: a seqlock.  The host makes GEN odd, writes parameters, makes
 *          GEN even again.  The guest rereads everything when GEN changes
 *          (waiting while it is odd), then stores COUNTER in SEEN_COUNTER
 *          and GEN in SEEN_GEN (so the host knows the exact write at which
 *          new parameters took effect).  An access that uses options read
 *          from the control block checks GEN after reading them and before
 *          touching RAM: since the host's odd GEN store precedes its
 *          parameter stores (x86 keeps stores in order, and loads too), an
 *          unchanged GEN proves the options read were that GEN's.  Without
 *          this, a guest spinning in CMD_HOLD could read the new CMD with
 *          the old GEN and make its first access under the new options
 *          while the host attributed it to the old ones (seen under QEMU,
 *          whose held guest spins instead of exiting).
 *          CMD_HOLD: the guest rings EVENT_HELD (the host re-enters KVM_RUN
 *          when the command changes); CMD_RUN: write; CMD_EXIT: ring
 *          EVENT_EXITED forever.
 * Access:  access number i (i = COUNTER before it, from 0) touches page p(i)
 *          of the region [BASE, BASE + NPAGES * 4096); a write stores the
 *          8-byte tag i + 1 at offset 0 of the page, a read loads it (and
 *          READS counts it); then COUNTER becomes i + 1.  With
 *          s(i) = SEED + (i + 1) * GOLDEN and z = SplitMix64-mix(s(i)):
 *            random:     p = (z * NPAGES) >> 64          (multiply-high)
 *            sequential: p = i mod NPAGES
 *            table:      j = (z * NPAGES) >> 64, e = TABLE[j],
 *                        p = j if (z mod 2^32) < (e mod 2^32) else e >> 32
 *          and access i is a read iff
 *            (SplitMix64-mix(s(i) XOR WRITE_SALT) mod 2^32) < READ_THRESHOLD.
 *          A counter-based generator: p(i) and the choice depend only on
 *          SEED, NPAGES, the table, READ_THRESHOLD and i, so the host
 *          replays any counter range without running the guest.
 * Rate:    WPS = 0 writes as fast as it can.  Otherwise write i+1 waits for
 *          the TSC deadline of write i plus INTERVAL + INTERVAL_FRAC/2^32
 *          ticks.  When the writer lags its schedule by more than BACKLOG
 *          ticks (a long exit, preemption), the schedule restarts from now:
 *          RESETS counts the restarts and DROPPED adds up the lag each one
 *          gave up.  So a write never runs more than BACKLOG after its
 *          deadline nor before it, and with B = BACKLOG / TSC rate:
 *            - over any T seconds the writer makes at most WPS * (T + B) + 1
 *              writes: it never bursts more than B worth to catch up;
 *            - deadline(n) = start + n / WPS + DROPPED / TSC rate, so the
 *              writes it made are WPS * (elapsed - dropped) to within
 *              WPS * B + 1, which lets the host check its pacing exactly
 *              whatever the host stole from it.
 * Bursts:  with BURST_ON > 0 the writer accesses for BURST_ON ticks, idles
 *          BURST_OFF ticks, and so on, the phases counted from the start
 *          of the run; each idle phase adds BURST_OFF to IDLED (when it
 *          begins) and moves the rate schedule on by as much, so a paced
 *          writer resumes at its rate and never catches up an idle phase:
 *          deadline(n) = start + n / WPS + (DROPPED + IDLED) / TSC rate.
 *          An unpaced writer checks the clock every 64 accesses, so its
 *          phases end up to 64 accesses late.
 * Limit:   with LIMIT > COUNTER, a run stops once COUNTER reaches LIMIT
 *          (checked after each access, so LIMIT = 0 never stops one):
 *          the guest stamps RUN_END (RUN_BEGIN was stamped when the run
 *          took up RUN), sets STATE_DONE and rings EVENT_HELD until GEN
 *          changes.  So the host can ask for exactly n accesses, as
 *          dirty_log_perf_test's guest makes one pass per iteration and
 *          then exits to the host; any other LIMIT never matches.
 * Warm-up: with WARM = 1, before the first command the guest stores
 *          KVMH_WARM_TAG in every page of its region, bracketing the pass
 *          with TSC stamps WARM_BEGIN and WARM_END.
 *
 * Registers while running:
 *   rdi ctl   r8 counter   r9 base   r10 npages   r12 gen   r13 PRNG state
 *   r14 deadline   esi deadline fraction   rbx sequential cursor
 *   rbp GOLDEN   r11 MIX1   r15 MIX2   rax rcx rdx scratch
 * Plain random or sequential writing runs in four tight loops; tables,
 * reads and bursts in one general loop that reads its options from the
 * control block (L1-resident) at each access.
 */
#include "layout.h"

        .text
        .code64
        .globl kvmh_guest_entry
kvmh_guest_entry:
        movq    $KVMH_STATE_WARMING, KVMH_CTL_STATE(%rdi)
        cmpq    $0, KVMH_CTL_WARM(%rdi)
        je      reload
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
        movq    %rax, KVMH_CTL_WARM_BEGIN(%rdi)
        movq    KVMH_CTL_BASE(%rdi), %r9
        movq    KVMH_CTL_NPAGES(%rdi), %r10
        movabsq $KVMH_WARM_TAG, %rcx
warm_loop:
        movq    %rcx, (%r9)
        addq    $KVMH_PAGE_SIZE, %r9
        decq    %r10
        jnz     warm_loop
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
        movq    %rax, KVMH_CTL_WARM_END(%rdi)

reload:
        movq    KVMH_CTL_GEN(%rdi), %r12
        testq   $1, %r12                        /* odd: the host is changing the options */
        jnz     reload
        movq    KVMH_CTL_COUNTER(%rdi), %rax
        movq    %rax, KVMH_CTL_SEEN_COUNTER(%rdi)
        movq    %r12, KVMH_CTL_SEEN_GEN(%rdi)
        movq    KVMH_CTL_CMD(%rdi), %rax
        cmpq    $KVMH_CMD_RUN, %rax
        je      start_run
        cmpq    $KVMH_CMD_EXIT, %rax
        je      do_exit
        movq    $KVMH_STATE_HELD, KVMH_CTL_STATE(%rdi)
        movq    $KVMH_EVENT_HELD, %rax
        movabsq $KVMH_DOORBELL_GPA, %rdx
        movq    %rax, (%rdx)
        jmp     reload

do_exit:
        movq    $KVMH_STATE_EXITED, KVMH_CTL_STATE(%rdi)
        movq    $KVMH_EVENT_EXITED, %rax
        movabsq $KVMH_DOORBELL_GPA, %rdx
        movq    %rax, (%rdx)
        jmp     do_exit

start_run:
        movq    KVMH_CTL_COUNTER(%rdi), %r8
        movq    KVMH_CTL_BASE(%rdi), %r9
        movq    KVMH_CTL_NPAGES(%rdi), %r10
        movabsq $KVMH_GOLDEN, %rbp
        movabsq $KVMH_MIX1, %r11
        movabsq $KVMH_MIX2, %r15
        /* PRNG state = SEED + COUNTER * GOLDEN: the next write adds GOLDEN. */
        movq    %r8, %r13
        imulq   %rbp, %r13
        addq    KVMH_CTL_SEED(%rdi), %r13
        /* sequential cursor = COUNTER mod NPAGES */
        movq    %r8, %rax
        xorl    %edx, %edx
        divq    %r10
        movq    %rdx, %rbx
        /* the schedule starts now */
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
        movq    %rax, %r14
        movq    %rax, KVMH_CTL_RUN_BEGIN(%rdi)
        xorl    %esi, %esi
        /* the first writing phase of a burst starts now too */
        addq    KVMH_CTL_BURST_ON(%rdi), %rax
        movq    %rax, KVMH_CTL_BURST_NEXT(%rdi)
        movq    $KVMH_STATE_RUNNING, KVMH_CTL_STATE(%rdi)
        /* choose the loop (-> %rcx), then check that GEN has not moved
         * since reload: every option read above then belongs to GEN %r12
         * (see "Control"), and the first access is attributed right */
        leaq    general(%rip), %rcx
        cmpq    $0, KVMH_CTL_BURST_ON(%rdi)
        jne     1f
        cmpq    $0, KVMH_CTL_READ_THRESHOLD(%rdi)
        jne     1f
        cmpq    $KVMH_PATTERN_TABLE, KVMH_CTL_PATTERN(%rdi)
        je      1f
        cmpq    $KVMH_PATTERN_SEQUENTIAL, KVMH_CTL_PATTERN(%rdi)
        jne     2f
        leaq    sequential_fast(%rip), %rcx
        cmpq    $0, KVMH_CTL_WPS(%rdi)
        je      1f
        leaq    sequential_paced(%rip), %rcx
        jmp     1f
2:
        leaq    random_fast(%rip), %rcx
        cmpq    $0, KVMH_CTL_WPS(%rdi)
        je      1f
        leaq    random_paced(%rip), %rcx
1:
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
        jmp     *%rcx

/* %rax = SplitMix64-mix(%rax); clobbers %rcx */
.macro MIX
        movq    %rax, %rcx
        shrq    $30, %rcx
        xorq    %rcx, %rax
        imulq   %r11, %rax
        movq    %rax, %rcx
        shrq    $27, %rcx
        xorq    %rcx, %rax
        imulq   %r15, %rax
        movq    %rax, %rcx
        shrq    $31, %rcx
        xorq    %rcx, %rax
.endm

/* page number of the next random write -> %rdx */
.macro PICK_RANDOM
        addq    %rbp, %r13
        movq    %r13, %rax
        MIX
        mulq    %r10
.endm

/* page number of the next sequential write -> %rdx */
.macro PICK_SEQUENTIAL
        movq    %rbx, %rdx
        incq    %rbx
        xorl    %ecx, %ecx
        cmpq    %r10, %rbx
        cmoveq  %rcx, %rbx
.endm

/* store the tag in page %rdx, publish the counter, reread on a new GEN */
.macro WRITE_PAGE
        shlq    $KVMH_PAGE_SHIFT, %rdx
        incq    %r8
        movq    %r8, (%r9,%rdx)
        movq    %r8, KVMH_CTL_COUNTER(%rdi)
        cmpq    KVMH_CTL_LIMIT(%rdi), %r8
        je      limit_reached
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
.endm

/* %rax = the TSC */
.macro RDTSC64
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
.endm

/* at the end of a writing phase, idle through the next idle phase */
.macro BURST
        RDTSC64
        cmpq    KVMH_CTL_BURST_NEXT(%rdi), %rax
        jb      2f
        movq    KVMH_CTL_BURST_OFF(%rdi), %rax
        addq    %rax, KVMH_CTL_IDLED(%rdi)
        addq    %rax, %r14
        movq    KVMH_CTL_BURST_NEXT(%rdi), %rcx
        addq    %rax, %rcx
1:
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
        RDTSC64
        cmpq    %rcx, %rax
        jb      1b
        addq    KVMH_CTL_BURST_ON(%rdi), %rcx
        movq    %rcx, KVMH_CTL_BURST_NEXT(%rdi)
2:
.endm

/* wait for the deadline of the next write, then move the deadline on */
.macro PACE
1:
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
        movq    %rax, %rcx
        subq    %r14, %rcx
        js      1b
        cmpq    KVMH_CTL_BACKLOG(%rdi), %rcx
        jbe     2f
        movq    %rax, %r14
        incq    KVMH_CTL_RESETS(%rdi)
        addq    %rcx, KVMH_CTL_DROPPED(%rdi)
2:
        addl    KVMH_CTL_INTERVAL_FRAC(%rdi), %esi
        adcq    KVMH_CTL_INTERVAL(%rdi), %r14
.endm

        .p2align 4
random_fast:
        PICK_RANDOM
        WRITE_PAGE
        jmp     random_fast

        .p2align 4
random_paced:
        PACE
        PICK_RANDOM
        WRITE_PAGE
        jmp     random_paced

        .p2align 4
sequential_fast:
        PICK_SEQUENTIAL
        WRITE_PAGE
        jmp     sequential_fast

        .p2align 4
sequential_paced:
        PACE
        PICK_SEQUENTIAL
        WRITE_PAGE
        jmp     sequential_paced

/* The general loop: any pattern, reads, bursts. */
        .p2align 4
general:
        cmpq    $0, KVMH_CTL_WPS(%rdi)
        je      3f
        PACE
        jmp     5f
3:
        /* unpaced, the phase is checked every 64 accesses: RDTSC costs as
         * much as an access, and 64 accesses take microseconds */
        testq   $63, %r8
        jnz     4f
5:
        cmpq    $0, KVMH_CTL_BURST_ON(%rdi)
        je      4f
        BURST
4:
        addq    %rbp, %r13
        cmpq    $KVMH_PATTERN_SEQUENTIAL, KVMH_CTL_PATTERN(%rdi)
        je      6f
        movq    %r13, %rax
        MIX
        movq    %rax, %rcx
        mulq    %r10
        cmpq    $KVMH_PATTERN_TABLE, KVMH_CTL_PATTERN(%rdi)
        jne     7f
        movq    KVMH_CTL_TABLE(%rdi), %rax
        movq    (%rax,%rdx,8), %rax
        cmpl    %eax, %ecx
        jb      7f
        shrq    $KVMH_ALIAS_SHIFT, %rax
        movq    %rax, %rdx
        jmp     7f
6:
        PICK_SEQUENTIAL
7:
        shlq    $KVMH_PAGE_SHIFT, %rdx
        cmpq    $0, KVMH_CTL_READ_THRESHOLD(%rdi)
        je      8f
        movabsq $KVMH_WRITE_SALT, %rax
        xorq    %r13, %rax
        MIX
        movl    %eax, %eax
        cmpq    KVMH_CTL_READ_THRESHOLD(%rdi), %rax
        jae     8f
        /* this access read its options from the control block: they are
         * GEN %r12's only if GEN is still %r12 now, before it touches RAM */
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
        incq    %r8
        movq    (%r9,%rdx), %rax
        incq    KVMH_CTL_READS(%rdi)
        jmp     9f
8:
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        jne     reload
        incq    %r8
        movq    %r8, (%r9,%rdx)
9:
        movq    %r8, KVMH_CTL_COUNTER(%rdi)
        cmpq    KVMH_CTL_LIMIT(%rdi), %r8
        je      limit_reached
        jmp     general

/* The run made its LIMIT accesses: stamp the time, report DONE, and stay
 * out of the guest (doorbell) until the host changes the command. */
limit_reached:
        RDTSC64
        movq    %rax, KVMH_CTL_RUN_END(%rdi)
        movq    $KVMH_STATE_DONE, KVMH_CTL_STATE(%rdi)
1:
        movq    $KVMH_EVENT_HELD, %rax
        movabsq $KVMH_DOORBELL_GPA, %rdx
        movq    %rax, (%rdx)
        cmpq    KVMH_CTL_GEN(%rdi), %r12
        je      1b
        jmp     reload

        .globl kvmh_guest_end
kvmh_guest_end:
