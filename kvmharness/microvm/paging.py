"""Guest page tables: a 4-level identity map with 2 MiB pages, U/S set at
every level.

Why U/S everywhere: the guest runs at CPL 3 (the only mode the nested runner
executes natively), and a user-mode access through any supervisor-only level
faults; with no IDT that fault is a triple fault (docs/platform.md).
Only what the guest needs is mapped: the control slot, the doorbell page and
the data slot.  Anything else faults, so a stray guest access is caught as a
KVM_EXIT_SHUTDOWN instead of silently hitting memory.
"""

import struct
from dataclasses import dataclass

from .._native import lib

PTE_P, PTE_RW, PTE_US, PTE_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 7
TABLE = PTE_P | PTE_RW | PTE_US
LARGE_PAGE = TABLE | PTE_PS
SIZE_2M = 2 << 20
SIZE_1G = 1 << 30
MAX_MAPPED = 512 * SIZE_1G  # what PML4 entry 0 covers; slot 256 is the host's


@dataclass(frozen=True)
class PageTables:
    """Where the tables go in the control slot and what they contain."""

    entries: tuple  # (guest physical address of an entry, 8-byte value)
    end: int  # first byte past the last page directory

    def write_into(self, mapping):
        for gpa, value in self.entries:
            mapping.write(gpa, struct.pack("<Q", value))


def build(control_size, data_gpa, data_size, extra=()):
    """Page tables mapping [0, control_size), the doorbell, the data slot
    and the `extra` (address, size) ranges."""
    ranges = [
        (0, control_size),
        (lib.KVMH_DOORBELL_GPA, SIZE_2M),
        (data_gpa, data_size),
        *extra,
    ]
    if any(start + size > MAX_MAPPED for start, size in ranges):
        raise ValueError("a slot ends beyond the 512 GiB that PML4 entry 0 maps")
    large_pages = sorted(
        {addr for start, size in ranges for addr in range(start & ~(SIZE_2M - 1), start + size, SIZE_2M)}
    )
    gibs = sorted({addr // SIZE_1G for addr in large_pages})
    pd_of = {gib: lib.KVMH_PD_GPA + i * lib.KVMH_PAGE_SIZE for i, gib in enumerate(gibs)}
    entries = [(lib.KVMH_PML4_GPA, lib.KVMH_PDPT_GPA | TABLE)]
    entries += [(lib.KVMH_PDPT_GPA + 8 * gib, pd | TABLE) for gib, pd in pd_of.items()]
    entries += [
        (pd_of[addr // SIZE_1G] + 8 * ((addr % SIZE_1G) // SIZE_2M), addr | LARGE_PAGE)
        for addr in large_pages
    ]
    return PageTables(tuple(entries), lib.KVMH_PD_GPA + lib.KVMH_PAGE_SIZE * len(gibs))
