"""calc-dirty-rate / query-dirty-rate with QEMU's semantics
(qapi/migration.json, migration/dirtyrate.c, and the seed patch that added
calc-time-unit), plus our x- fields.

    unstarted --calc_dirty_rate--> measuring --window done--> measured
                                       ^                          |
                                       +------calc_dirty_rate-----+

The measurement runs in a background thread, as in QEMU: calc_dirty_rate
returns at once, query_dirty_rate reports the state.  A result stays until
the next calc_dirty_rate.
"""

import threading
import time
from dataclasses import dataclass

from ..errors import HarnessError
from .bitmap import DirtyBitmapTracker
from .engine import POLL_SECONDS, measure_window
from .ring import DirtyRingTracker
from .sampling import PageSamplingTracker
from .theory import expected_unique_pages, pages_to_mib_per_s

MODES = ("page-sampling", "dirty-ring", "dirty-bitmap")  # QEMU's DirtyRateMeasureMode
TIME_UNITS = {"second": 1000, "millisecond": 1}  # QEMU's TimeUnit, in ms
MIN_CALC_TIME_MS, MAX_CALC_TIME_MS = 50, 60000
MIN_SAMPLE_PAGES, MAX_SAMPLE_PAGES = 128, 16384
DEFAULT_SAMPLE_PAGES = 512


class DirtyRateError(HarnessError):
    """A QMP GenericError: the message is QEMU's, to the letter."""

    qmp_class = "GenericError"


@dataclass(frozen=True)
class VcpuDirtyRate:
    id: int
    guest_writes: int
    dirty_pages: int | None
    dirty_events: int | None
    dirty_rate: int | None  # MiB/s


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


def validate_calc_dirty_rate(calc_time, calc_time_unit, sample_pages, mode, enabled_modes):
    """calc-dirty-rate's argument checks after 'already measuring', in QEMU's
    order and words.  Returns (calc-time in ms, sample-pages per GiB)."""
    if calc_time_unit not in TIME_UNITS:
        raise DirtyRateError(f"Parameter 'calc-time-unit' does not accept value '{calc_time_unit}'")
    if mode not in MODES:
        raise DirtyRateError(f"Parameter 'mode' does not accept value '{mode}'")
    calc_time_ms = calc_time * TIME_UNITS[calc_time_unit]  # Python ints: no overflow (QEMU quirk)
    if not MIN_CALC_TIME_MS <= calc_time_ms <= MAX_CALC_TIME_MS:
        raise DirtyRateError(
            f"Calculation time is out of range [{MIN_CALC_TIME_MS}ms, {MAX_CALC_TIME_MS}ms]."
        )
    if sample_pages is not None and mode != "page-sampling":
        raise DirtyRateError("sample-pages is used only in page-sampling mode")
    if sample_pages is not None and not MIN_SAMPLE_PAGES <= sample_pages <= MAX_SAMPLE_PAGES:
        raise DirtyRateError(f"sample-pages is out of range[{MIN_SAMPLE_PAGES}, {MAX_SAMPLE_PAGES}].")
    if mode not in enabled_modes:
        raise DirtyRateError(f"mode {mode} is not enabled, use other method instead.")
    return calc_time_ms, DEFAULT_SAMPLE_PAGES if sample_pages is None else sample_pages


def enabled_modes(dirty_ring):
    """As QEMU: a VM with a dirty ring offers dirty-ring, not dirty-bitmap,
    and the other way round; page-sampling works in both."""
    return ("page-sampling", "dirty-ring") if dirty_ring else ("page-sampling", "dirty-bitmap")


def convert_time(ms, unit):
    """calc-time in `unit`, rounded down, as QEMU's convert_time_unit."""
    return ms // TIME_UNITS[unit]


class DirtyRateMonitor:
    def __init__(self, vm, poll_seconds=POLL_SECONDS):
        self.vm = vm
        self.poll_seconds = poll_seconds  # how often the tracker is polled (the ring reaper)
        self._lock = threading.Lock()
        self.status = "unstarted"
        self._config = None
        self._result = None
        self._error = None
        self._thread = None
        self._done = threading.Event()
        self.listeners = []  # called with the result when a measurement completes
        self._end_lead = {}  # per mode: the last end edge's lead (engine.py)

    @property
    def requested_unit(self):
        """The calc-time-unit of the last request ('second' before any)."""
        config = self._config
        return config["calc_time_unit"] if config else "second"

    @property
    def enabled_modes(self):
        return enabled_modes(self.vm.ring is not None)

    def calc_dirty_rate(self, calc_time, calc_time_unit="second", sample_pages=None, mode="page-sampling"):
        """Start a measurement; checks in QEMU's order, with QEMU's messages."""
        with self._lock:
            if self.status == "measuring":
                raise DirtyRateError("the dirty rate is already being measured.")
            calc_time_ms, sample_pages = validate_calc_dirty_rate(
                calc_time, calc_time_unit, sample_pages, mode, self.enabled_modes
            )
            self._config = {
                "calc_time_unit": calc_time_unit,
                "calc_time_ms": calc_time_ms,
                "sample_pages": sample_pages,
                "mode": mode,
                "start_time": int(time.time()),
            }
            self.status = "measuring"
            self._result = self._error = None
            self._done.clear()
            self._thread = threading.Thread(target=self._measure, args=(dict(self._config),),
                                            name="calc-dirty-rate", daemon=True)
            self._thread.start()

    def _tracker(self, config):
        mode = config["mode"]
        if mode == "dirty-bitmap":
            return DirtyBitmapTracker(self.vm)
        if mode == "dirty-ring":
            return DirtyRingTracker(self.vm)
        return PageSamplingTracker(self.vm, config["sample_pages"])

    def _measure(self, config):
        result = error = None
        try:
            mode = config["mode"]
            window = measure_window(self._tracker(config), config["calc_time_ms"] / 1000,
                                    self._end_lead.get(mode), self.poll_seconds)
            self._end_lead[mode] = window.end.lead
            result = self._result_of(config, window)
        except BaseException as e:  # reported through query / wait, never lost
            error = e
        with self._lock:
            self._result, self._error = result, error
            self.status = "measured"
            self._done.set()
        for listener in list(self.listeners):
            listener(self, result, error)

    def _result_of(self, config, window):
        vm, count = self.vm, window.count
        seconds = window.seconds
        writes = window.guest_writes()
        logs = vm.logs
        expected = sum(
            expected_unique_pages(w, log.segments[-1][1].npages, log.segments[-1][1].pattern)
            for w, log in zip(writes, logs)
        )
        vcpus = []
        for k, w in enumerate(writes):
            pages = count.vcpu_pages[k] if count.vcpu_pages else None
            events = count.vcpu_events[k] if count.vcpu_events else None
            rate = int(pages_to_mib_per_s(pages, seconds)) if pages is not None else None
            vcpus.append(VcpuDirtyRate(k, w, pages, events, rate))
        confidence = None
        if count.confidence_pages:
            confidence = tuple(pages_to_mib_per_s(p, seconds) for p in count.confidence_pages)
        sampling = config["mode"] == "page-sampling"
        return DirtyRateResult(
            mode=config["mode"],
            start_time=config["start_time"],
            calc_time_ms=config["calc_time_ms"],
            window_us=round(seconds * 1e6),
            sample_pages=config["sample_pages"] if sampling else 0,
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
        )

    def wait(self, timeout=None):
        """Block until the measurement started last is done; its result."""
        if self.status == "unstarted":
            raise HarnessError("no dirty rate measurement has been started")
        if not self._done.wait(timeout):
            raise HarnessError("the dirty rate measurement did not finish in time")
        if self._error is not None:
            if isinstance(self._error, HarnessError):
                raise self._error
            raise HarnessError(f"the dirty rate measurement failed: {self._error!r}") from self._error
        return self._result

    def measure(self, calc_time, calc_time_unit="second", sample_pages=None, mode="page-sampling"):
        """calc_dirty_rate, then wait for its result."""
        self.calc_dirty_rate(calc_time, calc_time_unit, sample_pages, mode)
        return self.wait(calc_time * TIME_UNITS[calc_time_unit] / 1000 + 60)

    def query_dirty_rate(self, calc_time_unit="second"):
        """DirtyRateInfo as QMP returns it, plus our x- fields once measured."""
        if calc_time_unit not in TIME_UNITS:
            raise DirtyRateError(f"Parameter 'calc-time-unit' does not accept value '{calc_time_unit}'")
        with self._lock:
            status, config, result, error = self.status, self._config, self._result, self._error
        if config is None:
            return {"status": status, "start-time": 0, "calc-time": 0, "calc-time-unit": calc_time_unit,
                    "sample-pages": 0, "mode": "page-sampling"}
        info = {
            "status": status,
            "start-time": config["start_time"],
            "calc-time-unit": calc_time_unit,
            "mode": config["mode"],
        }
        if status == "measuring" or result is None:
            info["calc-time"] = convert_time(config["calc_time_ms"], calc_time_unit)
            info["sample-pages"] = config["sample_pages"]
            if status == "measured":  # failed: QEMU leaves dirty-rate at -1
                info["dirty-rate"] = -1
                info["x-error"] = str(error)
            return info
        return info | result_fields(result, calc_time_unit)


def result_fields(result, calc_time_unit):
    """The measured part of DirtyRateInfo, plus the x- fields."""
    fields = {
        "calc-time": convert_time(result.window_us // 1000, calc_time_unit),
        "sample-pages": result.sample_pages,
        "dirty-rate": result.dirty_rate,
    }
    if result.mode == "dirty-ring":
        fields["vcpu-dirty-rate"] = [{"id": v.id, "dirty-rate": v.dirty_rate} for v in result.vcpus]
    fields.update({
        "x-dirty-pages": round(result.dirty_pages, 1) if result.mode == "page-sampling"
        else int(result.dirty_pages),
        "x-dirty-events": result.dirty_events,
        "x-guest-writes": result.guest_writes,
        "x-window-us": result.window_us,
        "x-expected-rate": round(result.expected_rate, 3),
        "x-confidence": None if result.confidence is None
        else {"low": round(result.confidence[0], 3), "high": round(result.confidence[1], 3), "level": 0.95},
        "x-overhead": result.overhead,
        "x-vcpu": [
            {"id": v.id, "guest-writes": v.guest_writes, "dirty-pages": v.dirty_pages,
             "dirty-events": v.dirty_events}
            for v in result.vcpus
        ],
        "x-edges": {side: [list(pair) for pair in pairs] for side, pairs in result.edges.items()},
    })
    if result.samples is not None:
        fields["x-samples"] = result.samples
        fields["x-dirty-samples"] = result.dirty_samples
    return fields
