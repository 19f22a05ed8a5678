"""Sleeping until a moment, precisely, and keeping the interpreter out of the
way while a measurement window is open.

Measurement windows end at a deadline.  Three things made them end late
(measured with scripts/bench_engine.py --perturb, 50 ms windows):
  * the timer slack: a sleep overshoots by it (50 us by default), so the
    measuring thread sets its own to 1 ns (prctl PR_SET_TIMERSLACK) and spins
    the last SPIN_SECONDS; spinning longer would hold the GIL and starve the
    vCPU threads, which need it to answer exits;
  * the GIL: a thread that wakes at the deadline waits for any thread running
    Python code to hand the GIL over, which takes the switch interval, 5 ms by
    default (windows came back +5.3 ms, median, beside one busy thread): while
    a window is open the interval is SWITCH_INTERVAL_SECONDS;
  * the cyclic garbage collector: a full collection holds the GIL for as long
    as it takes (55 ms for 100 k objects on our runner; windows came back up
    to +48 ms beside a thread that allocates): while a window is open it does
    not run on its own, and it may catch up after.
"""

import contextlib
import ctypes
import gc
import sys
import threading
import time

PR_SET_TIMERSLACK = 29
SPIN_SECONDS = 80e-6
SWITCH_INTERVAL_SECONDS = 100e-6

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


class _QuietInterpreter:
    """Process-wide settings held while any window is open (windows of
    several VMs may overlap), restored when the last one closes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open = 0
        self._saved = None

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._open == 0:
                self._saved = (gc.isenabled(), sys.getswitchinterval())
                gc.disable()
                sys.setswitchinterval(min(SWITCH_INTERVAL_SECONDS, self._saved[1]))
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    gc_enabled, interval = self._saved
                    sys.setswitchinterval(interval)
                    if gc_enabled:
                        gc.enable()


quiet_interpreter = _QuietInterpreter()
