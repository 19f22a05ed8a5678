"""What one measurement costs the guest, during its window and after it.

A dirty-bitmap or dirty-ring window write-protects every page of the slot;
the guest's first write to each page after that is a fault, in the window
and, for the pages it did not write there, after it, until it has written
them all once (log_stop.py: which pages stay protected, and what stopping
the log differently changes).  So we follow the guest's own write counter
through one window and the seconds after it:

  * before: its rate over BEFORE_SECONDS just before the request;
  * in the window: its writes between the window's edges (the result's own
    counters) over the window;
  * after: its rate from the window's end edge on, read every
    SAMPLE_SECONDS, until over HOLD_SECONDS it is back within TOLERANCE of
    the rate before (recovery), or CAP_SECONDS have passed (not recovered);
  * writes lost: what it would have written at the rate before, from the
    request to its recovery, less what it wrote.

The guest's counters are the ground truth, read in one snapshot with the
host time they were read at (WriterControl.snapshot), never a host thread's
wake-up time.  A paced writer that falls behind gives the schedule up
instead of catching up (microvm/writer.py), and counts what it gave up, so
for it the writes lost are also the asked rate times the schedule dropped:
both are reported, and they agree to within the writer's accounting.
"""

import bisect
import time
from dataclasses import dataclass

from .monitor import DirtyRateStatus

SAMPLE_SECONDS = 0.01
BEFORE_SECONDS = 0.5
HOLD_SECONDS = 0.5
TOLERANCE = 0.10  # back within 10 % of the rate before
CAP_SECONDS = 20.0


@dataclass(frozen=True)
class Reading:
    """The guest's counters at one host time."""

    time: float  # seconds after the window's end edge (negative before it)
    writes: int  # accesses so far, all vCPUs
    dropped: float  # seconds of schedule the paced writers gave up so far, all vCPUs (microvm/writer.py)


def reading(snapshot, origin=0.0):
    return Reading(snapshot.time - origin, sum(snapshot.counters), sum(s.dropped for s in snapshot.schedules))


def rate(a, b):
    """Accesses per second between two readings."""
    return (b.writes - a.writes) / (b.time - a.time)


def at(readings, t):
    """The first reading at or after time t (the last one if none)."""
    return next((r for r in readings if r.time >= t), readings[-1])


def scan_recovery(readings, floor, hold, start=0):
    """From index `start` on, the first reading from which the rate over
    the next `hold` seconds is at least `floor`: (True, its index), or
    (False, the first index not yet decided, its `hold` not yet over)."""
    for i in range(start, len(readings)):
        j = bisect.bisect_left(readings, readings[i].time + hold, i + 1, key=lambda r: r.time)
        if j == len(readings):
            return False, i
        if rate(readings[i], readings[j]) >= floor:
            return True, i
    return False, len(readings)


def recovery(readings, before_wps, tolerance=TOLERANCE, hold=HOLD_SECONDS, since=0.0):
    """Index of the first reading at or after `since` from which the guest's
    rate over the next `hold` seconds is at least (1 - tolerance) of
    `before_wps`; None when there is none (yet).  A mean over `hold`, not
    every interval: a host that preempts the vCPU for a few milliseconds
    dents one 10 ms interval, not the guest's recovery."""
    first = next((i for i, r in enumerate(readings) if r.time >= since), len(readings))
    found, i = scan_recovery(readings, (1 - tolerance) * before_wps, hold, first)
    return i if found else None


class RecoveryWatch:
    """scan_recovery over readings as they come, each decided once: a
    follower that stops at recovery without rescanning what it has seen."""

    def __init__(self, floor, hold, since=0.0):
        self.floor, self.hold, self.since = floor, hold, since
        self.next = None  # first undecided index, once a reading at or after `since` exists
        self.found = None

    def __call__(self, readings):
        """The recovery index once there is one, else None."""
        if self.found is None:
            if self.next is None:
                self.next = next((i for i, r in enumerate(readings) if r.time >= self.since), None)
                if self.next is None:
                    return None
            found, self.next = scan_recovery(readings, self.floor, self.hold, self.next)
            if found:
                self.found = self.next
        return self.found


@dataclass(frozen=True)
class MeasuringCost:
    """One window's cost to the guest; times are seconds after its end edge."""

    mode: str
    calc_time_ms: int
    log_stop: str | None  # how logging stopped (None: page-sampling logs nothing)
    asked_wps: int | None  # accesses/s asked of the writers, all vCPUs (None: unlimited)
    before_wps: float
    window_wps: float  # between the window's edges
    window_seconds: float
    request_time: float  # when calc-dirty-rate was asked (negative)
    recovery_seconds: float | None  # after the end edge; None: not within cap_seconds
    cap_seconds: float
    writes_lost: float  # before_wps x (recovery - request) - the accesses made meanwhile
    dropped_seconds: float  # schedule the paced writers gave up over the same span
    dirty_rate: int  # the measurement's own answer, MiB/s
    readings: tuple  # Reading, from BEFORE_SECONDS before the request to the end of following

    @property
    def recovered(self):
        return self.recovery_seconds is not None

    @property
    def window_ratio(self):
        """The rate in the window over the rate before."""
        return self.window_wps / self.before_wps

    @property
    def lost_seconds(self):
        """The writes lost in seconds of the guest's work at its rate before."""
        return self.writes_lost / self.before_wps

    @property
    def schedule_lost(self):
        """The writes lost by the paced writers' own account: the asked rate
        times the schedule they gave up (None when unlimited)."""
        return None if self.asked_wps is None else self.asked_wps * self.dropped_seconds

    def rate_over(self, t0, t1):
        """The guest's accesses/s between t0 and t1 (seconds after the end
        edge), from the readings nearest at or after each; None beyond them."""
        if t0 > self.readings[-1].time:
            return None
        a, b = at(self.readings, t0), at(self.readings, t1)
        return rate(a, b) if b.time > a.time else None

    def curve(self, step=0.1):
        """(t, accesses/s) over successive `step`-second intervals from the
        first reading on, t the interval's start: for plots and JSON."""
        out, start = [], self.readings[0]
        for r in self.readings[1:]:
            if r.time - start.time >= step or r is self.readings[-1]:
                out.append((start.time, rate(start, r)))
                start = r
        return tuple(out)


def _sample_until(vm, readings, done, origin, interval):
    """Append a reading every `interval` seconds until done(readings)."""
    while not done(readings):
        time.sleep(interval)
        readings.append(reading(vm.snapshot(), origin))


def measure_cost(vm, monitor, mode, calc_time_ms, log_stop=None, sample_pages=None, *, before=BEFORE_SECONDS,
                 cap=CAP_SECONDS, hold=HOLD_SECONDS, tolerance=TOLERANCE, interval=SAMPLE_SECONDS):
    """One calc-dirty-rate window of `mode` and `calc_time_ms` on a VM whose
    writer is running (at a rate it reaches untracked), followed until the
    guest is back.  The window has no x-periods marks (each would be an
    edge of its own, which QEMU's window does not have)."""
    asked = [s.wps for s in vm.writer.states()]
    raw = [reading(vm.snapshot())]
    _sample_until(vm, raw, lambda rs: rs[-1].time - rs[0].time >= before, 0.0, interval)
    request = raw[-1]
    monitor.calc_dirty_rate(calc_time_ms, "millisecond", sample_pages, mode, [calc_time_ms], log_stop)
    _sample_until(vm, raw, lambda rs: monitor.status is not DirtyRateStatus.MEASURING, 0.0, interval)
    result = monitor.wait()
    end = result.edge_times[1]
    readings = [Reading(r.time - end, r.writes, r.dropped) for r in raw]
    before_wps = rate(readings[0], at(readings, request.time - end))

    watch = RecoveryWatch((1 - tolerance) * before_wps, hold)
    _sample_until(vm, readings, lambda rs: watch(rs) is not None or rs[-1].time >= cap, end, interval)
    i = watch(readings)
    back = readings[i] if i is not None else readings[-1]
    start = at(readings, request.time - end)
    return MeasuringCost(
        mode=mode,
        calc_time_ms=calc_time_ms,
        log_stop=result.log_stop,
        asked_wps=sum(asked) if all(asked) else None,
        before_wps=before_wps,
        window_wps=result.guest_wps,
        window_seconds=result.window_us / 1e6,
        request_time=start.time,
        recovery_seconds=None if i is None else max(back.time, 0.0),
        cap_seconds=cap,
        writes_lost=before_wps * (back.time - start.time) - (back.writes - start.writes),
        dropped_seconds=back.dropped - start.dropped,
        dirty_rate=result.dirty_rate,
        readings=tuple(readings),
    )


def wait_steady(vm, target_wps, cap=CAP_SECONDS, hold=HOLD_SECONDS, tolerance=TOLERANCE,
                interval=SAMPLE_SECONDS):
    """Follow the guest until over `hold` seconds it writes at least
    (1 - tolerance) of `target_wps` (what it did untracked), so that a
    window starts from a guest that no earlier window still slows; at most
    `cap` seconds.  Returns the seconds waited, None when it never got there."""
    watch = RecoveryWatch((1 - tolerance) * target_wps, hold)
    first = vm.snapshot()
    readings = [reading(first, first.time)]
    _sample_until(vm, readings, lambda rs: watch(rs) is not None or rs[-1].time >= cap, first.time, interval)
    i = watch(readings)
    return None if i is None else readings[i].time
