"""Workload shapes of the guest writer (issue 12): which pages it picks, how
many of its accesses are writes, and whether it writes in bursts.

Patterns (all pure functions of the seed and the access index, so replay
stays exact; guest/writer.S has the arithmetic):

    random          every page of the region equally likely
    sequential      page i mod npages
    hotcold:H:P     a hot set of round(H x npages) pages, scattered through
                    the region, takes a fraction P of the accesses, spread
                    evenly; the rest go evenly to the other (cold) pages.
                    The two-class model of writable working sets (Clark et
                    al., NSDI 2005): hot and cold are disjoint, so each
                    class has its own closed form.
    zipf:S          the page of popularity rank r (from 0) is picked with
                    probability proportional to 1 / (r + 1)^S, ranks spread
                    over the region by a fixed permutation (YCSB's keys)

How the guest draws them is microvm/workload.py's.  This module is pure
(no numpy, no KVM) so that the command line can check its arguments
without loading either.

Write percentage W: each access is a write with probability W / 100
(quantized to 2^-32), otherwise a read of the page it picked; the guest
counts both.  Bursts ON/OFF: the writer accesses for ON, idles for OFF, and
so on; they change when it writes, never which pages, so replay ignores
them.
"""

import re
from dataclasses import dataclass
from fractions import Fraction

from . import units
from .errors import UsageError

COLUMN = 1 << 32  # probability mass of one alias table column
ALL_READS = COLUMN  # read threshold: every access a read
MAX_ZIPF_EXPONENT = 10
TABLE_PATTERNS = ("hotcold", "zipf")
PATTERN_HELP = "random, sequential, hotcold:H:P (e.g. hotcold:0.1:0.9) or zipf:S (e.g. zipf:1.0)"
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def _fraction(text, what, low, high, low_open=True, high_open=True):
    value = Fraction(text)
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise UsageError(f"{what} must lie in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    return value


def parse_pattern(text):
    """A pattern's canonical name, or a one-line UsageError."""
    if text in ("random", "sequential"):
        return text
    if not isinstance(text, str) or not text.isascii():
        raise UsageError(f"invalid pattern: use {PATTERN_HELP}")
    m = re.fullmatch(rf"hotcold:{_NUMBER}:{_NUMBER}", text)
    if m:
        hot = _fraction(m[1], "the hot set fraction H of hotcold:H:P", 0, 1)
        share = _fraction(m[2], "the hot access fraction P of hotcold:H:P", 0, 1, False, False)
        return f"hotcold:{_decimal(hot)}:{_decimal(share)}"
    m = re.fullmatch(rf"zipf:{_NUMBER}", text)
    if m:
        exponent = _fraction(m[1], "the Zipf exponent S of zipf:S", 0, MAX_ZIPF_EXPONENT, True, False)
        return f"zipf:{_decimal(exponent)}"
    raise UsageError(f"invalid pattern '{text[:40]}': use {PATTERN_HELP}")


def _decimal(value):
    """A Fraction parsed from a decimal, printed back without float noise."""
    return format(float(value), ".12g")


def kind(pattern):
    """'hotcold:0.1:0.9' -> 'hotcold': a canonical name's pattern, without its parameters."""
    return pattern.split(":")[0]


def uses_table(pattern):
    return kind(pattern) in TABLE_PATTERNS


# ---- write percentage --------------------------------------------------------
def parse_write_percent(text):
    """0..100 (decimals allowed) -> Fraction, or a one-line UsageError."""
    if not isinstance(text, str) or not text.isascii() or not re.fullmatch(_NUMBER, text.strip()):
        raise UsageError(f"invalid write percentage '{str(text)[:40]}': a number from 0 to 100")
    return _fraction(text.strip(), "the write percentage", 0, 100, False, False)


def read_threshold(write_percent):
    """The guest's READ_THRESHOLD for a write percentage: an access is a read
    when its 32-bit draw is below it (0: all writes)."""
    return round((1 - Fraction(write_percent) / 100) * COLUMN)


def write_fraction(threshold):
    """Probability that an access is a write, exactly."""
    return Fraction(COLUMN - threshold, COLUMN)


# ---- bursts ----------------------------------------------------------------
@dataclass(frozen=True)
class Burst:
    on: float  # seconds of each writing phase
    off: float  # seconds of each idle phase

    @property
    def duty(self):
        return self.on / (self.on + self.off) if self else 1.0

    def __bool__(self):
        return self.on > 0

    def __str__(self):
        return f"{self.on * 1e3:g}ms/{self.off * 1e3:g}ms" if self else "none"


NO_BURST = Burst(0.0, 0.0)


def parse_burst(text):
    """'ON/OFF', e.g. '200ms/800ms', or 'none' (NO_BURST)."""
    if text in ("none", "off"):
        return NO_BURST
    on, sep, off = str(text).partition("/")
    if not sep:
        raise UsageError(f"invalid burst '{str(text)[:40]}': use ON/OFF, e.g. 200ms/800ms, or none")
    burst = Burst(units.parse_duration(on), units.parse_duration(off))
    if burst.on < 1e-3 or burst.off < 1e-3:
        raise UsageError("each burst phase must last at least 1ms")
    return burst


def hotcold_sizes(pattern, npages):
    _, h, p = pattern.split(":")
    hot = min(max(round(Fraction(h) * npages), 1), npages - 1)
    return hot, Fraction(p)
