"""dirty-ring mode: KVM_CAP_DIRTY_LOG_RING, harvested in C with acquire /
release ordering (native/dirty_ring.c), as QEMU's dirty-ring mode.

Differences from QEMU: entries are de-duplicated into per-vCPU bitmaps, so we
report unique pages (QEMU counts entries, and a page re-dirtied after a reset
counts twice) and the entries as x-dirty-events; a reaper harvests during
the window so the ring never stays full; before the final harvest every vCPU
is kicked out of the guest, which flushes Intel's PML buffer.  Both edges
(harvest + reset at the start, the final harvest at the end) run with every
vCPU held outside the guest for their duration (well under a millisecond),
so they are exact; a paced writer catches up at most 0.25 ms of its
schedule afterwards (microvm/writer.py).
"""

from ...microvm.dirty_ring import RingSink
from ...microvm.page_hash import count_zero_pages
from .count import Count
from .. import log_stop as log_stops
from ..window import Overhead, stopped_cut

SETTLE_ROUNDS = 4
SETTLED_ENTRIES = 256


class DirtyRingTracker:
    mode = "dirty-ring"

    def __init__(self, vm, log_stop=log_stops.QEMU):
        self.vm = vm
        self.log_stop = log_stop  # dirtyrate/log_stop.py: clear-flag or recreate-slot
        self.rings = vm.ring
        self.sink = RingSink(len(vm.vcpus), vm.slot_pages)
        self.overhead = Overhead()

    def begin(self):
        with self.overhead.timed("enable-logging"):
            self.vm.set_dirty_logging(True, self)
        with self.overhead.timed("settle"):
            for _ in range(SETTLE_ROUNDS):
                if self.rings.harvest() <= SETTLED_ENTRIES:
                    break

        def start():
            self.rings.harvest()  # pages dirtied so far: discarded, and re-protected by the reset
            self.rings.swap_sink(self.sink)

        edge = stopped_cut(self.vm, start, opening=True)
        self.overhead.add_edge("start-harvest", edge)
        return edge

    def poll(self):
        if self.rings.reaper_paused:  # the dirty limit wants the rings to fill (convergence/dirty_limit.py)
            return
        with self.overhead.timed("harvest"):
            self.rings.harvest()

    def mark(self):
        """A harvest with the vCPUs out that does not end the window; (edge,
        unique pages and entries since the start)."""
        edge = stopped_cut(self.vm, self.rings.harvest, opening=False)
        self.overhead.add_edge("mark-harvest", edge)
        return edge, Count(dirty_pages=self.sink.unique_pages(), dirty_events=sum(self.sink.events))

    def _final_harvest(self):
        self.rings.harvest()
        self.rings.swap_sink(None)

    def end(self):
        # vCPUs out of the guest: nothing in flight, Intel's PML buffers flushed
        edge = stopped_cut(self.vm, self._final_harvest, opening=False)
        self.overhead.add_edge("end-harvest", edge)
        return edge

    def zero_pages(self):
        """All-zero pages of the slot, counted once the window is over."""
        return count_zero_pages(self.vm.data.addr, self.vm.slot_pages)

    def count(self):
        with self.overhead.timed("count"):
            vcpu_pages = tuple(int(self.sink.unique[k]) for k in range(len(self.sink.events)))
            pages = self.sink.unique_pages()
        return Count(
            dirty_pages=pages,
            dirty_events=sum(self.sink.events),
            vcpu_pages=vcpu_pages,
            vcpu_events=tuple(self.sink.events),
        )

    def close(self):
        self.rings.swap_sink(None)
        with self.overhead.timed("disable-logging"):
            self.vm.set_dirty_logging(False, self, recreate=self.log_stop == log_stops.RECREATE_SLOT)
            self.rings.harvest()  # whatever came in after the window
