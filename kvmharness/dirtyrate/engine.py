"""One measurement window, whatever the tracker: begin, wait out the window
(polling the tracker, e.g. the ring reaper), end, count.

The window is the time between the instants the two edges took effect
(kvmharness.dirtyrate.window).  To make it match the request to within
microseconds, the end edge is called early by its expected lead (the last end
edge's of this tracker kind, or the start edge's when there is none yet) and
aimed a quarter of a millisecond late (AIM_LATE_SECONDS), the wait ends
within microseconds of its deadline (kvmharness.timing), and the actual
window is what we report (x-window-us), as QEMU reports the actual calc-time.
"""

import time
from dataclasses import dataclass

from .count import Count
from ..timing import sleep_until, tighten_timer_slack
from .window import Edge

POLL_SECONDS = 0.002
FINAL_SECONDS = 0.001  # no polling in the last millisecond: nothing may delay the end edge
# QEMU waits at least calc-time, so its actual window is never shorter than
# the request (and a 1 s window queried in seconds reads 1, not 0).  We aim
# this far past the request so that edge jitter keeps that true.
AIM_LATE_SECONDS = 0.00025


@dataclass(frozen=True)
class Window:
    start: Edge
    end: Edge
    count: Count
    overhead: dict

    @property
    def seconds(self):
        return self.end.time - self.start.time

    def guest_writes(self):
        """Per-vCPU writes between the middles of the two edges' brackets."""
        return tuple(e - s for s, e in zip(self.start.mid, self.end.mid))


def measure_window(tracker, seconds, end_lead=None, poll_seconds=POLL_SECONDS):
    tighten_timer_slack()
    try:
        start = tracker.begin()
        lead = start.lead if end_lead is None else end_lead
        deadline = start.time + seconds + AIM_LATE_SECONDS - lead
        while deadline - time.perf_counter() > poll_seconds + FINAL_SECONDS:
            tracker.poll()
            sleep_until(min(time.perf_counter() + poll_seconds, deadline - FINAL_SECONDS))
        sleep_until(deadline)
        end = tracker.end()
        count = tracker.count()
    finally:
        tracker.close()
    return Window(start, end, count, tracker.overhead.snapshot())
