"""dirty-bitmap mode: KVM_GET_DIRTY_LOG, with KVM_CLEAR_DIRTY_LOG where the
host has KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, as QEMU's dirty-bitmap mode.

Difference from QEMU: before the window we sync and re-protect until few
pages are left to re-protect, so the CLEAR that starts the window is short
and the start edge narrow (QEMU syncs once).  With manual protection the end
edge is a GET, which only copies the bitmap, so it is narrow too.
"""

import numpy as np

from ...microvm.page_hash import count_zero_pages
from .count import Count
from .. import log_stop as log_stops
from ..window import Overhead, cut

SETTLE_ROUNDS = 4
SETTLED_PAGES = 256  # re-protecting this few pages takes microseconds


class DirtyBitmapTracker:
    mode = "dirty-bitmap"

    def __init__(self, vm, log_stop=log_stops.QEMU):
        self.vm = vm
        self.log_stop = log_stop  # dirtyrate/log_stop.py: clear-flag or recreate-slot
        self.npages = vm.slot_pages
        # KVM writes ALIGN(npages, 64) / 8 bytes
        self.bitmap = np.zeros(-(-self.npages // 64), dtype=np.uint64)
        self.manual = bool(vm.manual_protect)
        self.overhead = Overhead()
        self.seen = None  # bits fetched by marks: a plain GET clears what it returns

    def _get(self):
        self.vm.get_dirty_log(self.bitmap.ctypes.data)

    def sync(self):
        """One sync: fetch the bitmap and re-protect what it reports (with
        manual protection; a plain GET re-protects by itself)."""
        self._get()
        if self.manual and self.bitmap.any():
            self.vm.clear_dirty_log(self.bitmap.ctypes.data)

    def dirty_pages(self):
        """Page numbers set in the last bitmap fetched, ascending."""
        bits = np.unpackbits(self.bitmap.view(np.uint8), bitorder="little")[: self.npages]
        return np.flatnonzero(bits).astype(np.uint64)

    def enable(self):
        with self.overhead.timed("enable-logging"):
            self.vm.set_dirty_logging(True, self)

    def begin(self):
        self.enable()
        with self.overhead.timed("settle"):
            for _ in range(SETTLE_ROUNDS):
                self.sync()
                if self._popcount() <= SETTLED_PAGES:
                    break
        edge = cut(self.vm, self.sync)
        self.overhead.add_edge("start-sync", edge)
        return edge

    def poll(self):
        pass

    def mark(self):
        """A GET that does not end the window; (edge, count since the start)."""
        edge = cut(self.vm, self._get)
        self.overhead.add_edge("mark-sync", edge)
        self.seen = self.bitmap.copy() if self.seen is None else np.bitwise_or(self.seen, self.bitmap)
        return edge, Count(dirty_pages=int(np.bitwise_count(self.seen).sum()))

    def end(self):
        edge = cut(self.vm, self._get)
        self.overhead.add_edge("end-sync", edge)
        if self.seen is not None:
            self.bitmap |= self.seen
        return edge

    def _popcount(self):
        return int(np.bitwise_count(self.bitmap).sum())

    def zero_pages(self):
        """All-zero pages of the slot, counted once the window is over."""
        return count_zero_pages(self.vm.data.addr, self.vm.slot_pages)

    def count(self):
        with self.overhead.timed("count"):
            pages = self._popcount()
        return Count(dirty_pages=pages)

    def close(self):
        with self.overhead.timed("disable-logging"):
            self.vm.set_dirty_logging(False, self, recreate=self.log_stop == log_stops.RECREATE_SLOT)
