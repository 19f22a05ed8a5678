"""The dirty log a `perf` run harvests after each iteration, with its two
costs timed apart as dirty_log_perf_test times them: the fetch ("get dirty
log time") and the re-protection ("clear dirty log time").

* bitmap: KVM_GET_DIRTY_LOG on every data memslot, then (manual protect)
  KVM_CLEAR_DIRTY_LOG of what it returned; without manual protect the GET
  re-protects by itself and there is no clear.
* ring: harvest every vCPU's ring (the fetch), KVM_RESET_DIRTY_RINGS (the
  re-protection).  Entries harvested in ring-full exits during the
  iteration land in the same sink; their cost is in the vCPUs' time.

Both return the harvested pages as a bool array over the data region, for
the exact check against replay.
"""

import time
from dataclasses import dataclass

import numpy as np

from ..kvm import uapi
from ..microvm.dirty_ring import RingSink


@dataclass(frozen=True)
class Harvest:
    pages: np.ndarray  # bool per data-region page: reported dirty
    get_seconds: float
    clear_seconds: float | None  # None: this log has no separate re-protection
    ring_full_exits: int = 0


def _pages(words, npages):
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:npages].astype(bool)


class BitmapLog:
    mode = "dirty-bitmap"

    def __init__(self, vm):
        self.vm = vm
        self.words = np.zeros(-(-vm.slot_pages // 64), dtype=np.uint64)
        self.manual = bool(vm.manual_protect & uapi.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
        # KVM_DIRTY_LOG_INITIALLY_SET: enabling logging sets every bit and
        # write-protects nothing; the first GET reports every page
        self.initially_set = bool(vm.manual_protect & uapi.KVM_DIRTY_LOG_INITIALLY_SET)

    def enable(self):
        self.vm.set_dirty_logging(True, self)

    def begin(self):
        pass

    def collect(self):
        t0 = time.perf_counter()
        self.vm.get_dirty_log(self.words.ctypes.data)
        t1 = time.perf_counter()
        clear = None
        if self.manual:
            self.vm.clear_dirty_log(self.words.ctypes.data)
            clear = time.perf_counter() - t1
        return Harvest(_pages(self.words, self.vm.slot_pages), t1 - t0, clear)

    def disable(self):
        self.vm.set_dirty_logging(False, self)


class RingLog:
    mode = "dirty-ring"
    manual = False
    initially_set = False

    def __init__(self, vm):
        self.vm = vm
        self.rings = vm.ring
        self.full_exits = 0

    def enable(self):
        self.vm.set_dirty_logging(True, self)

    def begin(self):
        self.rings.harvest()  # nothing can be there (the writers are stopped); a foreign entry would raise
        self.rings.swap_sink(RingSink(len(self.vm.vcpus), self.vm.slot_pages))
        self.full_exits = self.rings.full_exits

    def collect(self):
        reset0 = self.rings.reset_seconds
        t0 = time.perf_counter()
        self.rings.harvest()
        seconds = time.perf_counter() - t0
        reset = self.rings.reset_seconds - reset0
        sink = self.rings.swap_sink(None)
        union = np.bitwise_or.reduce(sink.bitmaps)
        return Harvest(_pages(union, self.vm.slot_pages), seconds - reset, reset,
                       self.rings.full_exits - self.full_exits)

    def disable(self):
        self.vm.set_dirty_logging(False, self)
        self.rings.harvest()


def log_for(vm):
    return RingLog(vm) if vm.ring is not None else BitmapLog(vm)
