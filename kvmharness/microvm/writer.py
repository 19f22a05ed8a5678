"""The writer's control-block protocol, seen from the host, and the ground
truth it keeps.

Each vCPU's control block (guest/layout.h) is shared memory: the host writes
parameters, bumps GEN and waits until the guest echoes it in SEEN_GEN; the
guest publishes its write counter, its state and what its pacing gave up,
all read without an exit.  Aligned 8-byte loads and stores are atomic on
x86 and TSO keeps each side's stores in order, so no lock is needed across
the boundary.  Every parameter change is logged with the exact counter at
which the guest took it up (SEEN_COUNTER), so replay stays exact.
"""

import time
from dataclasses import dataclass

from .._native import lib
from ..errors import HarnessError, UsageError
from . import guest
from .replay import WriterStream

# The most schedule a paced writer catches up after a stall; more is given
# up (guest/writer.S).  It bounds the writer's bursts: over any T seconds at
# most wps * (T + CATCH_UP_SECONDS) + 1 writes, 0.5 % over at T = 50 ms.
CATCH_UP_SECONDS = 0.00025
ACK_TIMEOUT = 10.0
MAX_WPS = 10**12
SNAPSHOT_SLOP, SNAPSHOT_TRIES = 50e-6, 100


@dataclass(frozen=True)
class WriterSchedule:
    resets: int  # times the writer fell more than CATCH_UP_SECONDS behind and restarted its schedule
    dropped: float  # seconds of schedule those restarts gave up


@dataclass(frozen=True)
class WriterSnapshot:
    time: float  # perf_counter() when read
    counters: tuple  # writes so far, per vCPU
    schedules: tuple  # WriterSchedule per vCPU


@dataclass(frozen=True)
class WriterState:
    """What x-query-writer reports of one vCPU's writer."""

    vcpu: int
    state: str
    wps: int
    pattern: str
    writes: int
    stream: WriterStream


class WriterControl:
    """The host's side of every vCPU's control block, and the WriterLog of
    each (the ground truth).  `alive()` is the machine's check that its vCPU
    threads still run: it raises their fault, so no wait outlives a crash."""

    def __init__(self, controls, logs, tsc_hz, cond, alive):
        self.controls = controls
        self._logs = list(logs)
        self.tsc_hz = tsc_hz
        self.cond = cond
        self._alive = alive

    # ---- ground truth --------------------------------------------------------
    @property
    def logs(self):
        """Each vCPU's WriterLog: which stream wrote from which counter on."""
        return tuple(self._logs)

    def adopt_logs(self, logs):
        """Take over the logs of a guest that ran elsewhere (migration)."""
        if len(logs) != len(self.controls):
            raise HarnessError(f"{len(logs)} writer logs for {len(self.controls)} vCPUs")
        self._logs = list(logs)

    def streams(self):
        """The stream each vCPU's writer follows now."""
        return tuple(log.current for log in self._logs)

    # ---- commands ------------------------------------------------------------
    def ids(self, vcpu=None):
        if vcpu is None:
            return list(range(len(self.controls)))
        if not 0 <= vcpu < len(self.controls):
            raise UsageError(f"no vCPU {vcpu}: this VM has {len(self.controls)}")
        return [vcpu]

    def set(self, *, cmd=None, wps=None, pattern=None, vcpu=None):
        """Change the writer of one vCPU (or all) and wait until the guest has
        taken the change up."""
        ids = self.ids(vcpu)
        if wps is not None and not 0 <= wps <= MAX_WPS:
            raise UsageError("writes/s must be between 0 (unlimited) and 10^12")
        if pattern is not None and pattern not in guest.PATTERNS:
            raise UsageError(f"pattern must be one of {', '.join(guest.PATTERNS)}")
        self._alive()
        with self.cond:
            for k in ids:
                ctl = self.controls[k]
                if wps is not None:
                    guest.set_pace(ctl, wps, self.tsc_hz, CATCH_UP_SECONDS)
                if pattern is not None:
                    ctl.pattern = guest.PATTERNS[pattern]
                if cmd is not None:
                    ctl.cmd = cmd
                ctl.gen += 1
            self.cond.notify_all()
        self.wait(lambda c: c.seen_gen == c.gen, ACK_TIMEOUT, "take up the new command", ids)
        if pattern is not None:
            for k in ids:
                last = self._logs[k].current
                if last.pattern != pattern:
                    stream = WriterStream(last.seed, last.first_page, last.npages, pattern)
                    self._logs[k] = self._logs[k].then(self.controls[k].seen_counter, stream)

    def run(self, wps=0, pattern=None, vcpu=None):
        self.set(cmd=guest.CMD_RUN, wps=wps, pattern=pattern, vcpu=vcpu)

    def hold(self, vcpu=None):
        """Stop writing; returns once every counter is frozen."""
        self.set(cmd=guest.CMD_HOLD, vcpu=vcpu)
        self.wait(lambda c: c.state == lib.KVMH_STATE_HELD, ACK_TIMEOUT, "hold", self.ids(vcpu))

    def wait(self, done, timeout, what, ids=None):
        """Until done(control block) holds for every vCPU in `ids`."""
        ids = self.ids() if ids is None else ids
        deadline = time.monotonic() + timeout
        pause = 20e-6
        while not all(done(self.controls[k]) for k in ids):
            self._alive()
            if time.monotonic() > deadline:
                states = ", ".join(guest.STATES.get(self.controls[k].state, "?") for k in ids)
                raise HarnessError(f"the guest did not {what} within {timeout:.0f} s (states: {states})")
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)

    # ---- what the guest publishes ----------------------------------------------
    def counters(self):
        """Writes done so far by each vCPU (read from shared memory, no exit)."""
        return [c.counter for c in self.controls]

    def schedules(self):
        """Per vCPU, what its paced writer has given up to host stalls so far
        (guest/writer.S): the restarts and the seconds of schedule dropped."""
        return [WriterSchedule(c.resets, c.dropped / self.tsc_hz) for c in self.controls]

    def snapshot(self):
        """The writers' counters and schedules with the host time they were
        read at.  The reads are retried until they took under SNAPSHOT_SLOP
        seconds, so that a host thread preempted between reading the clock
        and the counters (milliseconds on a loaded host) does not skew a
        rate by that much."""
        for _ in range(SNAPSHOT_TRIES):
            t0 = time.perf_counter()
            counters, schedules = self.counters(), self.schedules()
            t1 = time.perf_counter()
            if t1 - t0 <= SNAPSHOT_SLOP:
                break
        return WriterSnapshot((t0 + t1) / 2, tuple(counters), tuple(schedules))

    def states(self):
        return tuple(
            WriterState(k, guest.STATES.get(c.state, "unknown"), c.wps, guest.PATTERN_NAMES[c.pattern],
                        c.counter, self._logs[k].current)
            for k, c in enumerate(self.controls)
        )

    def warm_seconds(self):
        """The slowest vCPU's warm-up pass, from the guest's TSC stamps."""
        return max((c.warm_end - c.warm_begin) for c in self.controls) / self.tsc_hz


@dataclass(frozen=True)
class VcpuRate:
    vcpu: int
    writes: int
    writes_per_second: float
    schedule_resets: int  # times the writer fell too far behind (host stalls) and restarted its schedule
    dropped_seconds: float  # schedule those restarts gave up: the writer was paced for seconds - this

    def expected_writes(self, wps, seconds):
        """What a writer paced at `wps` owes over `seconds` once the schedule
        it gave up to host stalls is taken off (to within wps * catch-up + 1)."""
        return wps * (seconds - self.dropped_seconds)


def measure_writer(vm, duration, wps=0, pattern="random"):
    """Run the writer of a ready VM for `duration` seconds; (seconds, VcpuRate
    per vCPU).  Counters are read at both ends of the interval, after the
    writer is already going, so start-up is not in the figure."""
    vm.run_writer(wps, pattern)
    first = vm.snapshot()
    time.sleep(duration)
    last = vm.snapshot()
    vm.hold()
    seconds = last.time - first.time
    per = tuple(
        VcpuRate(k, b - a, (b - a) / seconds, s1.resets - s0.resets, s1.dropped - s0.dropped)
        for k, (a, b, s0, s1) in enumerate(zip(first.counters, last.counters, first.schedules, last.schedules))
    )
    return seconds, per
