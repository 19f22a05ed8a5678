"""The dirty page rate limit of QEMU 7.1+ (system/dirtylimit.c) on our VM.

A vCPU with a quota (MB/s; QEMU's MB is 2^20 bytes, as in calc-dirty-rate)
sleeps each time it fills its dirty ring, in the KVM_EXIT_DIRTY_RING_FULL
path, after the ring has been harvested.  Once per period a controller
measures each vCPU's dirty rate from its ring entries and adjusts the
sleep, with QEMU's rule (`next_throttle`):

* within 25 MB/s of the quota: leave it;
* off by more than 50 % of the larger of the two: change the sleep in
  proportion, by ring_full_time x pct / (100 - pct), pct the error in %;
* otherwise: by a tenth of ring_full_time;
* clamped to [0, 99 x ring_full_time].

ring_full_time is the time to fill the ring at the fastest rate seen so far
(QEMU keeps that maximum for the life of the process; we keep it per VM),
from the ring's size in whole MB: ring_entries x 4096 >> 20.

A vCPU that only reads adds no ring entries: its rate is 0 and its sleep 0,
so it is never slowed (auto-converge slows it as much as a writer).

Where we differ from QEMU, and why:
* the rate is counted from ring entries in place (produced(): harvested
  plus published), without reaping; QEMU syncs the dirty log each period,
  which also empties the rings.  Reaping would postpone the very exits the
  limit sleeps in.  While a limit is in service a dirty-ring measurement's
  periodic reaper stands aside for the same reason (its edges still
  harvest);
* the period: QEMU measures over 1 s outside migration (DIRTYLIMIT_CALC_TIME_MS)
  and x-vcpu-dirty-limit-period (1..1000 ms, default 1000) during one; our
  period is that parameter always, so it may be set to 50-100 ms, which
  settles an order of magnitude sooner (docs/results/convergence/).
"""

import collections
import threading
import time
from dataclasses import dataclass

from ..errors import HarnessError
from ..microvm.guest import PAGE_SIZE

TOLERANCE_MB_S = 25  # DIRTYLIMIT_TOLERANCE_RANGE
LINEAR_ADJUSTMENT_PCT = 50  # DIRTYLIMIT_LINEAR_ADJUSTMENT_PCT
LINEAR_STEPS = 10  # closer than that, each period moves the sleep by the ring-full time / 10 (QEMU's)
THROTTLE_PCT_MAX = 99  # DIRTYLIMIT_THROTTLE_PCT_MAX
QEMU_PERIOD_MS = 1000  # DIRTYLIMIT_CALC_TIME_MS, and x-vcpu-dirty-limit-period's default
MIN_PERIOD_MS, MAX_PERIOD_MS = 1, 1000  # x-vcpu-dirty-limit-period's range
MB = 1 << 20

# QEMU's messages (system/dirtylimit.c), byte for byte; the first keeps its stray quote.
NEEDS_RING = "dirty page limit feature requires KVM with accelerator property 'dirty-ring-size' set'"
BAD_CPU_INDEX = "incorrect cpu index specified"
SET_WHILE_MIGRATING = "can't set dirty page rate limit while migration is running"
CANCEL_WHILE_MIGRATING = "can't cancel dirty page rate limit while migration is running"


class DirtyLimitError(HarnessError):
    """A request QEMU refuses, with QEMU's message."""


def ring_full_time_us(ring_entries, max_rate_mb_s):
    """QEMU's dirtylimit_dirty_ring_full_time: microseconds to fill the ring
    at the fastest rate seen (integer arithmetic, as QEMU's)."""
    if max_rate_mb_s <= 0:
        return 0
    return (ring_entries * PAGE_SIZE >> 20) * 1_000_000 // max_rate_mb_s


def next_throttle(quota, current, throttle_us, ring_full_us):
    """QEMU's dirtylimit_adjust_throttle + dirtylimit_set_throttle: the
    sleep per ring-full exit (us) after one period that measured `current`
    MB/s against `quota` MB/s."""
    if abs(quota - current) <= TOLERANCE_MB_S:
        return throttle_us  # dirtylimit_done: nothing to do
    if current == 0:
        return 0
    low, high = min(quota, current), max(quota, current)
    if (high - low) * 100 // high > LINEAR_ADJUSTMENT_PCT:
        pct = (high - low) * 100 // high
        step = int(ring_full_us * pct / (100 - pct))
    else:
        step = ring_full_us // LINEAR_STEPS
    throttle_us += step if quota < current else -step
    return max(0, min(throttle_us, ring_full_us * THROTTLE_PCT_MAX))


@dataclass(frozen=True)
class VcpuDirtyLimit:
    """query-vcpu-dirty-limit's DirtyLimitInfo, plus what the limit costs."""

    cpu_index: int
    limit_rate: int  # MB/s, the quota
    current_rate: int  # MB/s, over the last period
    throttle_us_per_full: int  # the sleep each ring-full exit takes now
    throttled_seconds: float  # slept so far (this vCPU, dirty limit and CPU throttling together)


class DirtyLimit:
    """Per-vCPU quotas on one VM that has a dirty ring.  set()/cancel() as
    QMP's set-vcpu-dirty-limit / cancel-vcpu-dirty-limit; in service while
    any vCPU has a quota (then dirty logging is on and the controller
    thread runs); close() in the VM's teardown."""

    def __init__(self, vm, period_ms=QEMU_PERIOD_MS):
        self.vm = vm
        self.period_ms = period_ms
        n = len(vm.vcpus)
        self._quota = [0] * n
        self._current = [0] * n
        self._throttle_us = [0] * n
        self._max_rate = 0
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        # A migration with the dirty-limit capability is running: users may
        # not change the quotas meanwhile (QEMU's dirtylimit_is_allowed).
        self.migration_running = False
        # (monotonic time, ((current MB/s, throttle us) per vCPU)) per period
        self.history = collections.deque(maxlen=100_000)
        vm.add_teardown(self.close)

    # ---- QMP's contract ---------------------------------------------------------
    def _check(self, cpu_index, refused, by_migration):
        if self.vm.ring is None:
            raise DirtyLimitError(NEEDS_RING)
        if cpu_index is not None and not 0 <= cpu_index < len(self._quota):
            raise DirtyLimitError(BAD_CPU_INDEX)
        if self.migration_running and not by_migration and self.in_service:
            raise DirtyLimitError(refused)

    def set(self, dirty_rate, cpu_index=None, by_migration=False):
        """Quota `dirty_rate` MB/s for one vCPU or all; 0 cancels, as in QEMU."""
        self._check(cpu_index, SET_WHILE_MIGRATING, by_migration)
        if not dirty_rate:
            return self.cancel(cpu_index, by_migration)
        with self._lock:
            for k in self._ids(cpu_index):
                self._quota[k] = dirty_rate
        self._start()

    def cancel(self, cpu_index=None, by_migration=False):
        """Drop the quota of one vCPU or all (without a ring: nothing, as QEMU)."""
        if self.vm.ring is None:
            return
        self._check(cpu_index, CANCEL_WHILE_MIGRATING, by_migration)
        with self._lock:
            for k in self._ids(cpu_index):
                self._quota[k] = 0
                self._throttle_us[k] = 0
        if not self.in_service:
            self._finish()

    def _ids(self, cpu_index):
        return range(len(self._quota)) if cpu_index is None else (cpu_index,)

    @property
    def in_service(self):
        return any(self._quota)

    def query(self):
        """The vCPUs with a quota, in index order (QEMU lists no others)."""
        slept = self.vm.throttled_seconds()
        with self._lock:
            return [VcpuDirtyLimit(k, q, self._current[k], self._throttle_us[k], slept[k] if slept else 0.0)
                    for k, q in enumerate(self._quota) if q]

    def throttle_time_per_round(self):
        """query-migrate's dirty-limit-throttle-time-per-round: the largest
        sleep per ring-full exit among the vCPUs (us)."""
        return max(self._throttle_us, default=0)

    def ring_full_time(self):
        """query-migrate's dirty-limit-ring-full-time (us)."""
        return ring_full_time_us(self.vm.ring.entries, self._max_rate) if self.vm.ring else 0

    # ---- mechanism ------------------------------------------------------------
    def _start(self):
        if self._thread is not None:
            return
        rings = self.vm.ring
        self.vm.set_dirty_logging(True, self)
        rings.reaper_paused = True
        rings.after_full = self._after_full
        self._stop.clear()
        self._thread = threading.Thread(target=self._control, name="dirty-limit", daemon=True)
        self._thread.start()

    def _finish(self):
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join(5.0)
        rings = self.vm.ring
        rings.after_full = None
        rings.reaper_paused = False
        self.vm.set_dirty_logging(False, self)

    def _after_full(self, vcpu):
        """On the vCPU's thread, its ring just harvested (dirtylimit_vcpu_execute)."""
        k = vcpu.id
        sleep_us = self._throttle_us[k] if self._quota[k] else 0
        if sleep_us:
            self.vm.throttle_sleep(k, sleep_us / 1e6)

    def _control(self):
        """The controller: measure each vCPU's rate over a period, adjust."""
        rings = self.vm.ring
        last, t_last = rings.produced(), time.monotonic()
        while not self._stop.wait(self.period_ms / 1000):
            now, t_now = rings.produced(), time.monotonic()
            seconds = max(t_now - t_last, 1e-6)
            rates = [int((b - a) * PAGE_SIZE / MB / seconds) for a, b in zip(last, now)]
            last, t_last = now, t_now
            with self._lock:
                self._current = rates
                self._max_rate = max(self._max_rate, *rates)
                full_us = ring_full_time_us(rings.entries, self._max_rate)
                for k, quota in enumerate(self._quota):
                    if quota:
                        self._throttle_us[k] = next_throttle(quota, rates[k], self._throttle_us[k], full_us)
                self.history.append((t_now, tuple(zip(rates, self._throttle_us))))

    def close(self):
        with self._lock:
            self._quota = [0] * len(self._quota)
        self._finish()
