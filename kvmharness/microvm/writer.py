"""The writer's control-block protocol, seen from the host, and the ground
truth it keeps.

Each vCPU's control block (guest/layout.h) is shared memory: the host makes
GEN odd, writes parameters, makes GEN even and waits until the guest echoes
it in SEEN_GEN (a seqlock: guest/writer.S, "Control", says why the guest
needs the odd phase); the guest publishes its write counter, its state and
what its pacing gave up, all read without an exit.  Aligned 8-byte loads
and stores are atomic on x86 and TSO keeps each side's stores in order, so
no lock is needed across the boundary.  Every parameter change is logged with the exact counter at
which the guest took it up (SEEN_COUNTER), so replay stays exact.
"""

import time
from dataclasses import dataclass

from .._native import lib
from ..errors import HarnessError, UsageError
from . import guest, replay, workload
from .replay import WriterStream
from .. import patterns

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
    idled: float = 0.0  # seconds of idle burst phases begun (the schedule moves on by as much)
    reads: int = 0  # accesses that were reads: counter - reads were writes


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
    wps: int  # accesses per second (0: unlimited); writes are write-percent of them
    pattern: str
    accesses: int
    reads: int
    write_percent: float
    burst: patterns.Burst
    stream: WriterStream

    @property
    def writes(self):
        return self.accesses - self.reads


class WriterControl:
    """The host's side of every vCPU's control block, and the WriterLog of
    each (the ground truth).  `alive()` is the machine's check that its vCPU
    threads still run: it raises their fault, so no wait outlives a crash.

    `tables` is the table slot: two alias-table buffers per vCPU, each big
    enough for the whole data slot.  A new table is written into the buffer
    the guest is not using, then the guest is pointed at it, so the guest
    never reads a table while it changes."""

    def __init__(self, controls, logs, tsc_hz, cond, alive, *, slot_pages, vm_seed, tables=None, table_gpa=0):
        self.controls = controls
        self._logs = list(logs)
        self.tsc_hz = tsc_hz
        self.cond = cond
        self._alive = alive
        self.slot_pages = slot_pages
        self.vm_seed = vm_seed
        self.tables = tables
        self.table_gpa = table_gpa
        self._buffer = [None] * len(controls)  # the table buffer each guest reads, if any
        self._detached = False

    def detach(self):
        """The VM is closing: its control blocks are about to be unmapped.
        Reading them after that would fault, so from here on every call
        raises instead (a caller that kept the VM past its `with` block)."""
        self._detached = True

    def _blocks(self):
        if self._detached:
            raise HarnessError("the VM is closed: its writer's counters are gone with its memory")
        return self.controls

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

    # ---- regions and tables ------------------------------------------------------
    def region(self, vcpu, shared):
        """(first page, pages) of a vCPU's region: its own slice, or the
        whole data slot when the vCPUs share it."""
        if shared:
            return 0, self.slot_pages
        return workload.vcpu_region(self.slot_pages, len(self.controls), vcpu)

    def _buffer_gpa(self, vcpu, buffer):
        return self.table_gpa + (2 * vcpu + buffer) * self.slot_pages * 8

    def _load_table(self, vcpu, stream, buffer):
        """Write `stream`'s alias table into `buffer` of `vcpu`; its guest address."""
        if self.tables is None:
            raise UsageError(f"pattern {stream.pattern} needs the table slot, which this VM has not")
        table = workload.alias_table(stream.pattern, stream.npages, stream.table_seed)
        gpa = self._buffer_gpa(vcpu, buffer)
        self.tables.write(gpa - self.table_gpa, table.tobytes())
        return gpa

    def load_tables(self):
        """After a migration brought the control blocks: rebuild the table
        each guest points at (a pure function of its stream)."""
        for k, ctl in enumerate(self.controls):
            stream = self._logs[k].current
            if ctl.pattern != workload.guest_pattern(stream.pattern):
                raise HarnessError(f"vCPU {k}'s control block and writer log disagree on the pattern")
            if patterns.uses_table(stream.pattern):
                buffer = next((b for b in (0, 1) if ctl.table == self._buffer_gpa(k, b)), None)
                if buffer is None:
                    raise HarnessError(f"vCPU {k}'s table pointer is not one of its table buffers")
                self._load_table(k, stream, buffer)
                self._buffer[k] = buffer

    # ---- commands ------------------------------------------------------------
    def ids(self, vcpu=None):
        if vcpu is None:
            return list(range(len(self.controls)))
        if not 0 <= vcpu < len(self.controls):
            raise UsageError(f"no vCPU {vcpu}: this VM has {len(self.controls)}")
        return [vcpu]

    def set(self, *, cmd=None, wps=None, pattern=None, write_percent=None, burst=None, shared_region=None,
            vcpu=None, accesses=None):
        """Change the writer of one vCPU (or all) and wait until the guest has
        taken the change up; the streams change at the exact counter the
        guest reports.  `pattern` (patterns.parse_pattern), `write_percent`
        (0..100), `burst` (patterns.Burst; Burst(0, 0) ends bursts) and
        `shared_region` (all vCPUs at once) may each be None: unchanged.
        `accesses` (with cmd RUN, from held or done writers): make exactly
        that many and stop, STATE_DONE (guest/writer.S, "Limit")."""
        ids = self.ids(vcpu)
        blocks = self._blocks()
        if accesses is not None:
            if cmd != guest.CMD_RUN or accesses < 1:
                raise UsageError("a run of counted accesses needs the RUN command and at least one access")
            if any(blocks[k].state not in (lib.KVMH_STATE_HELD, lib.KVMH_STATE_DONE) for k in ids):
                raise UsageError("counted accesses start only from a held or done writer")
        if wps is not None and not 0 <= wps <= MAX_WPS:
            raise UsageError("writes/s must be between 0 (unlimited) and 10^12")
        if pattern is not None:
            pattern = patterns.parse_pattern(pattern)
        if shared_region is not None and vcpu is not None:
            raise UsageError("shared-region applies to every vCPU at once")
        threshold = None if write_percent is None else patterns.read_threshold(write_percent)
        self._alive()
        streams = {}
        for k in ids:
            last = self._logs[k].current
            first, npages = ((last.first_page, last.npages) if shared_region is None
                             else self.region(k, shared_region))
            stream = WriterStream(last.seed, first, npages, pattern or last.pattern,
                                  last.read_threshold if threshold is None else threshold,
                                  workload.table_seed(self.vm_seed, first, npages))
            if patterns.uses_table(stream.pattern) and self.tables is None:
                raise UsageError(f"pattern {stream.pattern} needs the table slot, which this VM has not")
            streams[k] = stream
        with self.cond:
            for k in ids:
                ctl, stream, last = self.controls[k], streams[k], self._logs[k].current
                ctl.gen += 1  # odd: the guest waits until the options below are all written (writer.S, "Control")
                if wps is not None:
                    guest.set_pace(ctl, wps, self.tsc_hz, CATCH_UP_SECONDS)
                if burst is not None:
                    ctl.burst_on, ctl.burst_off = (round(burst.on * self.tsc_hz), round(burst.off * self.tsc_hz))
                if patterns.uses_table(stream.pattern) and (self._buffer[k] is None
                                                            or workload.table_key(stream) != workload.table_key(last)):
                    spare = 0 if self._buffer[k] is None else 1 - self._buffer[k]
                    ctl.table = self._load_table(k, stream, spare)  # the guest reads the other buffer
                    self._buffer[k] = spare
                ctl.pattern = workload.guest_pattern(stream.pattern)
                if (stream.first_page, stream.npages) != (last.first_page, last.npages):
                    ctl.base = lib.KVMH_DATA_GPA + stream.first_page * guest.PAGE_SIZE
                    ctl.npages = stream.npages
                ctl.read_threshold = stream.read_threshold
                if cmd is not None:
                    ctl.cmd = cmd
                if cmd == guest.CMD_RUN:
                    ctl.limit = ctl.counter + accesses if accesses else 0
                ctl.gen += 1  # even: a new generation of options
            self.cond.notify_all()
        self.wait(lambda c: c.seen_gen == c.gen, ACK_TIMEOUT, "take up the new command", ids)
        for k in ids:
            if streams[k] != self._logs[k].current:
                self._logs[k] = self._logs[k].then(self.controls[k].seen_counter, streams[k])

    def run(self, wps=0, pattern=None, vcpu=None, **options):
        self.set(cmd=guest.CMD_RUN, wps=wps, pattern=pattern, vcpu=vcpu, **options)

    def run_accesses(self, accesses, pattern=None, **options):
        """Every vCPU makes exactly `accesses` more accesses, unpaced, then
        stops (dirty_log_perf_test's iteration: one pass, then back to the
        host); returns at once, `wait_done` waits."""
        self.set(cmd=guest.CMD_RUN, wps=0, pattern=pattern, accesses=accesses, **options)

    def wait_done(self, timeout):
        """Until every vCPU has made its counted accesses and stopped."""
        self.wait(lambda c: c.counter == c.limit and c.state == lib.KVMH_STATE_DONE, timeout,
                  "finish its counted accesses", max_pause=100e-6)

    def run_seconds(self):
        """Per vCPU, the guest's own time (TSC) from taking up its last run
        to reaching its limit: time in the guest and in every exit it took."""
        return tuple((c.run_end - c.run_begin) / self.tsc_hz for c in self._blocks())

    def hold(self, vcpu=None):
        """Stop writing; returns once every counter is frozen."""
        self.set(cmd=guest.CMD_HOLD, vcpu=vcpu)
        self.wait(lambda c: c.state == lib.KVMH_STATE_HELD, ACK_TIMEOUT, "hold", self.ids(vcpu))

    def wait(self, done, timeout, what, ids=None, max_pause=2e-3):
        """Until done(control block) holds for every vCPU in `ids`, polling
        at most `max_pause` apart."""
        ids = self.ids() if ids is None else ids
        deadline = time.monotonic() + timeout
        pause = 20e-6
        while not all(done(self.controls[k]) for k in ids):
            self._alive()
            if time.monotonic() > deadline:
                states = ", ".join(guest.STATES.get(self.controls[k].state, "?") for k in ids)
                raise HarnessError(f"the guest did not {what} within {timeout:.0f} s (states: {states})")
            time.sleep(pause)
            pause = min(pause * 2, max_pause)

    # ---- what the guest publishes ----------------------------------------------
    def counters(self):
        """Writes done so far by each vCPU (read from shared memory, no exit)."""
        return [c.counter for c in self._blocks()]

    def schedules(self):
        """Per vCPU, what its paced writer has given up to host stalls so far
        (guest/writer.S): the restarts and the seconds of schedule dropped."""
        return [WriterSchedule(c.resets, c.dropped / self.tsc_hz, c.idled / self.tsc_hz, c.reads)
                for c in self._blocks()]

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
        out = []
        for k, c in enumerate(self._blocks()):
            stream = self._logs[k].current
            out.append(WriterState(k, guest.STATES.get(c.state, "unknown"), c.wps, stream.pattern, c.counter,
                                   c.reads, float(stream.write_fraction * 100),
                                   patterns.Burst(c.burst_on / self.tsc_hz, c.burst_off / self.tsc_hz), stream))
        return tuple(out)

    def warm_seconds(self):
        """The slowest vCPU's warm-up pass, from the guest's TSC stamps."""
        return max((c.warm_end - c.warm_begin) for c in self.controls) / self.tsc_hz


class WriterHost:
    """The writer's API on a machine that holds a WriterControl as `writer`:
    our MicroVm, and QEMU's guest (qemu/guest.py), so that truth.py, the
    measurements and the tests drive either the same way."""

    def run_writer(self, wps=0, pattern=None, vcpu=None, **options):
        """Write at `wps` accesses/s per vCPU (0: unlimited); options as
        WriterControl.set: write_percent, burst, shared_region."""
        self.writer.run(wps, pattern, vcpu, **options)

    def set_writer(self, *, wps=None, pattern=None, vcpu=None, **options):
        self.writer.set(wps=wps, pattern=pattern, vcpu=vcpu, **options)

    def hold(self, vcpu=None):
        self.writer.hold(vcpu)

    def counters(self):
        return self.writer.counters()

    def counter_total(self):
        return sum(self.writer.counters())

    def schedules(self):
        return self.writer.schedules()

    def snapshot(self):
        return self.writer.snapshot()

    @property
    def logs(self):
        return self.writer.logs


@dataclass(frozen=True)
class VcpuRate:
    vcpu: int
    writes: int
    writes_per_second: float
    schedule_resets: int  # times the writer fell too far behind (host stalls) and restarted its schedule
    dropped_seconds: float  # schedule those restarts gave up: the writer was paced for seconds - this
    idled_seconds: float = 0.0  # idle burst phases begun meanwhile
    reads: int = 0  # of `writes`, the accesses that were reads
    dirty_pages: int | None = None  # distinct pages written meanwhile (replayed), if asked for

    def expected_writes(self, wps, seconds):
        """The accesses a writer paced at `wps` owes over `seconds` once the
        schedule it gave up to host stalls and the idle burst phases it began
        are taken off (to within wps * catch-up + 1, and an idle phase begun
        but not yet over)."""
        return wps * (seconds - self.dropped_seconds - self.idled_seconds)


def measure_writer(vm, duration, wps=0, pattern="random", settle=0.0, count_pages=False, **options):
    """Run the writer of a ready VM for `duration` seconds; (seconds, VcpuRate
    per vCPU).  Counters are read at both ends of the interval, after the
    writer is already going (and `settle` seconds more: a dirty limit
    adjusts over periods), so start-up is not in the figure."""
    vm.run_writer(wps, pattern, **options)
    time.sleep(settle)
    first = vm.snapshot()
    time.sleep(duration)
    last = vm.snapshot()
    vm.hold()
    seconds = last.time - first.time
    per = tuple(
        VcpuRate(k, b - a, (b - a) / seconds, s1.resets - s0.resets, s1.dropped - s0.dropped,
                 s1.idled - s0.idled, s1.reads - s0.reads,
                 replay.unique_pages(vm.logs[k], vm.slot_pages, a, b) if count_pages else None)
        for k, (a, b, s0, s1) in enumerate(zip(first.counters, last.counters, first.schedules, last.schedules))
    )
    return seconds, per
