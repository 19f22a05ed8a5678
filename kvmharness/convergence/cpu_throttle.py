"""CPU throttling, as QEMU's system/cpu-throttle.c does it for auto-converge.

At throttle percentage p, every vCPU is made to sleep p / (1 - p) x 10 ms
outside the guest once per 10 ms / (1 - p) of wall time, so it runs 10 ms
in each such period: (1 - p) of its time.  A vCPU whose last sleep is still
pending is not given another (QEMU's throttle_thread_scheduled).  The
percentage is clamped to 1..99 (CPU_THROTTLE_PCT_MIN/MAX).

Every vCPU is slowed alike, readers too: that is auto-converge's known cost,
and what the dirty limit (dirty_limit.py) avoids.
"""

import threading
import time

PCT_MIN, PCT_MAX = 1, 99
TIMESLICE = 0.010  # CPU_THROTTLE_TIMESLICE_NS


def sleep_per_timeslice(pct):
    """Seconds each vCPU sleeps per tick at `pct` % (QEMU adds 1 ns for
    rounding; so do we)."""
    ratio = pct / 100
    return ratio / (1 - ratio) * TIMESLICE + 1e-9


def tick_seconds(pct):
    """Wall time between ticks at `pct` %."""
    return TIMESLICE / (1 - pct / 100)


class CpuThrottle:
    """set(pct) starts or changes throttling, stop() ends it; close() in the
    VM's teardown.  `history`: (monotonic time, pct) at each change."""

    def __init__(self, vm):
        self.vm = vm
        self.percentage = 0
        self.history = []
        self._thread = None
        self._stop = threading.Event()
        vm.add_teardown(self.stop)

    @property
    def active(self):
        return self._thread is not None

    def set(self, pct):
        self.percentage = max(PCT_MIN, min(PCT_MAX, int(pct)))
        self.history.append((time.monotonic(), self.percentage))
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._ticks, name="cpu-throttle", daemon=True)
            self._thread.start()

    def _ticks(self):
        # The first tick one timeslice after the start, as QEMU's timer.
        wait = TIMESLICE
        while not self._stop.wait(wait):
            pct = self.percentage
            for k in range(len(self.vm.vcpus)):
                self.vm.request_sleep(k, sleep_per_timeslice(pct))
            wait = tick_seconds(pct)

    def stop(self):
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(5.0)
            self.percentage = 0
            self.history.append((time.monotonic(), 0))
