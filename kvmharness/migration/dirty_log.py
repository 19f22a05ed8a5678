"""Migration's dirty log: the bitmap (KVM_GET_DIRTY_LOG / CLEAR, the
dirty-bitmap tracker's sync) on a VM without a dirty ring, the ring on a
VM with one (KVM refuses GET_DIRTY_LOG then, and QEMU migrates from the
ring too).  Both offer enable(), sync(), dirty_pages(), close()."""

import numpy as np

from ..dirtyrate.trackers.bitmap import DirtyBitmapTracker
from ..microvm.dirty_ring import RingSink


class RingLog:
    """Each sync harvests every ring into the current sink and installs a
    fresh one; the pages of the old sink are the ones dirtied since the
    last sync.  Ring-full exits between syncs harvest into the current
    sink, so nothing is lost; the final sync runs with the vCPUs out of
    the guest, which flushes Intel's PML buffers into the rings."""

    def __init__(self, vm):
        self.vm = vm
        self.rings = vm.ring
        self._dirty = np.zeros(0, dtype=np.uint64)

    def _new_sink(self):
        return RingSink(len(self.vm.vcpus), self.vm.slot_pages)

    def enable(self):
        self.vm.set_dirty_logging(True, self)
        self.rings.harvest()  # entries from before: not ours
        self.rings.swap_sink(self._new_sink())

    def sync(self):
        self.rings.harvest()
        old = self.rings.swap_sink(self._new_sink())
        union = np.bitwise_or.reduce(old.bitmaps)
        bits = np.unpackbits(union.view(np.uint8), bitorder="little")[: self.vm.slot_pages]
        self._dirty = np.flatnonzero(bits).astype(np.uint64)

    def dirty_pages(self):
        """Page numbers dirtied between the last two syncs, ascending."""
        return self._dirty

    def close(self):
        self.rings.swap_sink(None)
        self.vm.set_dirty_logging(False, self)
        self.rings.harvest()


def dirty_log_for(vm):
    return RingLog(vm) if vm.ring is not None else DirtyBitmapTracker(vm)
