"""Keeping a fleet's migratability current (issue 26): each VM reached over
QMP (any QEMU, or `kvmharness qmp`) is measured with predict's short curve
at every interval, and its latest Reading kept for the terminal, the JSON
lines and the Prometheus exporter.

Why threads and not one loop: a measurement is a few calc-dirty-rate
windows that each block on the QEMU measuring, so VMs are measured side by
side; at most `concurrency` at once (a semaphore), so that 100 VMs cost a
bounded number of QMP sessions and windows at a time (a thread per VM,
asleep between its measurements).  One VM's measurements never
overlap (one thread each).  A VM that fails (gone, hung, refusing because
someone else measures or migrates it) keeps its last good reading.  One
that cannot be reached (gone, hung, not QMP) is marked down with the reason
and retried with exponential backoff up to MAX_BACKOFF; one whose QEMU
answered with an error (QEMU's own refusal: "the dirty rate is already
being measured.", a mode it lacks) is not down but refused: the refusal
is shown, and it is tried again at the next interval.  The others go on.

Memory is bounded per VM: the history keeps HISTORY readings without
their per-window details (what the plot and the trend need); the full
reading goes to `on_reading` and stays as the latest.
"""

import collections
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field

from ..errors import HarnessError, QmpError
from ..migration.predict import advise
from ..peer import printable
from ..qemu.curve import predict_with
from ..qmp.client import QmpClient

MAX_BACKOFF = 300.0  # seconds between retries of a VM that keeps failing
HISTORY = 720  # readings kept per VM (a plot's worth: 2 h at 10 s)
EXACT_AFTER_EFFECT_S_PER_GIB = 7.5
CONNECT_TIMEOUT = 10.0  # each QMP exchange's deadline (qmp/client.py): a hung peer costs this, then a retry


@dataclass(frozen=True)
class LinkVerdict:
    """The pre-copy model's answer on one link for the watched downtime."""

    bits_per_second: float
    converges: bool
    total_seconds: float
    downtime_seconds: float
    aid: str  # advise()'s answer: "converges without aid", "converges with auto-converge at ~40 %", ...
    throttle_pct: int | None  # auto-converge's final level where it converges
    dirty_limit_mb_s: int | None  # the largest converging per-vCPU quota


@dataclass(frozen=True)
class Reading:
    """One VM at one interval: up (measured), or not up with the reason:
    down (unreachable) or refused (its QEMU answered with an error)."""

    address: str
    at: float  # time.time() when the measurement ended
    up: bool
    error: str = ""
    seconds: float = 0.0  # what measuring took
    mode: str = ""
    rate_pages: float = 0.0  # dirty(t)'s fitted rate, pages/s
    dirty_pages_at_downtime: float = 0.0  # dirty(downtime), pages
    windows: tuple = ()  # ((ms, pages), ...) as measured
    zero_pages: float = 0.0
    ram_bytes: int = 0
    vcpus: int = 0
    vcpu_rates: tuple = ()  # MiB/s per vCPU where the QEMU reports it (dirty-ring)
    guest_rate_share: float | None = None  # the guest's write rate in the window / its rate asked (our server)
    links: tuple = ()  # LinkVerdict, one per link watched
    replay: tuple = ()  # each window's (x-edges, x-window-us) where the server gives them (ours): replayable
    refused: bool = False  # not up because the QEMU refused (someone else measures or migrates it, ...)
    # each window's QemuDirtyRate with the guest's counter readings, only where measure_once was given the
    # guest's counter (a checker's; never the CLI's): replay of a QEMU guest checks them
    answers: tuple = field(default=(), compare=False, repr=False)

    def slim(self):
        """This reading without its per-window details: what a VM's history
        keeps (the plot and the trend need the rest)."""
        return dataclasses.replace(self, windows=(), replay=(), answers=(), vcpu_rates=())

    def to_json(self):
        out = {"vm": self.address, "time": round(self.at, 3), "up": self.up}
        if not self.up:
            return out | {"error": self.error, "refused": self.refused}
        return out | {
            "mode": self.mode, "measuring-seconds": round(self.seconds, 3),
            "dirty-rate-pages-per-second": round(self.rate_pages, 1),
            "dirty-rate-bytes-per-second": round(self.rate_pages * 4096),
            "dirty-pages-at-downtime": round(self.dirty_pages_at_downtime),
            "windows": [[ms, round(p)] for ms, p in self.windows], "zero-pages": round(self.zero_pages),
            "ram-bytes": self.ram_bytes, "vcpus": self.vcpus,
            "vcpu-dirty-rate-mib-s": list(self.vcpu_rates), "guest-rate-share": self.guest_rate_share,
            "links": [{"bandwidth-bps": v.bits_per_second, "converges": v.converges,
                       "total-seconds": round(v.total_seconds, 3) if math.isfinite(v.total_seconds) else None,
                       "downtime-ms": round(v.downtime_seconds * 1e3, 1), "aid": v.aid,
                       "auto-converge-pct": v.throttle_pct, "dirty-limit-mb-s": v.dirty_limit_mb_s}
                      for v in self.links]}


def measure_once(address, links, downtime, mode, max_iterations=30, timeout=CONNECT_TIMEOUT, opened=None,
                 counter=None):
    """One Reading of the VM at `address`: the short curve, then for each
    link the model's verdict and the aid that makes it converge.
    `opened(client)` is told the session once it is open (and `opened(None)`
    once it is closed), so that a stopping watch can abort it.  `counter()`
    reads the guest writer's counter where the caller can (a QEMU guest
    whose RAM it maps): each window's readings are kept for replay."""
    t0 = time.perf_counter()
    try:
        with QmpClient(address, timeout=timeout) as client:
            if opened is not None:
                opened(client)
            try:
                target, measured, verdicts = predict_with(client, address, links, [downtime], mode, max_iterations,
                                                          counter=counter)
            finally:
                if opened is not None:
                    opened(None)
    except QmpError as e:  # the peer answered, with an error: QEMU's refusal, said as it said it
        return Reading(address, time.time(), False, printable(str(e)), refused=True)
    except HarnessError as e:
        return Reading(address, time.time(), False, printable(str(e)))
    curve = measured.curve
    out = []
    for link in links:
        v = verdicts[(link, downtime)]
        advice = advise(curve, link, downtime, target.vcpus, max(max_iterations, 100),
                        switch_seconds=v.switch_seconds, **measured.model_options)
        m = v.model
        out.append(LinkVerdict(link.bits_per_second, m.converges, m.total_seconds, m.downtime_seconds, advice.answer,
                               advice.auto_converge.final_level if advice.auto_converge.converges else None,
                               advice.dirty_limit_mb_s))
    last = target.answers[-1].reply if target.answers else {}
    per_vcpu = last.get("vcpu-dirty-rate")
    vcpu_rates = tuple(v["dirty-rate"] for v in per_vcpu if isinstance(v, dict) and type(v.get("dirty-rate")) is int
                       ) if isinstance(per_vcpu, list) else ()
    guest = last.get("x-guest-rate")  # our own server's: the guest's rate in the window against its rate asked
    share = guest.get("ratio") if isinstance(guest, dict) else None
    return Reading(address, time.time(), True, "", time.perf_counter() - t0, target.mode, curve.rate,
                   curve.at(downtime), tuple((round(t * 1e3), p) for t, p in curve.points),
                   measured.zero_pages, target.ram_bytes, target.vcpus, vcpu_rates,
                   share if type(share) in (int, float) and math.isfinite(share) else None, tuple(out),
                   tuple((a.reply.get("x-edges"), a.reply.get("x-window-us")) for a in target.answers),
                   answers=target.answers if counter is not None else ())


def after_effect_seconds(mode, ram_bytes):
    """How long an exact window slows the guest after it, by its RAM: on a
    shadow-paging host every page stays write-protected until the guest's
    next write faults (docs/results/measuring-cost: 1 GiB back within 10 %
    after 6-7 s, 4 GiB after ~30 s).  Page-sampling costs nothing after."""
    if mode == "page-sampling":
        return 0.0
    return EXACT_AFTER_EFFECT_S_PER_GIB * ram_bytes / (1 << 30)


@dataclass
class _Vm:
    address: str
    latest: Reading | None = None
    good: Reading | None = None  # the last reading that was up
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    failures: int = 0
    next_at: float = 0.0
    counts: dict = field(default_factory=lambda: {"up": 0, "down": 0, "refused": 0})


class Fleet:
    """Watches `addresses` until stop(); `on_reading(reading)` is called
    (from the VM's thread) after each measurement."""

    def __init__(self, addresses, links, downtime, mode="page-sampling", every=10.0, concurrency=8,
                 on_reading=None, measure=measure_once, max_iterations=30):
        self.links, self.downtime, self.mode, self.every = links, downtime, mode, every
        self.max_iterations = max_iterations
        self.vms = {a: _Vm(a) for a in addresses}
        self.on_reading = on_reading
        self.measure = measure
        self.started = time.time()
        self._slots = threading.Semaphore(concurrency)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sessions = {}  # address -> the QmpClient measuring it now
        self._threads = [threading.Thread(target=self._watch, args=(vm,), name=f"watch {vm.address}", daemon=True)
                         for vm in self.vms.values()]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout=None):
        """Ask every VM's thread to end and wait for them: a measurement
        under way is aborted (its QMP session shut down: the exchange fails
        at once and the session closes), so that stopping takes no longer
        than a thread needs to notice, however slow the peer or the host
        (a loaded runner's watch, waiting out windows, outlived 120 s)."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for client in sessions:
            client.abort()
        for t in self._threads:
            if t.ident is not None:  # a Ctrl-C during start() leaves some never started
                t.join(timeout)

    def _opened(self, address, client):
        with self._lock:
            if client is None:
                self._sessions.pop(address, None)
                return
            self._sessions[address] = client
            stopping = self._stop.is_set()
        if stopping:  # stop() ran between connecting and here
            client.abort()

    def stopping(self):
        return self._stop.is_set()

    def readings(self):
        """{address: latest Reading or None}, a snapshot."""
        with self._lock:
            return {a: vm.latest for a, vm in self.vms.items()}

    def counts(self):
        """{address: {"up": measurements, "down": unreachable, "refused": refusals}}, a snapshot."""
        with self._lock:
            return {a: dict(vm.counts) for a, vm in self.vms.items()}

    def history(self, address):
        with self._lock:
            return tuple(self.vms[address].history)

    def trend(self, address):
        """The dirty rate now against the first good reading (pages/s; None
        before two good readings)."""
        with self._lock:
            good = [r for r in self.vms[address].history if r.up]
        return good[-1].rate_pages - good[0].rate_pages if len(good) >= 2 else None

    def _watch(self, vm):
        while not self._stop.is_set():
            with self._slots:
                if self._stop.is_set():
                    return
                reading = self.measure(vm.address, self.links, self.downtime, self.mode, self.max_iterations,
                                       opened=lambda c, a=vm.address: self._opened(a, c))
            if self._stop.is_set():
                return  # aborted by stop(): not a reading
            with self._lock:
                vm.latest = reading
                vm.history.append(reading.slim())
                vm.counts["up" if reading.up else "refused" if reading.refused else "down"] += 1
                if reading.up:  # an exact mode never measures again before its after-effect is over
                    vm.good, vm.failures = reading, 0
                    wait = max(self.every, after_effect_seconds(reading.mode, reading.ram_bytes))
                elif reading.refused:  # it answers; someone else's measurement or migration ends in its time
                    vm.failures = 0
                    wait = self.every
                else:
                    vm.failures += 1
                    wait = min(self.every * 2 ** (vm.failures - 1), MAX_BACKOFF)
                vm.next_at = time.time() + wait
            if self.on_reading is not None:
                self.on_reading(reading)
            self._stop.wait(wait)
