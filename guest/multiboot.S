/*
 * kvmharness guest for QEMU: a multiboot v1 boot stub in front of the same
 * writer (guest/writer.S), so QEMU can boot it with -kernel and the host
 * can check QEMU's dirty-rate figures against exact replay.
 *
 * Why it looks like this: QEMU's multiboot loader enters the image in 32-bit
 * protected mode, ring 0, paging off (EAX = 0x2BADB002, EBX = the multiboot
 * info).  Our micro-VM's host sets up long mode and CPL 3 itself; here the
 * stub must.  On a nested runner every instruction outside 64-bit CPL 3 is
 * emulated (~1 us each, docs/platform.md), so the stub does as little as it
 * can: static tables get it into long mode, one loop of one store per 2 MiB
 * builds the real map, and an iretq drops to CPL 3 into the writer.
 *
 * The map it builds (guest/layout.h, KVMH_MB_*), all with U/S set at every
 * level (a CPL-3 guest faults otherwise, and with no IDT that is a triple
 * fault: QEMU then stops with -no-reboot):
 *   - [0, KVMH_MB_DATA_OFFSET) identity: this image, the control block and
 *     the boot info;
 *   - KVMH_DOORBELL_GPA -> KVMH_MB_DOORBELL_RAM: the writer's doorbell is
 *     plain RAM here, so a held writer spins on its control block without
 *     an exit (QEMU has no handler for our doorbell; the host polls);
 *   - KVMH_DATA_GPA + x -> the RAM at offset KVMH_MB_DATA_OFFSET + x of the
 *     guest's RAM, for all RAM from KVMH_MB_DATA_OFFSET on.  QEMU puts RAM
 *     below the PCI hole at guest physical 0 (LOWMEM bytes) and the rest at
 *     4 GiB, in order, so offset f is physical f below LOWMEM and
 *     f - LOWMEM + 4 GiB above.  A file-backed RAM holds offset f at file
 *     offset f: the host finds page j of the writer's region at file offset
 *     KVMH_MB_DATA_OFFSET + BASE - KVMH_DATA_GPA + 4096 j whatever the split.
 * LOWMEM comes from multiboot's mem_upper, the RAM above 4 GiB from the
 * memory map.  What the stub found is left at
 * KVMH_MB_INFO_GPA for the host to check; so is the reason when it gives up.
 */
#include "layout.h"

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_HEADER_FLAGS 0x00000002      /* bit 1: give us the memory information */
#define MB_BOOT_MAGIC   0x2BADB002
#define MBI_FLAGS       0
#define MBI_MEM_UPPER   8
#define MBI_MMAP_LENGTH 44
#define MBI_MMAP_ADDR   48
#define MBI_HAS_MEM     (1 << 0)
#define MBI_HAS_MMAP    (1 << 6)

#define PTE_TABLE       0x7             /* present, writable, user */
#define PTE_LARGE       0x87            /* ... and a 2 MiB page */
#define SIZE_2M         0x200000
#define PML4            (KVMH_MB_PT_GPA)
#define PDPT            (KVMH_MB_PT_GPA + 0x1000)
#define PD_LOW          (KVMH_MB_PT_GPA + 0x2000)
#define PD_DOORBELL     (KVMH_MB_PT_GPA + 0x3000)
#define PD_DATA         (KVMH_MB_PT_GPA + 0x4000)
#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_UDATA       0x2b            /* GDT entry 5, RPL 3: the micro-VM's selectors */
#define SEL_UCODE       0x33            /* GDT entry 6, RPL 3 */

        .text
        .code32
        .p2align 2
mb_header:
        .long   MB_HEADER_MAGIC
        .long   MB_HEADER_FLAGS
        .long   -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

        .globl  kvmh_mb_start
kvmh_mb_start:
        cli
        movl    $KVMH_MB_FAIL_MAGIC, %ecx
        cmpl    $MB_BOOT_MAGIC, %eax
        jne     fail32
        movl    %ebx, mb_info
        movl    $boot_pml4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax                     /* PAE */
        movl    %eax, %cr4
        movl    $0xC0000080, %ecx               /* EFER */
        rdmsr
        orl     $0x100, %eax                    /* LME */
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000001, %eax               /* PG | PE */
        movl    %eax, %cr0
        lgdt    gdt_pointer
        ljmp    $SEL_KCODE, $long_mode

/* %ecx = reason; paging is off, so the boot info address is physical */
fail32:
        movl    %ecx, KVMH_MB_INFO_GPA + KVMH_MB_INFO_STATUS
        movl    $0, KVMH_MB_INFO_GPA + KVMH_MB_INFO_STATUS + 4
        movl    $(KVMH_MB_FAILED & 0xffffffff), KVMH_MB_INFO_GPA + KVMH_MB_INFO_MAGIC
        movl    $(KVMH_MB_FAILED >> 32), KVMH_MB_INFO_GPA + KVMH_MB_INFO_MAGIC + 4
1:      hlt
        jmp     1b

        .code64
long_mode:
        movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        leaq    boot_stack_top(%rip), %rsp
        movl    mb_info(%rip), %esi

        /* LOWMEM = (mem_upper + 1024) KiB rounded up to 2 MiB -> %r8: SeaBIOS
         * reserves the top 128 KiB of low RAM in its memory map, which
         * mem_upper is read from, while QEMU splits RAM at a multiple of
         * 2 MiB when -m is one (the host checks LOWMEM + HIGHMEM = -m) */
        movl    $KVMH_MB_FAIL_MEMINFO, %ecx
        testl   $MBI_HAS_MEM, MBI_FLAGS(%rsi)
        jz      fail
        testl   $MBI_HAS_MMAP, MBI_FLAGS(%rsi)
        jz      fail
        movl    MBI_MEM_UPPER(%rsi), %r8d
        addq    $1024, %r8
        shlq    $10, %r8
        addq    $(SIZE_2M - 1), %r8
        andq    $~(SIZE_2M - 1), %r8

        /* RAM at 4 GiB and up (type 1 entries of the memory map) -> %r9 */
        xorl    %r9d, %r9d
        movl    MBI_MMAP_ADDR(%rsi), %edx
        movl    MBI_MMAP_LENGTH(%rsi), %eax
        leaq    (%rdx,%rax), %r11
        movabsq $0x100000000, %r10
1:      cmpq    %r11, %rdx
        jae     3f
        cmpl    $1, 20(%rdx)                    /* entry: size, base, length, type */
        jne     2f
        cmpq    %r10, 4(%rdx)
        jb      2f
        addq    12(%rdx), %r9
2:      movl    (%rdx), %eax
        leaq    4(%rdx,%rax), %rdx
        jmp     1b
3:
        /* the data mapping: every byte of RAM from KVMH_MB_DATA_OFFSET on -> %r11 */
        leaq    (%r8,%r9), %r11
        movl    $KVMH_MB_FAIL_SMALL, %ecx
        subq    $KVMH_MB_DATA_OFFSET, %r11
        jbe     fail
        movl    $KVMH_MB_FAIL_LARGE, %ecx
        movq    %r11, %rax
        shrq    $18, %rax                       /* 8 bytes of PD per 2 MiB */
        cmpq    $(KVMH_MB_PT_END - PD_DATA), %rax
        ja      fail

        /* zero the table pages this map uses */
        movl    $PML4, %edi
        leaq    (PD_DATA - PML4 + 0xfff)(%rax), %rcx
        andq    $~0xfff, %rcx
        shrq    $3, %rcx
        xorl    %eax, %eax
        rep stosq

        movq    $(PDPT | PTE_TABLE), PML4
        movq    $(PD_LOW | PTE_TABLE), PDPT
        movq    $(PD_DOORBELL | PTE_TABLE), PDPT + 8 * (KVMH_DOORBELL_GPA >> 30)
        movq    $(KVMH_MB_DOORBELL_RAM | PTE_LARGE), PD_DOORBELL + 8 * ((KVMH_DOORBELL_GPA >> 21) & 511)
        /* identity [0, KVMH_MB_DATA_OFFSET) */
        movl    $PTE_LARGE, %eax
        movl    $PD_LOW, %edi
4:      movq    %rax, (%rdi)
        addq    $8, %rdi
        addq    $SIZE_2M, %rax
        cmpq    $(KVMH_MB_DATA_OFFSET | PTE_LARGE), %rax
        jb      4b
        /* PDPT entry (KVMH_DATA_GPA >> 30) + i -> PD_DATA + 4 KiB i, one per GiB mapped */
        leaq    ((1 << 30) - 1)(%r11), %rcx
        shrq    $30, %rcx
        movl    $(PDPT + 8 * (KVMH_DATA_GPA >> 30)), %edi
        movl    $(PD_DATA | PTE_TABLE), %eax
5:      movq    %rax, (%rdi)
        addq    $8, %rdi
        addq    $0x1000, %rax
        decq    %rcx
        jnz     5b
        /* data PD entries: offset f = KVMH_MB_DATA_OFFSET + x, physical f or f - LOWMEM + 4 GiB */
        movl    $PD_DATA, %edi
        movq    $KVMH_MB_DATA_OFFSET, %rax
        leaq    (%r11,%rax), %rdx                       /* end offset */
        movq    %r10, %rbx
        subq    %r8, %rbx                               /* 4 GiB - LOWMEM: added above LOWMEM */
6:      movq    %rax, %rcx
        cmpq    %r8, %rax
        jb      7f
        addq    %rbx, %rcx
7:      orq     $PTE_LARGE, %rcx
        movq    %rcx, (%rdi)
        addq    $8, %rdi
        addq    $SIZE_2M, %rax
        cmpq    %rdx, %rax
        jb      6b

        movl    $PML4, %eax
        movq    %rax, %cr3

        /* the boot info, magic last.  The control block is the host's: it
         * wrote it into the RAM file before QEMU started */
        movq    %r8, KVMH_MB_INFO_GPA + KVMH_MB_INFO_LOWMEM
        movq    %r9, KVMH_MB_INFO_GPA + KVMH_MB_INFO_HIGHMEM
        movq    %r11, KVMH_MB_INFO_GPA + KVMH_MB_INFO_MAPPED
        movq    $0, KVMH_MB_INFO_GPA + KVMH_MB_INFO_STATUS
        movabsq $KVMH_MB_BOOTED, %rax
        movq    %rax, KVMH_MB_INFO_GPA + KVMH_MB_INFO_MAGIC

        /* CPL 3: the writer, %rdi = its control block, no stack, interrupts off */
        movl    $KVMH_MB_CTL_GPA, %edi
        pushq   $SEL_UDATA
        pushq   $0
        pushq   $0x2
        pushq   $SEL_UCODE
        leaq    kvmh_guest_entry(%rip), %rax
        pushq   %rax
        iretq

/* %ecx = reason */
fail:
        movq    %rcx, KVMH_MB_INFO_GPA + KVMH_MB_INFO_STATUS
        movabsq $KVMH_MB_FAILED, %rax
        movq    %rax, KVMH_MB_INFO_GPA + KVMH_MB_INFO_MAGIC
1:      hlt
        jmp     1b

        .data
        .p2align 3
gdt:
        .quad   0
        .quad   0x00209A0000000000              /* 0x08: ring-0 64-bit code */
        .quad   0x0000920000000000              /* 0x10: ring-0 data */
        .quad   0
        .quad   0
        .quad   0x0000F20000000000              /* 0x28: ring-3 data */
        .quad   0x0020FA0000000000              /* 0x30: ring-3 64-bit code */
gdt_end:
gdt_pointer:
        .word   gdt_end - gdt - 1
        .quad   gdt
mb_info:
        .long   0

/* Static tables for the way in: the first 1 GiB identity-mapped in 2 MiB
 * pages, enough for this image and the multiboot info. */
        .p2align 12
boot_pml4:
        .quad   boot_pdpt + PTE_TABLE
        .fill   511, 8, 0
boot_pdpt:
        .quad   boot_pd + PTE_TABLE
        .fill   511, 8, 0
boot_pd:
        .set    n, 0
        .rept   512
        .quad   n * SIZE_2M + PTE_LARGE
        .set    n, n + 1
        .endr
boot_stack:
        .fill   64, 8, 0
boot_stack_top:

/* the writer, unchanged: it takes %rdi and never returns */
#include "writer.S"
