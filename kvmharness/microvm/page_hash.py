"""XXH64 (seed 1) of guest pages, in C (native/page_hash.c): what
page-sampling compares across a window and what migration compares across
hosts; and which pages are all zeros (native/zero_page.c)."""

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


ZERO_PAGE_HASH = int(lib.kvmh_xxh64(ffi.new("unsigned char[]", PAGE_SIZE), PAGE_SIZE, 1))


def zero_page_mask(base_addr, pages):
    """Boolean array: which of pages `pages` hold only zeros."""
    pages = np.ascontiguousarray(pages, dtype=np.uint64)
    out = np.empty(len(pages), dtype=np.uint8)
    lib.kvmh_zero_pages(ffi.cast("const unsigned char *", base_addr), ffi.cast("const uint64_t *", pages.ctypes.data),
                        len(pages), PAGE_SIZE, ffi.cast("uint8_t *", out.ctypes.data))
    return out.view(bool)


def count_zero_pages(base_addr, npages):
    """How many of the `npages` pages at `base_addr` hold only zeros."""
    return int(lib.kvmh_count_zero_pages(ffi.cast("const unsigned char *", base_addr), npages, PAGE_SIZE))


def gather_pages(base_addr, pages, out, hashes):
    """Copy pages `pages` of the memory at `base_addr` into the [n, 4096]
    uint8 array `out`, and their hashes into `hashes` (uint64, n)."""
    pages = np.ascontiguousarray(pages, dtype=np.uint64)
    lib.kvmh_gather_pages(ffi.cast("const unsigned char *", base_addr), ffi.cast("const uint64_t *", pages.ctypes.data),
                          len(pages), PAGE_SIZE, ffi.cast("unsigned char *", out.ctypes.data),
                          ffi.cast("uint64_t *", hashes.ctypes.data))


def scatter_pages(data, pages, base_addr, hashes):
    """Copy the [n, 4096] uint8 array `data` into pages `pages` of the
    memory at `base_addr`, hashing each page into `hashes` (uint64, n).
    The caller has checked every index against the memory's size."""
    pages = np.ascontiguousarray(pages, dtype=np.uint64)
    lib.kvmh_scatter_pages(ffi.cast("const unsigned char *", data.ctypes.data),
                           ffi.cast("const uint64_t *", pages.ctypes.data), len(pages), PAGE_SIZE,
                           ffi.cast("unsigned char *", base_addr), ffi.cast("uint64_t *", hashes.ctypes.data))
