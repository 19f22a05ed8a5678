"""Window edges and overhead accounting, shared by every tracker.

An edge is the moment a tracker starts or stops counting (a CLEAR, a ring
reset, a hashing pass).  It is not instantaneous, and the guest may keep
writing meanwhile, so each edge records the guest's write counters just
before and just after it.  The guest dirties a page one instruction before it
publishes the write in its counter, so one more write may be in flight: the
true cut of vCPU k lies in [before[k], after[k] + 1], and replaying the ends
of that bracket bounds what an exact tracker must report.
"""

import contextlib
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Edge:
    before: tuple  # per-vCPU write counters just before the cut
    after: tuple  # ... and just after it
    time: float  # perf_counter() when the cut took effect (see cut, stopped_cut)
    seconds: float  # how long the cut took
    lead: float  # seconds from calling the cut to `time`: lets the engine aim

    @property
    def earliest(self):
        """Per vCPU, the first write that may fall after the cut."""
        return self.before

    @property
    def latest(self):
        """Per vCPU, the first write that certainly falls after the cut."""
        return tuple(a + 1 for a in self.after)

    @property
    def mid(self):
        return tuple((a + b) // 2 for a, b in zip(self.earliest, self.latest))


def cut(vm, action):
    """Run `action` (the tracker's cut) between two readings of the counters."""
    before = tuple(vm.counters())
    t0 = time.perf_counter()
    action()
    t1 = time.perf_counter()
    after = tuple(vm.counters())
    return Edge(before, after, (t0 + t1) / 2, t1 - t0, (t1 - t0) / 2)


def stopped_cut(vm, action, opening):
    """Run `action` with every vCPU out of the guest: the counters cannot
    move, so the edge is exact but for the one write that may be in flight.
    The guest cannot dirty anything while it is stopped, so an opening edge
    takes effect when the vCPUs are let go, a closing one when the last vCPU
    has stopped."""
    t0 = time.perf_counter()
    with vm.vcpus_stopped():
        stopped = time.perf_counter()
        counters = tuple(vm.counters())
        action()
        released = time.perf_counter()
    t1 = time.perf_counter()
    return Edge(counters, counters, released if opening else stopped, t1 - t0, stopped - t0)


class Overhead:
    """Milliseconds spent per kind of tracking work (x-overhead)."""

    def __init__(self):
        self.ms = {}

    @contextlib.contextmanager
    def timed(self, what):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[what] = self.ms.get(what, 0.0) + (time.perf_counter() - t0) * 1e3

    def add_edge(self, what, edge):
        self.ms[what] = self.ms.get(what, 0.0) + edge.seconds * 1e3

    def snapshot(self):
        out = {k: round(v, 3) for k, v in self.ms.items()}
        out["total"] = round(sum(self.ms.values()), 3)
        return out
