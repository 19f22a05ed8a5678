"""The per-vCPU dirty rings of one VM (KVM_CAP_DIRTY_LOG_RING).

Harvesting is native (native/dirty_ring.c: acquire/release ordering on each
entry).  Here: the mappings, one lock that makes "harvest every ring, then
KVM_RESET_DIRTY_RINGS" atomic with respect to the other harvesters (the
measurement's reaper and the vCPU threads answering KVM_EXIT_DIRTY_RING_FULL),
and the check that the reset re-armed exactly as many entries as we
harvested.  Harvested entries go to the current sink, or are only counted
when there is none (between measurements).
"""

import ctypes
import signal
import threading
import time

import numpy as np

from .._native import ffi, lib
from ..errors import HarnessError, UsageError
from ..kvm import Kvm, uapi
from ..kvm.system import DEFAULT_DEVICE
from ..kvm.memory import Mapping
from .guest import PAGE_SIZE

GFN_SIZE = ctypes.sizeof(uapi.kvm_dirty_gfn)  # checked against the kernel by tests/test_uapi_layout.py
MIN_ENTRIES = PAGE_SIZE // GFN_SIZE  # KVM wants at least one page per ring
ALL_SIGNALS = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}


def max_ring_bytes(kvm):
    """(largest ring in bytes, whether it is the ACQ_REL flavour) that `kvm`
    (a Kvm or Vm: anything with check_extension) offers; (0, False): none."""
    acq_rel = kvm.check_extension("KVM_CAP_DIRTY_LOG_RING_ACQ_REL")
    return (acq_rel, True) if acq_rel else (kvm.check_extension("KVM_CAP_DIRTY_LOG_RING"), False)


def host_max_ring_entries(device=DEFAULT_DEVICE):
    """The largest dirty ring, in entries per vCPU, this host's KVM offers (0: none)."""
    with Kvm(device) as kvm:
        return max_ring_bytes(kvm)[0] // GFN_SIZE


def ring_bytes(entries, max_bytes):
    """Validate a ring size in entries against KVM's rules and the host's max."""
    max_entries = max_bytes // GFN_SIZE
    if entries & (entries - 1) or not MIN_ENTRIES <= entries <= max_entries:
        raise UsageError(
            f"dirty ring size must be a power of two from {MIN_ENTRIES} to {max_entries} entries, "
            f"not {entries}"
        )
    return entries * GFN_SIZE


class RingSink:
    """Where a measurement's entries go: per vCPU, a bitmap of the slot's
    pages (for unique counts) and the number of entries (dirtying events)."""

    def __init__(self, vcpus, npages):
        words = -(-npages // 64)
        self.bitmaps = [np.zeros(words, dtype=np.uint64) for _ in range(vcpus)]
        self._ptrs = [ffi.cast("uint64_t *", b.ctypes.data) for b in self.bitmaps]
        self.unique = ffi.new("uint64_t[]", vcpus)
        self.events = [0] * vcpus

    def unique_pages(self):
        """Distinct pages over all vCPUs (a page two vCPUs dirtied counts once)."""
        union = np.bitwise_or.reduce(self.bitmaps)
        return int(np.bitwise_count(union).sum())


class DirtyRings:
    """`slots`: the data region's memslots (machine.DataSlot), consecutive
    ids; each entry's slot id and offset become a page of the region, and
    an entry naming anything else is an error (`harvest`)."""

    def __init__(self, vm, vcpus, entries, slots):
        self.vm = vm
        self.entries = entries
        self.first_slot = slots[0].id
        if [s.id for s in slots] != list(range(self.first_slot, self.first_slot + len(slots))):
            raise HarnessError("the data memslots of a dirty ring must have consecutive ids")
        self._bounds = ffi.new("uint64_t[]", [s.first_page for s in slots] + [slots[-1].first_page + slots[-1].pages])
        self.nslots = len(slots)
        self.maps = []
        try:
            for vcpu in vcpus:
                self.maps.append(
                    Mapping.of_fd(vcpu.fd, entries * GFN_SIZE, offset=uapi.KVM_DIRTY_LOG_PAGE_OFFSET * PAGE_SIZE)
                )
        except BaseException:
            self.close()
            raise
        self._rings = [ffi.cast("struct kvm_dirty_gfn *", m.addr) for m in self.maps]
        self._fetch = ffi.new("uint32_t[]", len(self.maps))
        self._lock = threading.Lock()
        self.sink = None
        self.harvested = 0
        self.vcpu_harvested = [0] * len(self.maps)
        self.full_exits = 0
        self.reset_seconds = 0.0  # spent in KVM_RESET_DIRTY_RINGS, all harvests together
        # Run on the vCPU's thread after each ring-full exit has been
        # harvested: the dirty limit sleeps there (convergence/dirty_limit.py).
        self.after_full = None
        # While set, periodic reapers (a dirty-ring measurement's poll) leave
        # the rings alone, so that they fill and the vCPUs take the exit.
        self.reaper_paused = False
        self._scratch = ffi.new("uint64_t[1]")
        self._foreign = ffi.new("uint64_t[1]")

    def harvest(self):
        """Harvest every ring into the current sink, then KVM_RESET_DIRTY_RINGS.

        Returns the number of entries harvested.  A reset count that differs
        from it means entries were lost or double-counted, and an entry
        outside the data region's memslots means a page went astray: both
        errors, never a silent miscount.
        """
        with self._lock:
            sink = self.sink
            total = 0
            for k, ring in enumerate(self._rings):
                if sink is None:
                    bitmap, unique = ffi.NULL, self._scratch
                else:
                    bitmap, unique = sink._ptrs[k], sink.unique + k
                n = lib.kvmh_ring_harvest(ring, self.entries, self._fetch + k, self.first_slot, self.nslots,
                                          self._bounds, bitmap, unique, self._foreign)
                if sink is not None:
                    sink.events[k] += n
                self.vcpu_harvested[k] += n
                total += n
            t0 = time.perf_counter()
            reset = self._reset()
            self.reset_seconds += time.perf_counter() - t0
            if reset != total:
                raise HarnessError(
                    f"KVM_RESET_DIRTY_RINGS reset {reset} entries but {total} were harvested"
                )
            if self._foreign[0]:
                foreign, self._foreign[0] = self._foreign[0], 0
                raise HarnessError(f"{foreign} dirty ring entries named a memslot or page outside the data "
                                   f"region (slots {self.first_slot}..{self.first_slot + self.nslots - 1})")
            self.harvested += total
            return total

    def _reset(self):
        """KVM_RESET_DIRTY_RINGS with every signal blocked on this thread.
        Since Linux 6.17 the reset stops early when a signal is pending
        ("KVM: Bail from the dirty ring reset flow if a signal is pending"):
        it then reports fewer entries than we harvested (we saw "reset 55
        entries but 192 were harvested") and leaves the rest for the next.  A
        vCPU thread harvests in its ring-full exit while the host may be
        kicking it (a measurement's edge): the kick waits until the reset is
        done, and, immediate_exit being set, still makes the next KVM_RUN
        return at once.  tests/test_convergence.py kicks a vCPU through
        ring-full exits to show it."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
        try:
            return self.vm.reset_dirty_rings()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def swap_sink(self, sink):
        """Install a new sink (None: count only) and return the old one.
        Under the harvest lock, so no harvest is split between the two."""
        with self._lock:
            old, self.sink = self.sink, sink
            return old

    def produced(self):
        """Entries each vCPU's ring has received so far: harvested, plus
        published and not yet harvested (counted in place, not reaped)."""
        with self._lock:
            return [self.vcpu_harvested[k] + lib.kvmh_ring_pending(ring, self.entries, self._fetch[k])
                    for k, ring in enumerate(self._rings)]

    def on_ring_full(self, vcpu):
        """KVM_EXIT_DIRTY_RING_FULL, on the vCPU's own thread: make room,
        then whatever `after_full` asks of the vCPU (the dirty limit's sleep)."""
        self.full_exits += 1
        self.harvest()
        after = self.after_full
        if after is not None:
            after(vcpu)

    def close(self):
        self._rings = []
        for m in self.maps:
            m.close()
        self.maps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
