"""Sleeping until a moment, precisely, without holding the GIL.

Measurement windows end at a deadline.  Spinning until it would hold the GIL
for the last millisecond and starve the vCPU threads (they need it to answer
exits, and a thread waiting for the GIL can wait the whole 5 ms switch
interval).  Sleeping alone overshoots by the timer slack (50 us by default).
So: a timer slack of 1 ns for the calling thread (prctl PR_SET_TIMERSLACK),
a sleep to just before the deadline, and a spin of at most SPIN_SECONDS.
"""

import ctypes
import time

PR_SET_TIMERSLACK = 29
SPIN_SECONDS = 80e-6

_libc = ctypes.CDLL(None, use_errno=True)


def tighten_timer_slack():
    """Make this thread's sleeps end within microseconds of their time."""
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def sleep_until(deadline):
    """Return at perf_counter() >= deadline, as soon after it as we can."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= SPIN_SECONDS:
            break
        time.sleep(remaining - SPIN_SECONDS)
    while time.perf_counter() < deadline:
        pass
