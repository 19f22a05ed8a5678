"""XXH64 (seed 1) of guest pages, in C (native/page_hash.c): what
page-sampling compares across a window and what migration compares across
hosts."""

import numpy as np

from .._native import ffi, lib
from .guest import PAGE_SIZE


def hash_pages(base_addr, pages, out=None):
    """Hashes of pages `pages` (uint64 page numbers) of the memory at `base_addr`."""
    pages = np.ascontiguousarray(pages, dtype=np.uint64)
    if out is None:
        out = np.empty(len(pages), dtype=np.uint64)
    lib.kvmh_hash_pages(ffi.cast("const unsigned char *", base_addr),
                        ffi.cast("const uint64_t *", pages.ctypes.data), len(pages), PAGE_SIZE,
                        ffi.cast("uint64_t *", out.ctypes.data))
    return out
