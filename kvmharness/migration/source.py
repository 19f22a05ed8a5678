"""Pre-copy live migration, source side.

Dirty logging on (the bitmap tracker's sync: GET, then CLEAR to re-protect);
iteration 0 sends every page; each next iteration sends the pages dirtied
meanwhile.  When what is pending fits in bandwidth x downtime (QEMU's
switch-over rule; the bandwidth is the one given, or the one the last
iteration achieved), the vCPUs are stopped: a last sync, the pending pages,
the control slot, each vCPU's registers and TSC, and a hash of every data
page go out, then END.  The destination verifies the hashes, resumes the
guest and answers; only then does the source retire its vCPUs.  If the
destination refuses, or the iteration limit is reached first, the source
guest simply keeps running.
"""

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..convergence.cpu_throttle import CpuThrottle
from ..convergence.dirty_limit import DirtyLimit
from ..convergence.trigger import ThrottleParameters, ThrottleTrigger
from ..errors import HarnessError
from ..kvm import uapi
from ..microvm.page_hash import zero_page_mask
from ..peer import printable
from .auth import authenticate_destination
from .dirty_log import dirty_log_for
from .parameters import LIMIT_NEEDS_RING
from .model import PAGE_WIRE_BYTES, Iteration, switch_now
from .stream import StreamWriter, boot_id, encode_meta, read_reply, send_line
from .timeline import TimelineSampler

# How long the source waits for the destination's "ready" once it has
# stopped its guest, before it gives up and resumes it: the final pages, the
# destination's hashing of every page and a margin, from the downtime limit
# and the RAM size, not a fixed two minutes.
SWITCH_MIN_SECONDS = 5.0
SWITCH_DOWNTIMES = 10
HASH_FLOOR_BYTES_PER_SECOND = 256 << 20  # slower hashing than any host we met


def switch_timeout(downtime, mem):
    return SWITCH_MIN_SECONDS + SWITCH_DOWNTIMES * downtime + mem / HASH_FLOOR_BYTES_PER_SECOND


@dataclass(frozen=True)
class ThrottleRecord:
    """The aid changed level at `seconds` since the start, after iteration
    `iteration`'s sync."""

    seconds: float
    iteration: int
    level: int  # % (auto-converge) or MB/s per vCPU (dirty-limit)


@dataclass
class MigrationProgress:
    """A running migration as query-migrate reports it, written by the
    migration thread as it goes (each field a whole value a reader can take
    at any moment): the stream's counters once it is open, the time the
    setup took, and after each iteration's sync what is left and how fast
    it is being dirtied."""

    writer: object = None  # the StreamWriter: bytes sent, zero and normal pages
    setup_seconds: float | None = None
    syncs: int = 0  # dirty-log syncs so far (QEMU's dirty-sync-count)
    remaining_pages: int = 0
    dirty_pages_rate: float = 0.0  # pages/s dirtied during the last iteration
    expected_downtime: float = 0.0  # seconds the remaining pages would take at the last rate
    precopy_bytes: int = 0  # sent before the switch-over (the rest: downtime bytes)
    on_active: object = None  # called once the setup is done and the first pass begins (QEMU's "active")

    def setup_done(self, writer, seconds):
        self.writer, self.setup_seconds, self.syncs = writer, seconds, 1
        if self.on_active is not None:
            self.on_active()


@dataclass(frozen=True)
class MigrationReport:
    converged: bool
    verified: bool
    iterations: tuple  # model.Iteration, as measured, before the switch-over
    final_pages: int  # sent with the vCPUs stopped
    total_seconds: float
    downtime_seconds: float  # vCPUs stopped here until the guest ran again there (see downtime_basis)
    downtime_basis: str  # "same-host-clock": pause to resume, exact; "round-trip": until the answer came
    hash_seconds: float  # of which: hashing all of RAM here (verify="full"; 0 otherwise)
    switch_counters: tuple  # the guest's write counters at the switch-over
    destination: dict  # the destination's answer
    reason: str
    aid: str | None = None  # "auto-converge", "dirty-limit" or None
    throttle_steps: tuple = ()  # ThrottleRecord
    levels: tuple = ()  # the aid's level in force during each iteration (0: none)
    timeline: object = None  # timeline.Timeline: the guest's writes until the pause
    unconfirmed: bool = False  # go sent, no "resumed": the guest is paused here (QMP cont resumes it)

    def to_json(self):
        out = self._core_json()
        if self.aid:
            out["aid"] = self.aid
            out["throttle-started-seconds"] = (round(self.throttle_steps[0].seconds, 3)
                                               if self.throttle_steps else None)
            out["throttle-steps"] = [{"seconds": round(s.seconds, 3), "iteration": s.iteration,
                                      "level": s.level} for s in self.throttle_steps]
            out["levels-per-iteration"] = list(self.levels)
        if self.timeline is not None:
            out["timeline"] = self.timeline.to_json()
        if self.unconfirmed:
            out["switch-over"] = "unconfirmed"
        return out

    def _core_json(self):
        return {
            "converged": self.converged,
            "verified": self.verified,
            "iterations": [{"pages": i.pages, "bytes": i.bytes, "seconds": round(i.seconds, 6)}
                           for i in self.iterations],
            "final-pages": self.final_pages,
            "total-seconds": round(self.total_seconds, 6),
            "downtime-ms": round(self.downtime_seconds * 1e3, 3),
            "downtime-basis": self.downtime_basis,
            "source-hash-ms": round(self.hash_seconds * 1e3, 3),
            "switch-counters": list(self.switch_counters),
            "destination": self.destination,
            "reason": self.reason,
        }


VERIFY = ("sent", "full")


@dataclass(frozen=True)
class Aid:
    """The convergence aid a migration may turn on (QEMU's capabilities
    auto-converge and dirty-limit) with its parameters.  `cpu_throttle` /
    `dirty_limit`: the VM's own objects where a QMP server shares them with
    its commands; None: the migration makes its own."""

    name: str | None = None
    params: ThrottleParameters = ThrottleParameters()
    cpu_throttle: object = None
    dirty_limit: object = None


class _AidInForce:
    """Applies a ThrottleTrigger's steps to the VM and undoes them at the end."""

    def __init__(self, vm, aid, t_start):
        self.aid = aid
        self.t_start = t_start
        self.trigger = ThrottleTrigger(aid.name, aid.params)
        self.steps = []
        self._throttle = self._limit = None
        if aid.name == "dirty-limit" and vm.ring is None:
            raise HarnessError(LIMIT_NEEDS_RING)
        if aid.name == "auto-converge":
            self._throttle = aid.cpu_throttle or CpuThrottle(vm)
        elif aid.name == "dirty-limit":
            self._limit = aid.dirty_limit or DirtyLimit(vm)
            self._limit.migration_running = True
        self._limited = False  # whether the migration has set quotas (end() cancels only those)

    def sync(self, iteration, new_dirty_pages, bytes_sent):
        now = time.perf_counter() - self.t_start
        step = self.trigger.sync(now, new_dirty_pages, bytes_sent)
        if step is None:
            return
        self.steps.append(ThrottleRecord(now, iteration, step.level))
        if self._throttle is not None:
            self._throttle.set(step.level)
        else:
            self._limit.period_ms = self.aid.params.x_vcpu_dirty_limit_period
            self._limit.set(step.level, by_migration=True)
            self._limited = True

    def end(self):
        """QEMU stops throttling and cancels the migration's limits when the
        migration ends, whichever way."""
        if self._throttle is not None:
            self._throttle.stop()
        if self._limit is not None:
            if self._limited:
                self._limit.cancel(by_migration=True)
            self._limit.migration_running = False


def migrate_out(vm, sock, downtime, max_iterations=30, bytes_per_second=None, secret=None, verify="sent",
                aid=Aid(), progress=None):
    """Migrate the running `vm` over connected socket `sock`, to a
    destination that proves `secret` (see auth.py; None: loopback use).
    `verify`: "sent" hashes each page as it is sent (the transfer is
    proven, nothing is added to the downtime); "full" hashes all of RAM
    with the vCPUs stopped instead, which also proves the dirty log missed
    nothing (stream.py).  `progress`, a MigrationProgress, is kept up to
    date for query-migrate."""
    if verify not in VERIFY:
        raise HarnessError(f"verify must be one of {', '.join(VERIFY)}")
    progress = MigrationProgress() if progress is None else progress
    t_start = time.perf_counter()
    in_force = _AidInForce(vm, aid, t_start)
    authenticate_destination(sock, secret)
    writer = StreamWriter(sock, bytes_per_second)
    log = dirty_log_for(vm)
    sent_hashes = np.zeros(vm.slot_pages, dtype=np.uint64)
    iterations, levels = [], []
    timeline = TimelineSampler(vm, t_start)
    try:
        writer.header(encode_meta(vm.config, vm.control.size, vm.logs))
        log.enable()
        log.sync()  # from here on, every write is logged
        progress.setup_done(writer, time.perf_counter() - t_start)
        in_force.sync(0, 0, writer.bytes_sent)
        pending = np.arange(vm.slot_pages, dtype=np.uint64)
        while True:
            t0, b0 = time.perf_counter(), writer.bytes_sent
            levels.append(in_force.trigger.level)
            writer.pages(pending, vm.data.addr, zero_page_mask(vm.data.addr, pending), sent_hashes)
            seconds = time.perf_counter() - t0
            iterations.append(Iteration(len(pending), writer.bytes_sent - b0, seconds))
            rate = bytes_per_second or (writer.bytes_sent - b0) / max(seconds, 1e-6)
            log.sync()
            pending = log.dirty_pages()
            progress.syncs, progress.remaining_pages = progress.syncs + 1, len(pending)
            progress.dirty_pages_rate = len(pending) / max(seconds, 1e-6)
            progress.expected_downtime = len(pending) * PAGE_WIRE_BYTES / rate
            in_force.sync(len(iterations), len(pending), writer.bytes_sent)
            if switch_now(len(pending) * PAGE_WIRE_BYTES, rate * downtime, rate, seconds, len(iterations),
                          max_iterations):
                break
            if len(iterations) >= max_iterations:
                writer.abort(f"no convergence after {max_iterations} iterations")
                reason = (f"did not converge: {len(pending)} pages still dirty after {max_iterations} "
                          f"iterations, {int(rate * downtime / PAGE_WIRE_BYTES)} fit in the downtime")
                return MigrationReport(False, False, tuple(iterations), 0,
                                       time.perf_counter() - t_start, 0.0, "none", 0.0, tuple(vm.counters()),
                                       {"status": "aborted"}, reason, aid.name, tuple(in_force.steps),
                                       tuple(levels), timeline.stop())
        progress.precopy_bytes = writer.bytes_sent
        report = _switch_over(vm, sock, writer, log, pending, iterations, t_start, downtime, sent_hashes,
                              verify, timeline)
        return dataclasses.replace(report, aid=aid.name, throttle_steps=tuple(in_force.steps),
                                   levels=tuple(levels))
    except OSError as e:
        raise _refusal(sock, e) from None
    finally:
        timeline.stop()
        in_force.end()
        log.close()


def _refusal(sock, error):
    """The error to report when sending failed: the destination's refusal
    where it sent one before hanging up (a destination that cannot build
    the VM, such as a hugetlb backing without reserved pages, refuses and
    closes while we still send, and the reason reached us only as
    ECONNRESET), else the send's own error."""
    try:
        reply = read_reply(sock, 1.0)
    except (OSError, HarnessError):
        reply = {}
    if reply.get("status") == "refused":
        return HarnessError(f"the destination refused: {printable(str(reply.get('error')))}; "
                            f"the source guest keeps running")
    return HarnessError(f"migration failed, the source guest keeps running: {error.strerror or error}")


def _switch_over(vm, sock, writer, log, pending, iterations, t_start, downtime, sent_hashes, verify, timeline):
    states = {}

    def capture(vcpu):
        # Complete any pending MMIO before saving state (KVM API: run once
        # with immediate_exit set), then read the registers and the TSC.
        vcpu.immediate_exit = True
        vcpu.run()
        vcpu.immediate_exit = False
        tsc = vcpu.get_msrs([uapi.MSR_IA32_TSC])[uapi.MSR_IA32_TSC]
        states[vcpu.id] = (tsc, vcpu.get_regs(), vcpu.get_sregs())

    t_pause, t_pause_monotonic = time.perf_counter(), time.monotonic()
    bound = switch_timeout(downtime, vm.config.mem)
    # A destination that stops reading must not hold the guest stopped
    # either: every send of the switch-over gets the same bound.
    sock.settimeout(bound)
    with vm.vcpus_stopped(timeout=bound, on_stop=capture):
        counters = tuple(vm.counters())
        seen = timeline.stop()
        log.sync()
        final = np.union1d(pending, log.dirty_pages())
        writer.pages(final, vm.data.addr, zero_page_mask(vm.data.addr, final), sent_hashes)
        writer.control(vm.control.read(0, vm.control.size))
        for k in sorted(states):
            writer.vcpu(k, *states[k])
        t_hash = time.perf_counter()
        hashes = vm.page_hashes() if verify == "full" else sent_hashes
        hash_seconds = time.perf_counter() - t_hash
        writer.hashes(hashes)
        writer.end()
        # no "ready" within the bound: read_reply raises, the block ends and
        # the guest resumes here (the destination, without go, discards its copy)
        reply = read_reply(sock, bound)
        ready = reply.get("status") == "ready"
        resumed = unconfirmed = False
        if ready:
            # The vCPUs stay out of the guest until the destination confirms
            # it runs the guest: a go lost on the way must not leave it
            # running nowhere while we report success (issue 25: a relay
            # that dropped go made the source exit 0 and the guest vanish).
            try:
                send_line(sock, {"go": True})
                reply = reply | read_reply(sock, bound)
                resumed = reply.get("status") == "resumed"
                if not resumed:
                    raise HarnessError(f"it answered {printable(reply.get('status'), 40)!r}")
            except (OSError, HarnessError) as e:
                unconfirmed = True
                reply = reply | {"status": "unconfirmed", "error": printable(str(e))}
            # Either way the guest does not run on here: it runs there, or it
            # may (the go may have arrived and only the answer been lost).
            # Unconfirmed, its state stays in this VM, paused: QMP's cont
            # (or nothing, for the CLI) decides, never this code.
            vm.retire_vcpus()
        downtime, basis = time.perf_counter() - t_pause, "round-trip"
        if resumed and reply.get("boot-id") is not None and reply.get("boot-id") == boot_id():
            downtime, basis = reply["resumed-at"] - t_pause_monotonic, "same-host-clock"
    total = time.perf_counter() - t_start
    if resumed:
        reason = "switched over"
    elif unconfirmed:
        reason = (f"switch-over unconfirmed: go was sent, but the destination did not confirm that the guest runs "
                  f"there ({reply['error']}); the guest is paused here, not resumed (it may be running there, and "
                  f"at most one copy may run)")
    else:
        reason = f"the destination refused: {printable(str(reply.get('error', reply)))}"
    return MigrationReport(resumed, bool(reply.get("verified")), tuple(iterations), len(final), total,
                           downtime, basis, hash_seconds, counters, reply, reason, timeline=seen,
                           unconfirmed=unconfirmed)
