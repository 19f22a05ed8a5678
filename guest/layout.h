/*
 * Guest physical layout and the writer's control block: the one contract
 * shared by guest/writer.S (the guest), native/ (which exports these numbers
 * to Python through cffi) and kvmharness/ (the host).
 *
 * Everything here is plain #define so that the assembler, the C compiler and
 * cffi's cdef can all read it.
 */
#ifndef KVMH_LAYOUT_H
#define KVMH_LAYOUT_H

/* ---- guest physical map ------------------------------------------------ */
/* Control slot (memslot 0) starts at guest physical 0. */
#define KVMH_PML4_GPA           0x1000
#define KVMH_PDPT_GPA           0x2000
#define KVMH_CODE_GPA           0x4000
#define KVMH_CODE_MAX           0x4000      /* 16 KiB of guest code at most */
#define KVMH_CTL_GPA            0x10000     /* control blocks, one page per vCPU */
#define KVMH_CTL_STRIDE         0x1000
#define KVMH_MAX_VCPUS          64
#define KVMH_PD_GPA             0x100000    /* page directories, one per GiB mapped */
/* MMIO doorbell: mapped by the guest page tables, backed by no memslot. */
#define KVMH_DOORBELL_GPA       0xC0000000
/* Data slot (memslot 1): the writer's region. */
#define KVMH_DATA_GPA           0x100000000

#define KVMH_PAGE_SIZE          4096
#define KVMH_PAGE_SHIFT         12

/* ---- control block (one per vCPU, at KVMH_CTL_GPA + vcpu * stride) ------ */
/* Written by the host, read by the guest: */
#define KVMH_CTL_GEN            0x00  /* bumped by the host after any change below */
#define KVMH_CTL_CMD            0x08  /* KVMH_CMD_* */
#define KVMH_CTL_WPS            0x10  /* target writes/s, 0 = unlimited */
#define KVMH_CTL_INTERVAL       0x18  /* TSC ticks per write, integer part */
#define KVMH_CTL_INTERVAL_FRAC  0x20  /* TSC ticks per write, fraction * 2^32 */
#define KVMH_CTL_BACKLOG        0x28  /* TSC ticks of lag the writer may catch up; more restarts the schedule */
#define KVMH_CTL_SEED           0x30  /* PRNG seed of this vCPU */
#define KVMH_CTL_BASE           0x38  /* guest physical address of page 0 of the region */
#define KVMH_CTL_NPAGES         0x40  /* pages in the region (any number >= 1) */
#define KVMH_CTL_PATTERN        0x48  /* KVMH_PATTERN_* */
#define KVMH_CTL_WARM           0x50  /* 1: touch every page once before the first command */
#define KVMH_CTL_TABLE          0x58  /* PATTERN_TABLE: address of NPAGES alias entries (below) */
#define KVMH_CTL_READ_THRESHOLD 0x60  /* an access is a read when its write draw is below this (0..2^32) */
#define KVMH_CTL_BURST_ON       0x68  /* TSC ticks of each writing phase; 0 = no bursts */
#define KVMH_CTL_BURST_OFF      0x70  /* TSC ticks of each idle phase that follows one */
#define KVMH_CTL_LIMIT          0x78  /* 0, or the COUNTER at which a run stops (STATE_DONE) */
/* Written by the guest, read by the host: */
#define KVMH_CTL_COUNTER        0x80  /* writes done so far = index of the next write */
#define KVMH_CTL_STATE          0x88  /* KVMH_STATE_* */
#define KVMH_CTL_SEEN_GEN       0x90  /* the generation the guest is acting on */
#define KVMH_CTL_WARM_BEGIN     0x98  /* TSC at the start of the warm-up pass */
#define KVMH_CTL_WARM_END       0xa0  /* TSC at its end */
#define KVMH_CTL_RESETS         0xa8  /* times the rate schedule was restarted (backlog dropped) */
#define KVMH_CTL_SEEN_COUNTER   0xb0  /* COUNTER when the guest took up SEEN_GEN */
#define KVMH_CTL_DROPPED        0xb8  /* TSC ticks of schedule given up by those restarts */
#define KVMH_CTL_READS          0xc0  /* accesses so far that were reads (COUNTER - READS writes) */
#define KVMH_CTL_IDLED          0xc8  /* TSC ticks of idle burst phases begun so far */
#define KVMH_CTL_BURST_NEXT     0xd0  /* TSC at which the current writing phase ends (the guest's) */
#define KVMH_CTL_RUN_BEGIN      0xd8  /* TSC when the current run started (took up RUN) */
#define KVMH_CTL_RUN_END        0xe0  /* TSC when it reached LIMIT */
#define KVMH_CTL_SIZE           0xe8

#define KVMH_CMD_HOLD           0
#define KVMH_CMD_RUN            1
#define KVMH_CMD_EXIT           2

#define KVMH_PATTERN_RANDOM     0
#define KVMH_PATTERN_SEQUENTIAL 1
#define KVMH_PATTERN_TABLE      2     /* any page distribution, drawn through an alias table */

/* Alias table entry (Walker 1977; Vose 1991), one per page j of the region:
 * bits 0-31 a threshold t, bits 32-63 an alias page a.  A draw with column j
 * and 32-bit u picks j when u < t, else a.  Columns that keep all their
 * mass have a = j. */
#define KVMH_ALIAS_SHIFT        32

/* Salt of the write draw: an access's read/write choice mixes the PRNG
 * state XOR this, so it is independent of the page choice. */
#define KVMH_WRITE_SALT         0x5851f42d4c957f2d
#define KVMH_STATE_BOOT         0
#define KVMH_STATE_WARMING      1
#define KVMH_STATE_HELD         2
#define KVMH_STATE_RUNNING      3
#define KVMH_STATE_EXITED       4
#define KVMH_STATE_DONE         5     /* the run reached LIMIT: held until GEN changes */

/* Doorbell events: the 8-byte value the guest writes to KVMH_DOORBELL_GPA. */
#define KVMH_EVENT_HELD         1     /* the writer is idle until the command changes */
#define KVMH_EVENT_EXITED       2     /* the writer has stopped for good */

/* Tags: what the guest writes.  Write number i (0-based) stores i + 1 at
 * offset 0 of its page, so a page's tag is the number of the last write
 * that hit it; the warm-up stores KVMH_WARM_TAG. */
#define KVMH_WARM_TAG           0x8000000000000000

/* SplitMix64 constants (Steele, Lea, Flood: "Fast splittable pseudorandom
 * number generators", OOPSLA 2014). */
#define KVMH_GOLDEN             0x9e3779b97f4a7c15
#define KVMH_MIX1               0xbf58476d1ce4e5b9
#define KVMH_MIX2               0x94d049bb133111eb

/* ---- the QEMU image (guest/multiboot.S) ----------------------------------
 * The same writer, booted by QEMU's multiboot loader (-kernel) instead of
 * set up by our host.  Guest physical addresses below are also offsets in a
 * file-backed RAM (memory-backend-file), which the host maps to read the
 * guest's counters and pages as it does its own VM's.  */
#define KVMH_MB_LOAD_GPA        0x100000    /* the image is linked here (1 MiB) */
#define KVMH_MB_PT_GPA          0x200000    /* page tables: PML4, PDPT, low PD, doorbell PD, data PDs */
#define KVMH_MB_PT_END          0x300000
#define KVMH_MB_CTL_GPA         0x300000    /* the writer's control block (one vCPU) */
#define KVMH_MB_INFO_GPA        0x301000    /* boot info the stub leaves for the host */
#define KVMH_MB_DOORBELL_RAM    0x400000    /* 2 MiB of RAM the doorbell address maps to: no exits */
#define KVMH_MB_DATA_OFFSET     0x1000000   /* RAM from 16 MiB on is the data mapping */
/* Boot info (at KVMH_MB_INFO_GPA), written by the stub, magic last: */
#define KVMH_MB_INFO_MAGIC      0x00  /* KVMH_MB_BOOTED, or KVMH_MB_FAILED with the reason in STATUS */
#define KVMH_MB_INFO_STATUS     0x08  /* KVMH_MB_FAIL_* */
#define KVMH_MB_INFO_LOWMEM     0x10  /* RAM below the PCI hole, bytes (mem_upper, rounded up to 2 MiB) */
#define KVMH_MB_INFO_HIGHMEM    0x18  /* RAM from 4 GiB on, bytes (from the multiboot memory map) */
#define KVMH_MB_INFO_MAPPED     0x20  /* bytes of the data mapping at KVMH_DATA_GPA */
#define KVMH_MB_BOOTED          0x4445544f4f42484b   /* "KHBOOTED" */
#define KVMH_MB_FAILED          0x4c494146484b4b48   /* "HKKHFAIL" */
#define KVMH_MB_FAIL_MAGIC      1     /* not entered by a multiboot loader */
#define KVMH_MB_FAIL_MEMINFO    2     /* no mem_upper or no memory map */
#define KVMH_MB_FAIL_SMALL      3     /* no RAM above KVMH_MB_DATA_OFFSET */
#define KVMH_MB_FAIL_LARGE      4     /* more RAM than the page-table area maps */

#endif
