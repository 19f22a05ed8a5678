"""What a tracker should see, from what the guest actually wrote.

The seed patch's formula: a writer making W uniformly random writes over a
region of S bytes dirties S * (1 - (1 - 4096/S)^W) bytes, so over t seconds
the expected rate is that over t (in MiB/s).  For any workload
(microvm/workload.py) the same argument gives, for n accesses each picking
page i with probability p_i and writing with probability q, an expected
sum_i 1 - (1 - q p_i)^n distinct pages written; vCPUs that share a region
multiply their chances of missing a page.  Pages of equal probability form
a class with a closed form (random: one class, hotcold: two); Zipf sums
over its pages.  We apply it to the accesses each vCPU really made in the
window and to the regions they really wrote.
"""

import math
from collections import defaultdict

import numpy as np

from ..microvm import workload
from ..microvm.guest import PAGE_SIZE
from ..microvm.replay import WriterStream
from .. import patterns

MiB = 1 << 20


def expected_unique_pages(writes, npages, pattern="random"):
    """Expected distinct pages hit by `writes` writes over `npages` pages."""
    if writes <= 0:
        return 0.0
    if pattern == "sequential":
        return float(min(writes, npages))
    # npages * (1 - (1 - 1/npages)^writes), computed without cancellation
    return -npages * math.expm1(writes * math.log1p(-1.0 / npages)) if npages > 1 else 1.0


def pages_to_mib_per_s(pages, seconds):
    return pages * PAGE_SIZE / MiB / seconds


def theoretical_rate(size_bytes, wps, seconds, pattern="random", seed=1):
    """The expected rate (MiB/s) of one vCPU accessing at a configured rate:
    the seed's formula for `random`, the pattern's theory otherwise (its
    hot set or ranks those of a VM with `seed`)."""
    npages = size_bytes // PAGE_SIZE
    if pattern == "random":
        return pages_to_mib_per_s(expected_unique_pages(wps * seconds, npages), seconds)
    stream = WriterStream(0, 0, npages, pattern, 0, workload.table_seed(seed, 0, npages))
    return pages_to_mib_per_s(expected_dirty_pages([(stream, wps * seconds)]), seconds)


def _classes(stream):
    """(pages per class, probability of one page of the class) of a
    stream's page distribution: classes of equal probability."""
    n = stream.npages
    kind = patterns.kind(stream.pattern)
    if kind == "hotcold" and n > 1:  # the class masses page_masses spreads: no table needed
        hot = patterns.hotcold_sizes(stream.pattern, n)[0]
        hot_mass, total = workload.hot_mass(stream.pattern, n), n * patterns.COLUMN
        return np.array([hot, n - hot]), np.array([hot_mass / hot / total, (total - hot_mass) / (n - hot) / total])
    if kind == "zipf":
        return np.ones(n), workload.page_probabilities(stream.pattern, n, stream.table_seed)
    return np.array([n]), np.array([1.0 / n])


def _sequential_pages(accesses, npages, q):
    """Expected distinct pages written by `accesses` sequential accesses,
    each a write with probability q: r pages are visited f + 1 times, the
    other npages - r f times (f, r = divmod(accesses, npages))."""
    f, r = divmod(int(accesses), npages)
    return npages - (npages - r) * (1 - q) ** f - r * (1 - q) ** (f + 1)


def expected_dirty_pages(parts):
    """Expected distinct pages written by `parts`, a list of (WriterStream,
    accesses) per vCPU."""
    regions = defaultdict(list)
    for stream, n in parts:
        if n > 0:
            regions[(stream.first_page, stream.npages)].append((stream, n))
    total = 0.0
    for (_, npages), group in regions.items():
        if len(group) == 1 and group[0][0].pattern == "sequential":
            stream, n = group[0]
            total += _sequential_pages(n, npages, float(stream.write_fraction))
            continue
        keys = {workload.table_key(s) if patterns.uses_table(s.pattern) else "uniform" for s, _ in group}
        if len(keys) == 1:  # one distribution: per class
            counts, probs = _classes(group[0][0])
            untouched = sum(n * np.log1p(-float(s.write_fraction) * probs) for s, n in group)
            total += float(np.sum(counts * -np.expm1(untouched)))
        else:  # different distributions over one region: page by page
            untouched = sum(n * np.log1p(-float(s.write_fraction)
                                         * workload.page_probabilities(s.pattern, npages, s.table_seed))
                            for s, n in group)
            total += float(np.sum(-np.expm1(untouched)))
    return total
