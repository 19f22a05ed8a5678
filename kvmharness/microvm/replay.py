"""Replay: which pages the guest writer wrote, computed on the host.

The writer is counter-based (guest/writer.S): the page of write number i is a
pure function of (seed, npages, i), so any counter range is replayed with one
vectorized expression, without running or trusting the guest.  This is the
ground truth every measurement is tested against.
"""

from dataclasses import dataclass

import numpy as np

from .guest import GOLDEN, MIX1, MIX2, PATTERNS

_CHUNK = 1 << 20  # writes per replay step: temporaries stay cache-sized
_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)


def splitmix64(index, seed):
    """SplitMix64 output for state seed + (index + 1) * GOLDEN, elementwise.

    Consumes `index` (a uint64 array): computed in place, since replay speed
    is bounded by memory traffic, not arithmetic.
    """
    z, tmp = index, np.empty_like(index)
    z += _U64(1)
    z *= _U64(GOLDEN)
    z += _U64(seed)
    for shift, mix in ((30, MIX1), (27, MIX2)):
        np.right_shift(z, _U64(shift), out=tmp)
        z ^= tmp
        z *= _U64(mix)
    np.right_shift(z, _U64(31), out=tmp)
    z ^= tmp
    return z


def mulhi(z, n):
    """floor(z * n / 2^64) for uint64 z and n < 2^32: the writer's `mul`.
    Exact: z * n = hi(z) * n * 2^32 + lo(z) * n, and neither product
    overflows 64 bits when n < 2^32.  Consumes `z`."""
    n = _U64(n)
    low = np.bitwise_and(z, _LOW32)
    low *= n
    low >>= _U64(32)
    z >>= _U64(32)
    z *= n
    z += low
    z >>= _U64(32)
    return z


@dataclass(frozen=True)
class WriterStream:
    """What one vCPU writes while its parameters stay the same.

    `first_page` is where its region starts in the data slot, so pages()
    returns data-slot page numbers.
    """

    seed: int
    first_page: int
    npages: int
    pattern: str = "random"

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}")
        if not 1 <= self.npages < 1 << 32:
            raise ValueError("npages must be in [1, 2^32)")

    def pages(self, start, stop):
        """Data-slot page numbers of writes start .. stop-1, as uint64."""
        index = np.arange(start, stop, dtype=_U64)
        if self.pattern == "sequential":
            local = index % _U64(self.npages)
        else:
            local = mulhi(splitmix64(index, self.seed), self.npages)
        return local + _U64(self.first_page)

    def chunks(self, start, stop):
        """(first write number, pages) in chunks that bound memory use."""
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            yield lo, self.pages(lo, hi)


@dataclass(frozen=True)
class WriterLog:
    """A vCPU's streams over time: (counter at which it took effect, stream).

    The guest reports the exact counter at which it took up new parameters
    (KVMH_CTL_SEEN_COUNTER), so a run with rate or pattern changes replays
    exactly.
    """

    segments: tuple

    @property
    def current(self):
        """The stream in effect after the last segment's counter."""
        return self.segments[-1][1]

    def then(self, counter, stream):
        if self.segments and counter < self.segments[-1][0]:
            raise ValueError("segments must be appended in counter order")
        return WriterLog(self.segments + ((counter, stream),))

    def chunks(self, start, stop):
        bounds = [c for c, _ in self.segments[1:]] + [None]
        for (begin, stream), end in zip(self.segments, bounds):
            lo = max(start, begin)
            hi = stop if end is None else min(stop, end)
            if lo < hi:
                yield from stream.chunks(lo, hi)


def _chunks(writers, start, stop):
    """Accept one WriterStream/WriterLog with a range, or a list of
    (writer, start, stop) triples (one per vCPU)."""
    if start is None:
        for writer, lo, hi in writers:
            yield from writer.chunks(lo, hi)
    else:
        yield from writers.chunks(start, stop)


def written_bitmap(writers, slot_pages, start=None, stop=None):
    """Boolean array over the data slot: True where some write in range landed."""
    bitmap = np.zeros(slot_pages, dtype=bool)
    for _, pages in _chunks(writers, start, stop):
        bitmap[pages] = True
    return bitmap


def unique_pages(writers, slot_pages, start=None, stop=None):
    """How many distinct pages the writes in range touched."""
    return int(np.count_nonzero(written_bitmap(writers, slot_pages, start, stop)))


def last_tags(writers, slot_pages, start=None, stop=None):
    """The tag each page should hold after the range: the number (i + 1) of
    the last write i that hit it, 0 where none did."""
    tags = np.zeros(slot_pages, dtype=_U64)
    for lo, pages in _chunks(writers, start, stop):
        np.maximum.at(tags, pages, np.arange(lo + 1, lo + 1 + len(pages), dtype=_U64))
    return tags
