"""calc-dirty-rate's state machine with QEMU's semantics
(qapi/migration.json, migration/dirtyrate.c, and the seed patch that added
calc-time-unit).

    unstarted --calc_dirty_rate--> measuring --window done--> measured
                                       ^                          |
                                       +------calc_dirty_rate-----+

The measurement runs in a background thread, as in QEMU: calc_dirty_rate
returns at once, state() says where it stands (qmp/qapi.py turns that into
query-dirty-rate's answer).  A result stays until the next calc_dirty_rate.
The VM waits for the thread (it reads guest memory) before it unmaps
anything: close() runs in the VM's teardown.
"""

import enum
import threading
import time
from dataclasses import dataclass

from ..errors import DirtyRateError, HarnessError
from . import log_stop as log_stops, modes
from .engine import POLL_SECONDS, measure_window
from .theory import expected_dirty_pages, pages_to_mib_per_s

TIME_UNITS = {"second": 1000, "millisecond": 1}  # QEMU's TimeUnit, in ms
MIN_CALC_TIME_MS, MAX_CALC_TIME_MS = 50, 60000
MIN_SAMPLE_PAGES, MAX_SAMPLE_PAGES = 128, 16384
MAX_PERIODS = 1200  # every 50 ms of a 60 s window
DEFAULT_SAMPLE_PAGES = 512


class DirtyRateStatus(enum.Enum):
    """QEMU's DirtyRateStatus."""

    UNSTARTED = "unstarted"
    MEASURING = "measuring"
    MEASURED = "measured"


@dataclass(frozen=True)
class CalcRequest:
    """One calc-dirty-rate request, checked."""

    calc_time_ms: int
    calc_time_unit: str
    sample_pages: int  # per GiB
    mode: str
    start_time: int  # wall-clock seconds, as QEMU
    periods_ms: tuple = ()  # x-periods: ascending, the last one calc_time_ms
    log_stop: str = log_stops.QEMU  # x-log-stop, resolved: how an exact mode stops logging (log_stop.py)


def default_periods(calc_time_ms):
    """The seed author's curve (qemu-devel, "Migration time prediction using
    calc-dirty-rate", 2023): 125, 250, 375, 500, 750 ms, then every 500 ms,
    up to calc-time, which ends the list."""
    ladder = [125, 250, 375, 500, 750] + list(range(1000, calc_time_ms, 500))
    return tuple(p for p in ladder if p < calc_time_ms) + (calc_time_ms,)


def validate_periods(periods, calc_time_ms):
    """x-periods as given (a list of ms) -> the periods to report, ending
    with calc-time; QEMU-style messages."""
    if periods is None:
        return default_periods(calc_time_ms)
    if not isinstance(periods, (list, tuple)) or not periods or len(periods) > MAX_PERIODS:
        raise DirtyRateError(f"Parameter 'x-periods' must list 1 to {MAX_PERIODS} periods")
    if any(type(p) is not int for p in periods):
        raise DirtyRateError("Parameter 'x-periods' expects integers (milliseconds)")
    if any(b <= a for a, b in zip(periods, periods[1:])):
        raise DirtyRateError("Parameter 'x-periods' must be in ascending order")
    if periods[0] < MIN_CALC_TIME_MS or periods[-1] > calc_time_ms:
        raise DirtyRateError(f"x-periods must lie in [{MIN_CALC_TIME_MS}ms, calc-time ({calc_time_ms}ms)]")
    return tuple(periods) if periods[-1] == calc_time_ms else tuple(periods) + (calc_time_ms,)


@dataclass(frozen=True)
class PeriodResult:
    """The dirty curve at one period, from the window's clean start."""

    period_ms: int  # as asked
    window_us: int  # actual: start edge to this mark
    dirty_pages: float
    expected_pages: float  # the workload's theory at the accesses made meanwhile
    end: tuple  # ((before, after) per vCPU) of this mark's edge
    confidence_pages: tuple | None = None  # page-sampling: 95 % interval


@dataclass(frozen=True)
class DirtyRateState:
    status: DirtyRateStatus
    request: "CalcRequest | None"  # None before any
    result: "DirtyRateResult | None"
    error: "BaseException | None"  # a measurement that failed: status measured, no result


@dataclass(frozen=True)
class VcpuDirtyRate:
    id: int
    guest_writes: int
    dirty_pages: int | None
    dirty_events: int | None
    dirty_rate: int | None  # MiB/s
    asked_wps: int = 0  # accesses/s the writer was asked for at the window's start (0: unlimited)


@dataclass(frozen=True)
class DirtyRateResult:
    mode: str
    start_time: int  # wall-clock seconds, as QEMU
    calc_time_ms: int  # requested
    window_us: int  # actual
    sample_pages: int  # per GiB (0 outside page-sampling once measured, as QEMU)
    dirty_rate: int  # MiB/s, rounded down
    dirty_pages: float
    dirty_events: int | None
    guest_writes: int
    expected_rate: float
    confidence: tuple | None  # MiB/s
    overhead: dict
    vcpus: tuple  # VcpuDirtyRate
    edges: dict  # {"start": ((before, after) per vCPU), "end": ...}
    samples: int | None = None
    dirty_samples: int | None = None
    periods: tuple = ()  # PeriodResult, ascending; the last is the window itself
    zero_pages: float | None = None  # x-zero-pages
    log_stop: str | None = None  # how the exact modes stopped logging (log_stop.py); None in page-sampling
    edge_times: tuple = ()  # perf_counter() of the start and end edges (host clock, not reported)

    @property
    def guest_wps(self):
        """The guest's accesses per second in the window, all vCPUs: what
        it managed under this measurement."""
        return self.guest_writes / (self.window_us / 1e6)

    @property
    def asked_wps(self):
        """The accesses per second its writers were asked for, all vCPUs;
        None when any writes unlimited."""
        asked = [v.asked_wps for v in self.vcpus]
        return None if not all(asked) else sum(asked)

    @property
    def ratio_to_asked(self):
        """guest_wps over asked_wps: how much of its pace the guest kept
        while measured (None when unlimited)."""
        asked = self.asked_wps
        return None if asked is None else self.guest_wps / asked


def validate_calc_dirty_rate(calc_time, calc_time_unit, sample_pages, mode, enabled_modes):
    """calc-dirty-rate's argument checks after 'already measuring', in QEMU's
    order and words.  Returns (calc-time in ms, sample-pages per GiB)."""
    if calc_time_unit not in TIME_UNITS:
        raise DirtyRateError(f"Parameter 'calc-time-unit' does not accept value '{calc_time_unit}'")
    if mode not in modes.BY_NAME:
        raise DirtyRateError(f"Parameter 'mode' does not accept value '{mode}'")
    calc_time_ms = calc_time * TIME_UNITS[calc_time_unit]  # Python ints: no overflow (QEMU quirk)
    if not MIN_CALC_TIME_MS <= calc_time_ms <= MAX_CALC_TIME_MS:
        raise DirtyRateError(
            f"Calculation time is out of range [{MIN_CALC_TIME_MS}ms, {MAX_CALC_TIME_MS}ms]."
        )
    if sample_pages is not None and mode != "page-sampling":  # QEMU's check names this mode
        raise DirtyRateError("sample-pages is used only in page-sampling mode")
    if sample_pages is not None and not MIN_SAMPLE_PAGES <= sample_pages <= MAX_SAMPLE_PAGES:
        raise DirtyRateError(f"sample-pages is out of range[{MIN_SAMPLE_PAGES}, {MAX_SAMPLE_PAGES}].")
    if mode not in enabled_modes:
        raise DirtyRateError(f"mode {mode} is not enabled, use other method instead.")
    return calc_time_ms, DEFAULT_SAMPLE_PAGES if sample_pages is None else sample_pages


class DirtyRateMonitor:
    def __init__(self, vm, poll_seconds=POLL_SECONDS):
        self.vm = vm
        self.poll_seconds = poll_seconds  # how often the tracker is polled (the ring reaper)
        self._lock = threading.Lock()
        self._state = DirtyRateState(DirtyRateStatus.UNSTARTED, None, None, None)
        self._thread = None
        self._done = threading.Event()
        self._cancel = threading.Event()
        self.listeners = []  # called with (monitor, result, error) when a measurement completes
        self._end_lead = {}  # per mode: the last end edge's lead (engine.py)
        vm.add_teardown(self.close)

    def state(self):
        with self._lock:
            return self._state

    @property
    def status(self):
        return self.state().status

    @property
    def requested_unit(self):
        """The calc-time-unit of the last request ('second' before any)."""
        request = self.state().request
        return request.calc_time_unit if request else "second"

    @property
    def enabled_modes(self):
        return modes.enabled_modes(self.vm.ring is not None)

    def calc_dirty_rate(self, calc_time, calc_time_unit="second", sample_pages=None, mode=modes.DEFAULT,
                        periods=None, log_stop=None):
        """Start a measurement; checks in QEMU's order, with QEMU's messages,
        then x-periods' (`periods`, ms; None: default_periods) and
        x-log-stop's (log_stop.py; None: its default)."""
        with self._lock:
            if self._state.status is DirtyRateStatus.MEASURING:
                raise DirtyRateError("the dirty rate is already being measured.")
            if self._cancel.is_set():
                raise HarnessError("the VM is shutting down")
            calc_time_ms, sample_pages = validate_calc_dirty_rate(
                calc_time, calc_time_unit, sample_pages, mode, self.enabled_modes
            )
            periods = validate_periods(periods, calc_time_ms)
            request = CalcRequest(calc_time_ms, calc_time_unit, sample_pages, mode, int(time.time()), periods,
                                  log_stops.resolve(log_stop))
            self._state = DirtyRateState(DirtyRateStatus.MEASURING, request, None, None)
            self._done.clear()
            self._thread = threading.Thread(target=self._measure, args=(request,),
                                            name="calc-dirty-rate", daemon=True)
            self._thread.start()

    def _measure(self, request):
        result = error = None
        try:
            tracker = modes.BY_NAME[request.mode].tracker(self.vm, request.sample_pages, request.log_stop)
            asked = tuple(s.wps for s in self.vm.writer.states())
            window = measure_window(tracker, request.calc_time_ms / 1000, self._end_lead.get(request.mode),
                                    self.poll_seconds, self._cancel,
                                    periods=tuple(p / 1000 for p in request.periods_ms[:-1]))
            self._end_lead[request.mode] = window.end.lead
            result = self._result_of(request, window, asked)
        except BaseException as e:  # reported through state() / wait, never lost
            error = e
        with self._lock:
            self._state = DirtyRateState(DirtyRateStatus.MEASURED, request, result, error)
            self._done.set()
        for listener in list(self.listeners):
            listener(self, result, error)

    def _result_of(self, request, window, asked):
        count = window.count
        seconds = window.seconds
        writes = window.guest_writes()
        periods = self._periods_of(request, window)
        expected = periods[-1].expected_pages  # the last period is the window itself
        vcpus = []
        for k, w in enumerate(writes):
            pages = count.vcpu_pages[k] if count.vcpu_pages else None
            events = count.vcpu_events[k] if count.vcpu_events else None
            rate = int(pages_to_mib_per_s(pages, seconds)) if pages is not None else None
            vcpus.append(VcpuDirtyRate(k, w, pages, events, rate, asked[k]))
        confidence = None
        if count.confidence_pages:
            confidence = tuple(pages_to_mib_per_s(p, seconds) for p in count.confidence_pages)
        return DirtyRateResult(
            mode=request.mode,
            start_time=request.start_time,
            calc_time_ms=request.calc_time_ms,
            window_us=round(seconds * 1e6),
            sample_pages=0 if modes.BY_NAME[request.mode].exact else request.sample_pages,
            dirty_rate=int(pages_to_mib_per_s(count.dirty_pages, seconds)),
            dirty_pages=count.dirty_pages,
            dirty_events=count.dirty_events,
            guest_writes=sum(writes),
            expected_rate=pages_to_mib_per_s(expected, seconds),
            confidence=confidence,
            overhead=window.overhead,
            vcpus=tuple(vcpus),
            edges={
                "start": tuple(zip(window.start.before, window.start.after)),
                "end": tuple(zip(window.end.before, window.end.after)),
            },
            samples=count.samples,
            dirty_samples=count.dirty_samples,
            periods=periods,
            zero_pages=window.zero_pages,
            log_stop=request.log_stop if modes.BY_NAME[request.mode].exact else None,
            edge_times=(window.start.time, window.end.time),
        )

    def _periods_of(self, request, window):
        """x-periods: each mark, then the end, which is calc-time's."""
        streams = self.vm.writer.streams()
        by_period = {round(m.period * 1000): (m.edge, m.count) for m in window.marks}
        out = []
        for ms in request.periods_ms:
            edge, count = by_period.get(ms, (window.end, window.count))
            accesses = [e - s for s, e in zip(window.start.mid, edge.mid)]
            out.append(PeriodResult(ms, round((edge.time - window.start.time) * 1e6), count.dirty_pages,
                                    expected_dirty_pages(list(zip(streams, accesses))),
                                    tuple(zip(edge.before, edge.after)), count.confidence_pages))
        return tuple(out)

    def wait(self, timeout=None):
        """Block until the measurement started last is done; its result."""
        if self.status is DirtyRateStatus.UNSTARTED:
            raise HarnessError("no dirty rate measurement has been started")
        if not self._done.wait(timeout):
            raise HarnessError("the dirty rate measurement did not finish in time")
        error = self.state().error
        if error is not None:
            if isinstance(error, HarnessError):
                raise error
            raise HarnessError(f"the dirty rate measurement failed: {error!r}") from error
        return self.state().result

    def measure(self, calc_time, calc_time_unit="second", sample_pages=None, mode=modes.DEFAULT, periods=None,
                log_stop=None):
        """calc_dirty_rate, then wait for its result."""
        self.calc_dirty_rate(calc_time, calc_time_unit, sample_pages, mode, periods, log_stop)
        return self.wait(calc_time * TIME_UNITS[calc_time_unit] / 1000 + 60)

    def close(self, timeout=10.0):
        """Cut a running measurement short and wait for its thread: it reads
        guest memory, which the VM unmaps next."""
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise HarnessError("the dirty rate measurement did not stop")
