"""What a tracker should see, from what the guest actually wrote.

The seed patch's formula: a writer making W uniformly random writes over a
region of S bytes dirties S * (1 - (1 - 4096/S)^W) bytes, so over t seconds
the expected rate is that over t (in MiB/s).  We apply it per vCPU, to the
writes each vCPU really made in the window and to its own region.
"""

import math

from ..microvm.guest import PAGE_SIZE

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


def theoretical_rate(size_bytes, wps, seconds):
    """The seed's formula at a configured rate (MiB/s)."""
    pages = expected_unique_pages(wps * seconds, size_bytes // PAGE_SIZE)
    return pages_to_mib_per_s(pages, seconds)
