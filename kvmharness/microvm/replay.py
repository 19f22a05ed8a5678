"""Replay: which pages the guest writer wrote, computed on the host.

The writer is counter-based (guest/writer.S): the page of access number i,
and whether it writes or reads, are pure functions of (seed, region,
pattern, i), so any counter range is replayed with one vectorized
expression, without running or trusting the guest.  This is the ground
truth every measurement is tested against.
"""

from dataclasses import dataclass

import numpy as np

from .._native import lib
from . import workload
from .rng import mix, mulhi, splitmix64, states
from .. import patterns

_CHUNK = 1 << 20  # accesses per replay step: temporaries stay cache-sized
_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)


@dataclass(frozen=True)
class WriterStream:
    """What one vCPU accesses while its parameters stay the same.

    `first_page` is where its region starts in the data slot, so pages()
    returns data-slot page numbers.  `pattern` is a canonical name
    (patterns.parse_pattern); `read_threshold` the guest's READ_THRESHOLD
    (0: every access writes); `table_seed` fixes a table pattern's hot set
    or ranks.
    """

    seed: int
    first_page: int
    npages: int
    pattern: str = "random"
    read_threshold: int = 0
    table_seed: int = 0

    def __post_init__(self):
        if patterns.parse_pattern(self.pattern) != self.pattern:
            raise ValueError(f"pattern {self.pattern!r} is not in canonical form")
        if not 1 <= self.npages < 1 << 32:
            raise ValueError("npages must be in [1, 2^32)")
        if not 0 <= self.read_threshold <= patterns.ALL_READS:
            raise ValueError("read_threshold must be in [0, 2^32]")

    @property
    def write_fraction(self):
        return patterns.write_fraction(self.read_threshold)

    def pages(self, start, stop):
        """Data-slot page numbers of accesses start .. stop-1, as uint64."""
        index = np.arange(start, stop, dtype=_U64)
        if self.pattern == "sequential":
            local = index % _U64(self.npages)
        elif patterns.uses_table(self.pattern):
            table = workload.alias_table(self.pattern, self.npages, self.table_seed)
            local = workload.alias_draw(table, splitmix64(index, self.seed))
        else:
            local = mulhi(splitmix64(index, self.seed), self.npages)
        return local + _U64(self.first_page)

    def writes(self, start, stop):
        """Which of accesses start .. stop-1 are writes (bool array)."""
        if self.read_threshold == 0:
            return np.ones(stop - start, dtype=bool)
        z = states(np.arange(start, stop, dtype=_U64), self.seed)
        z ^= _U64(lib.KVMH_WRITE_SALT)
        return np.bitwise_and(mix(z), _LOW32) >= _U64(self.read_threshold)

    def chunks(self, start, stop, reads=False):
        """(tags, pages) of the writes among accesses start .. stop-1 (with
        `reads`, of every access), in chunks that bound memory use: a
        write's tag is its access number + 1, what it stores in its page."""
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            pages, tags = self.pages(lo, hi), np.arange(lo + 1, hi + 1, dtype=_U64)
            if self.read_threshold and not reads:
                written = self.writes(lo, hi)
                pages, tags = pages[written], tags[written]
            yield tags, pages


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

    def chunks(self, start, stop, reads=False):
        bounds = [c for c, _ in self.segments[1:]] + [None]
        for (begin, stream), end in zip(self.segments, bounds):
            lo = max(start, begin)
            hi = stop if end is None else min(stop, end)
            if lo < hi:
                yield from stream.chunks(lo, hi, reads)


def _chunks(writers, start, stop, reads=False):
    """Accept one WriterStream/WriterLog with a range, or a list of
    (writer, start, stop) triples (one per vCPU)."""
    if start is None:
        for writer, lo, hi in writers:
            yield from writer.chunks(lo, hi, reads)
    else:
        yield from writers.chunks(start, stop, reads)


def written_bitmap(writers, slot_pages, start=None, stop=None, reads=False):
    """Boolean array over the data slot: True where some write in range
    landed (with `reads`, where any access did)."""
    bitmap = np.zeros(slot_pages, dtype=bool)
    for _, pages in _chunks(writers, start, stop, reads):
        bitmap[pages] = True
    return bitmap


def unique_pages(writers, slot_pages, start=None, stop=None):
    """How many distinct pages the writes in range touched."""
    return int(np.count_nonzero(written_bitmap(writers, slot_pages, start, stop)))


def last_tags(writers, slot_pages, start=None, stop=None):
    """The tag each page should hold after the range: the number (i + 1) of
    the last write i that hit it, 0 where none did."""
    out = np.zeros(slot_pages, dtype=_U64)
    for tags, pages in _chunks(writers, start, stop):
        np.maximum.at(out, pages, tags)
    return out
