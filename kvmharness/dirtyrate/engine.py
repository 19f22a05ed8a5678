"""One measurement window, whatever the tracker: begin, wait out the window
(polling the tracker, e.g. the ring reaper), end, count.

The window is the time between the instants the two edges took effect
(kvmharness.dirtyrate.window).  It is never shorter than asked, as QEMU's,
and otherwise as close to the request as we can make it:
  * the end edge is called early by its expected lead (the last end edge's
    of this tracker kind, or the start edge's when there is none yet), but
    never before start + calc-time: an edge that takes effect sooner than
    expected could otherwise cut the window short (page-sampling windows
    came back 0.4 ms short when the second hashing pass ran on warm caches).
    So the window overshoots by AIM_LATE_SECONDS where the lead is shorter
    than that (bitmap, small sampling slots) and by the actual lead where it
    is longer (a ring edge's vCPU stop, ~0.3 ms; hashing a 16 GiB slot's
    8192 samples, ~4 ms);
  * the wait ends within microseconds of its deadline, and neither the GIL
    nor the garbage collector delays the end edge (kvmharness.timing);
  * the actual window is what we report (x-window-us), as QEMU reports the
    actual calc-time.

Periods (x-periods): the dirty curve from one clean start.  At each period
p < calc-time after the start edge, the tracker takes a mark: an edge like
the end's that does not end the window (bitmap: a GET; ring: a harvest with
the vCPUs out; sampling: hashing the same samples again) and its count of
everything since the start.  A period within FINAL_SECONDS of the end is
the end itself.
"""

import time
from dataclasses import dataclass

from ..errors import HarnessError
from .trackers.count import Count
from ..timing import quiet_interpreter, sleep_until, tighten_timer_slack
from .window import Edge

POLL_SECONDS = 0.002
FINAL_SECONDS = 0.001  # no polling in the last millisecond: nothing may delay the end edge
# QEMU waits at least calc-time, so its actual window is never shorter than
# the request (and a 1 s window queried in seconds reads 1, not 0).  We aim
# this far past the request so that edge jitter keeps that true.
AIM_LATE_SECONDS = 0.00025


@dataclass(frozen=True)
class Mark:
    period: float  # seconds after the start edge, as asked
    edge: Edge
    count: Count  # everything since the start edge


@dataclass(frozen=True)
class Window:
    start: Edge
    end: Edge
    count: Count
    overhead: dict
    marks: tuple = ()  # Mark, ascending; the window's own end is not among them
    zero_pages: float | None = None  # all-zero pages after the window (estimated in page-sampling)

    @property
    def seconds(self):
        return self.end.time - self.start.time

    def guest_writes(self):
        """Per-vCPU writes between the middles of the two edges' brackets."""
        return tuple(e - s for s, e in zip(self.start.mid, self.end.mid))


def measure_window(tracker, seconds, end_lead=None, poll_seconds=POLL_SECONDS, cancel=None, periods=()):
    """Measure one window; `cancel` (an Event) cuts it short with an error;
    `periods` (seconds, ascending) are marked on the way."""
    tighten_timer_slack()
    marks = []
    try:
        with quiet_interpreter():
            start = tracker.begin()
            lead = start.lead if end_lead is None else end_lead
            deadline = start.time + seconds + max(0.0, AIM_LATE_SECONDS - lead)
            due = [p for p in periods if start.time + p < deadline - FINAL_SECONDS]
            while deadline - time.perf_counter() > poll_seconds + FINAL_SECONDS or due:
                if cancel is not None and cancel.is_set():
                    raise HarnessError("the measurement was cut short: the VM is shutting down")
                if due and time.perf_counter() >= start.time + due[0]:
                    period = due.pop(0)
                    marks.append(Mark(period, *tracker.mark()))
                    continue
                tracker.poll()
                wake = min(time.perf_counter() + poll_seconds, deadline - FINAL_SECONDS)
                sleep_until(min(wake, start.time + due[0]) if due else wake)
            sleep_until(deadline)
            end = tracker.end()
        count = tracker.count()
        zero = tracker.zero_pages()
    finally:
        tracker.close()
    return Window(start, end, count, tracker.overhead.snapshot(), tuple(marks), zero)
