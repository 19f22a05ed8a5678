"""The writer's page distributions as the guest draws them: alias tables
for the hotcold and zipf patterns (kvmharness/patterns.py says what each
pattern means), each page's exact probability, and the regions the vCPUs
write.

hotcold and zipf are drawn through an alias table (native/alias.c) built
from integer page masses that sum to exactly npages x 2^32, so each page's
probability is known exactly, for replay and for the theory.  The hot set
and the ranks depend on the table seed (the VM's seed and the region), not
on the vCPU: vCPUs sharing a region share its hot set.
"""

import functools

import numpy as np

from .._native import ffi, lib
from ..patterns import COLUMN, hotcold_sizes, kind, uses_table
from .rng import mulhi, splitmix64


def guest_pattern(pattern):
    """The guest's KVMH_PATTERN_* for a canonical pattern name."""
    if uses_table(pattern):
        return lib.KVMH_PATTERN_TABLE
    return {"random": lib.KVMH_PATTERN_RANDOM, "sequential": lib.KVMH_PATTERN_SEQUENTIAL}[kind(pattern)]


# ---- page distributions ------------------------------------------------------
def ranked_pages(npages, table_seed):
    """A fixed permutation of the region's pages: rank r -> page."""
    keys = splitmix64(np.arange(npages, dtype=np.uint64), table_seed)
    return np.argsort(keys, kind="stable").astype(np.uint64)


def _spread(total, count):
    """`count` integer masses summing to `total`, as even as can be."""
    base, extra = divmod(total, count)
    out = np.full(count, base, dtype=np.uint64)
    out[:extra] += np.uint64(1)
    return out


def hot_mass(pattern, npages):
    """The integer mass a hotcold pattern gives its hot set, of npages x 2^32."""
    return round(hotcold_sizes(pattern, npages)[1] * npages * COLUMN)


@functools.lru_cache(maxsize=8)
def page_masses(pattern, npages, table_seed):
    """Integer probability mass of every page of a table pattern's region,
    summing to exactly npages x 2^32 (read-only array)."""
    total = npages * COLUMN
    ranked = ranked_pages(npages, table_seed)
    mass = np.zeros(npages, dtype=np.uint64)
    if npages == 1:
        mass[:] = total
    elif kind(pattern) == "hotcold":
        hot, hot_total = hotcold_sizes(pattern, npages)[0], hot_mass(pattern, npages)
        mass[ranked[:hot]] = _spread(hot_total, hot)
        mass[ranked[hot:]] = _spread(total - hot_total, npages - hot)
    elif kind(pattern) == "zipf":
        exponent = float(pattern.split(":")[1])
        weights = np.arange(1, npages + 1, dtype=np.float64) ** -exponent
        by_rank = np.floor(weights * (total / weights.sum())).astype(np.uint64)
        short = total - int(by_rank.sum(dtype=np.uint64))  # floors lose < 1 each: 0 <= short < npages + rounding
        if short >= 0:
            by_rank[:short] += np.uint64(1)
        else:
            by_rank[: -short] -= np.uint64(1)
        mass[ranked] = by_rank
    else:
        raise ValueError(f"{pattern} has no table")
    mass.setflags(write=False)
    return mass


@functools.lru_cache(maxsize=8)
def alias_table(pattern, npages, table_seed):
    """The guest's alias table for a table pattern (read-only uint64 array)."""
    mass = np.ascontiguousarray(page_masses(pattern, npages, table_seed))
    table = np.empty(npages, dtype=np.uint64)
    rc = lib.kvmh_alias_build(ffi.cast("const uint64_t *", mass.ctypes.data), npages,
                              ffi.cast("uint64_t *", table.ctypes.data))
    if rc:
        raise MemoryError("no memory for the alias table")
    table.setflags(write=False)
    return table


def alias_draw(table, z):
    """The table pattern's page for PRNG outputs z (uint64), as the guest
    draws it: column from the high part, threshold test on the low 32 bits.
    Consumes nothing."""
    column = mulhi(z.copy(), len(table))
    entry = table[column]
    low = np.bitwise_and(z, np.uint64(COLUMN - 1))
    keep = low < np.bitwise_and(entry, np.uint64(COLUMN - 1))
    return np.where(keep, column, entry >> np.uint64(lib.KVMH_ALIAS_SHIFT))


def page_probabilities(pattern, npages, table_seed):
    """Each page's probability of being picked by one access (float64)."""
    if pattern in ("random", "sequential"):
        return np.full(npages, 1.0 / npages)
    return page_masses(pattern, npages, table_seed).astype(np.float64) / (npages * COLUMN)


def table_seed(vm_seed, first_page, npages):
    """Fixes a region's hot set or ranks: the VM's seed and the region, not
    the vCPU, so vCPUs sharing a region share them."""
    return int(splitmix64(np.array([first_page], dtype=np.uint64), vm_seed ^ npages)[0])


def table_key(stream):
    """What a stream's alias table depends on."""
    return stream.pattern, stream.npages, stream.table_seed


def vcpu_region(slot_pages, vcpus, vcpu):
    """(first page, pages) of vCPU `vcpu`'s slice of the data slot."""
    first = slot_pages * vcpu // vcpus
    return first, slot_pages * (vcpu + 1) // vcpus - first
