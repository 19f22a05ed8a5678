"""Ground truth, from replay of the guest's writes: the rules that our
tests, the pytest plugin's fixtures and `kvmharness selftest` all check a
host's dirty tracking and a migration against, written once.

* `replay_window(vm, edges)`: what an exact tracker must have counted in a
  window with those edges;
* `pacing_problem(edges, wps, seconds)`: whether the writer kept writing,
  never faster than asked;
* `written_since(vm, start, stop)`: the exact pages written between two
  sets of counters (the writer held at both: nothing is in flight), and
  `accessed_since`, the pages read or written;
* `tag_mismatches(vm)`: pages whose contents are not what replay says the
  guest left there (after a migration: what arrived is what was written).
"""

import numpy as np

from . import guest, replay
from .writer import CATCH_UP_SECONDS


def replay_window(vm, edges):
    """{"narrow" | "truth" | "wide": (total, per vCPU)} unique pages replayed
    between a window's edges (a DirtyRateResult's `edges`, or query-dirty-rate's
    x-edges).  Each edge records the counters (before, after) it; the guest
    dirties a page one instruction before it counts the write, so the cut lies
    in [before, after + 1] (kvmharness/dirtyrate/window.py): narrow replays
    from the latest start to the earliest end, wide the other way round, and
    truth between the middles.  An exact tracker lies in [narrow, wide]."""
    pairs = list(zip(edges["start"], edges["end"]))
    ranges = {
        "narrow": [(s[1] + 1, e[0]) for s, e in pairs],
        "truth": [((s[0] + s[1] + 1) // 2, (e[0] + e[1] + 1) // 2) for s, e in pairs],
        "wide": [(s[0], e[1] + 1) for s, e in pairs],
    }
    out = {}
    for name, rs in ranges.items():
        per = [replay.unique_pages(vm.logs[k], vm.slot_pages, lo, hi) for k, (lo, hi) in enumerate(rs)]
        # the union: vCPUs that share a region write some pages both
        total = replay.unique_pages([(vm.logs[k], lo, hi) for k, (lo, hi) in enumerate(rs)], vm.slot_pages)
        out[name] = (total, per)
    return out


def pacing_problem(edges, wps, seconds):
    """None if the writer kept writing and never wrote faster than asked
    (guest/writer.S, "Rate"): of the writes a window's edges prove inside
    it, at most wps * (window + catch-up) + 1 per vCPU, and some.  Else what
    went wrong.  `wps` one rate or one per vCPU."""
    pairs = list(zip(edges["start"], edges["end"]))
    rates = wps if isinstance(wps, (list, tuple)) else [wps] * len(pairs)
    for k, (((_, start_after), (end_before, _)), rate) in enumerate(zip(pairs, rates)):
        inside = end_before - start_after - 1  # the cut lies in [before, after + 1]
        if not 0 < inside <= rate * (seconds + CATCH_UP_SECONDS) + 1:
            return f"vCPU {k} wrote {inside} times in {seconds:.3f} s at {rate} writes/s"
    return None


def written_since(vm, start, stop):
    """Bool per data-slot page: written by accesses start[k] .. stop[k] - 1 of each vCPU k."""
    ranges = [(vm.logs[k], lo, hi) for k, (lo, hi) in enumerate(zip(start, stop))]
    return replay.last_tags(ranges, vm.slot_pages) != 0


def accessed_since(vm, start, stop):
    """Bool per data-slot page: read or written by accesses start[k] .. stop[k] - 1 of each vCPU k."""
    ranges = [(vm.logs[k], lo, hi) for k, (lo, hi) in enumerate(zip(start, stop))]
    return replay.written_bitmap(ranges, vm.slot_pages, reads=True)


def tag_mismatches(vm):
    """(written pages, unwritten pages) whose tag differs from replay's, the
    writer held: a written page holds the tag of the last write to it, an
    unwritten one the warm-up's tag.  (0, 0): the RAM is what was written."""
    counters = vm.counters()
    want = replay.last_tags([(vm.logs[k], 0, c) for k, c in enumerate(counters)], vm.slot_pages)
    tags = vm.page_tags()
    written = want != 0
    return (int(np.count_nonzero(tags[written] != want[written])),
            int(np.count_nonzero(tags[~written] != guest.WARM_TAG)))
