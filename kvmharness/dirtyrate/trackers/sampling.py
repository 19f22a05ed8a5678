"""page-sampling mode: hash sampled pages, wait, hash them again, as QEMU's
default mode (XXH64 with seed 1, as QEMU 8.1+; native/page_hash.c).

Differences from QEMU: any slot is sampled, also one under 128 MiB (QEMU
reports -1 for a VM whose RAM blocks are all smaller); the number of samples
is sample-pages per GiB of the slot, pro rata (at least one); and the result
carries a 95 % confidence interval (continuity-corrected Wilson score
interval for the fraction of sampled pages that changed).
"""

import math

import numpy as np

from ...microvm.guest import PAGE_SIZE
from ...microvm.page_hash import ZERO_PAGE_HASH, hash_pages
from .count import Count
from ..window import Overhead, cut

GiB = 1 << 30
Z95 = 1.959963984540054


def wilson_interval(successes, trials, z=Z95):
    """Wilson score interval with continuity correction for a binomial
    proportion (Newcombe, Statistics in Medicine 1998, method 4).  The
    correction makes it conservative: it covers the true proportion at least
    as often as the nominal level, which a measurement's interval should."""
    if trials == 0:
        return 0.0, 1.0
    n, p, z2 = trials, successes / trials, z * z
    denom = 2 * (n + z2)
    low = 0.0 if successes == 0 else max(
        0.0, (2 * n * p + z2 - 1 - z * math.sqrt(z2 - 2 - 1 / n + 4 * p * (n * (1 - p) + 1))) / denom)
    high = 1.0 if successes == trials else min(
        1.0, (2 * n * p + z2 + 1 + z * math.sqrt(z2 + 2 - 1 / n + 4 * p * (n * (1 - p) - 1))) / denom)
    return low, high


def sample_count(sample_pages, slot_bytes):
    return max(1, round(sample_pages * slot_bytes / GiB))


def draw_samples(sample_pages, slot_bytes, rng=None):
    """The pages to sample: sample_pages per GiB (pro rata, at least one),
    uniformly with replacement."""
    rng = rng if rng is not None else np.random.default_rng()
    return rng.integers(0, slot_bytes // PAGE_SIZE, sample_count(sample_pages, slot_bytes), dtype=np.uint64)


class PageSamplingTracker:
    mode = "page-sampling"

    def __init__(self, vm, sample_pages=512, rng=None):
        self.vm = vm
        self.sample_pages = sample_pages
        self.pages = draw_samples(sample_pages, vm.config.mem, rng)
        self.before = np.zeros(len(self.pages), dtype=np.uint64)
        self.after = np.zeros(len(self.pages), dtype=np.uint64)
        self.overhead = Overhead()

    def _hash_into(self, out):
        hash_pages(self.vm.data.addr, self.pages, out)

    def begin(self):
        edge = cut(self.vm, lambda: self._hash_into(self.before))
        self.overhead.add_edge("hash", edge)
        return edge

    def poll(self):
        pass

    def mark(self):
        """The same samples hashed again, the window going on; (edge, the
        estimate since the start)."""
        edge = cut(self.vm, lambda: self._hash_into(self.after))
        self.overhead.add_edge("hash", edge)
        return edge, self.count()

    def end(self):
        edge = cut(self.vm, lambda: self._hash_into(self.after))
        self.overhead.add_edge("hash", edge)
        return edge

    def zero_pages(self):
        """Estimated zero pages at the end: samples whose hash is a zero page's."""
        return np.count_nonzero(self.after == ZERO_PAGE_HASH) / len(self.pages) * self.vm.slot_pages

    def count(self):
        n = len(self.pages)
        changed = int(np.count_nonzero(self.before != self.after))
        lo, hi = wilson_interval(changed, n)
        slot = self.vm.slot_pages
        return Count(
            dirty_pages=changed / n * slot,
            samples=n,
            dirty_samples=changed,
            confidence_pages=(lo * slot, hi * slot),
        )

    def close(self):
        pass
