"""`predict`: measure dirty(t) on the running guest, then give the seed's
one-window verdict and the pre-copy model's, for one link or a table.

dirty(t) comes from one calc-dirty-rate window with x-periods (the whole
curve from one clean start, as the seed author's unmerged series measured
it).  How far that window runs is the curve measurement (CURVES):

* "short" (the default; the evidence: scripts/rescore_predictions.py and
  docs/results/predict/README.md): up to a horizon of a few downtimes, at most
  SHORT_HORIZON_MAX; past it the working-set model fitted to the points
  (working_set.py) carries the curve to the first iteration's length, so a
  prediction takes about two seconds whatever the guest's size;
* "full": up to the first iteration's length (a full copy over the
  slowest link, at most LONGEST_DEFAULT_MS), the model only beyond;
* "separate": the full ladder, one window per point (as before one-window
  curves; kept to compare: scripts/bench_predict.py).
"""

import dataclasses
import math
import time
from dataclasses import dataclass

from ..dirtyrate.monitor import MAX_CALC_TIME_MS, MIN_CALC_TIME_MS, default_periods
from ..convergence.trigger import ThrottleParameters
from .model import PAGE_SIZE, PAGE_WIRE_BYTES, DirtyCurve, seed_verdict, simulate_precopy
from .stream import VCPU_BYTES
from .working_set import fit

BASE_WINDOWS_MS = (50, 100, 200, 500, 1000, 2000, 5000)
LONGEST_DEFAULT_MS = 10_000
TABLE_BANDWIDTHS = (100e6, 1e9, 2.5e9, 10e9, 25e9)
TABLE_DOWNTIMES = (0.05, 0.1, 0.3, 1.0, math.inf)  # inf: unlimited downtime (stop after one pass)
CURVES = ("short", "full", "separate")
SHORT_HORIZON_MIN, SHORT_HORIZON_MAX = 1.0, 2.0  # seconds
SHORT_HORIZON_DOWNTIMES = 4  # the short curve runs this many downtimes (within the bounds above)


def first_pass_seconds(npages, slowest_link):
    """How long the first iteration (a full copy) takes over the slowest
    link: the longest time the model needs dirty(t) at."""
    return npages * PAGE_WIRE_BYTES / slowest_link.goodput


def short_horizon(downtimes, npages, slowest_link):
    """Seconds the short curve measures: SHORT_HORIZON_DOWNTIMES downtimes,
    between SHORT_HORIZON_MIN and _MAX, never past the first pass (nothing
    to extrapolate then) and never short of a downtime asked about (the
    seed's rule needs that window)."""
    finite = [d for d in downtimes if math.isfinite(d)]
    horizon = min(max(SHORT_HORIZON_DOWNTIMES * max(finite, default=0.0), SHORT_HORIZON_MIN), SHORT_HORIZON_MAX)
    return max(min(horizon, first_pass_seconds(npages, slowest_link)), max(finite, default=0.0))


def curve_windows(downtimes, npages, slowest_link, longest_ms=LONGEST_DEFAULT_MS, dense=False, horizon=None):
    """The windows to measure: every downtime asked about (the seed's rule
    needs a window of exactly that length), and a ladder from 50 ms up to
    the first iteration's length (a full copy over the slowest link),
    capped at `longest_ms` and at `horizon` seconds when given; the model
    extrapolates beyond.  `dense` adds the default x-periods (free when
    the curve comes from one window)."""
    top = min(max(first_pass_seconds(npages, slowest_link) * 1e3, max(downtimes) * 1e3), longest_ms,
              MAX_CALC_TIME_MS)
    if horizon is not None:
        top = min(top, horizon * 1e3)
    ladder = [w for w in BASE_WINDOWS_MS if w <= top] + [int(top)]
    if dense:
        ladder += list(default_periods(int(top)))
    wanted = {round(d * 1e3) for d in downtimes if math.isfinite(d)} | set(ladder)
    return sorted(w for w in wanted if MIN_CALC_TIME_MS <= w <= MAX_CALC_TIME_MS)


@dataclass(frozen=True)
class CurveMeasurement:
    curve: DirtyCurve
    zero_pages: float  # at the end of the measurement
    seconds: float  # wall time it took
    how: str = "full"  # CURVES
    needed: float = 0.0  # seconds of dirty(t) the first pass needs (over the slowest link)
    resident_pages: int | None = None  # pages the first pass sends, where more than the curve's (QEMU's RAM blocks)
    scan_seconds: float = 0.0  # what finding the zero pages adds to the first pass (QEMU reads every page)

    @property
    def model_options(self):
        """simulate_precopy's arguments this measurement settles."""
        return {"zero_pages": self.zero_pages, "resident_pages": self.resident_pages,
                "scan_seconds": self.scan_seconds}

    @property
    def horizon(self):
        """The longest window measured (seconds)."""
        return self.curve.points[-1][0]

    @property
    def extrapolated(self):
        """Seconds past the horizon the model carries the curve (0: none,
        also where the full curve's last window fell a hair short)."""
        beyond = self.needed - self.horizon
        return beyond if beyond > 0.01 * self.needed else 0.0

    def to_json(self):
        model = self.curve.model
        return {"curve-measurement": self.how, "curve-seconds": round(self.seconds, 3),
                "curve-horizon-ms": round(self.horizon * 1e3, 3), "curve-needed-ms": round(self.needed * 1e3, 3),
                "curve-extrapolated-ms": round(self.extrapolated * 1e3, 3),
                "working-set": model.to_json() if model else None}

    def describe(self):
        """One line: how far the curve was measured, and what carried it on."""
        model = self.curve.model
        if not self.extrapolated:
            return f"measured up to {self.horizon * 1e3:.0f} ms, all the first pass needs"
        if not any(p for _, p in self.curve.points):
            return f"measured up to {self.horizon * 1e3:.0f} ms: nothing was dirtied, so nothing is extrapolated"
        carried = (f"the working-set model ({model.describe()}, RMS error {model.rms * 100:.2f} %)" if model else
                   "the saturating law N (1 - exp(-r t / N)) (too few points to fit a working set)")
        return (f"measured up to {self.horizon * 1e3:.0f} ms; {carried} extrapolates it "
                f"{self.extrapolated * 1e3:.0f} ms further, to the first pass's {self.needed * 1e3:.0f} ms")


def fitted_curve(points, npages, needed):
    """DirtyCurve over `points` with the working-set model fitted for
    extrapolating to `needed` seconds (the saturating law when the points
    cannot carry a fit)."""
    points = tuple(sorted(points))
    return DirtyCurve(points, npages, fit(points, npages, needed))


def measure_curve(vm, monitor, mode, windows_ms, how="full", needed=0.0):
    """dirty(t) at `windows_ms`: one window with a period at each, or one
    window per point (how="separate")."""
    t0 = time.perf_counter()
    if how != "separate":
        result = monitor.measure(windows_ms[-1], "millisecond", mode=mode, periods=list(windows_ms))
        points = [(p.window_us / 1e6, float(p.dirty_pages)) for p in result.periods]
    else:
        results = [monitor.measure(ms, "millisecond", mode=mode) for ms in windows_ms]
        points = [(r.window_us / 1e6, float(r.dirty_pages)) for r in results]
        result = results[-1]
    return CurveMeasurement(fitted_curve(points, vm.slot_pages, needed), result.zero_pages or 0.0,
                            time.perf_counter() - t0, how, needed)


@dataclass(frozen=True)
class Verdict:
    bits_per_second: float
    downtime: float
    seed: dict
    model: object  # Prediction
    switch_seconds: float = 0.0  # the switch-over's fixed cost the model counted

    def to_json(self):
        downtime = round(self.downtime * 1e3, 3) if math.isfinite(self.downtime) else None  # null: unlimited
        return {"bandwidth-bps": self.bits_per_second, "downtime-ms": downtime,
                "seed-verdict": self.seed, "model": self.model.to_json(), "converges": self.model.converges}


def verdict(curve, link, downtime, max_iterations=30, switch_seconds=0.0, zero_pages=0.0, **model):
    """Both verdicts; `model`: simulate_precopy's resident_pages and
    scan_seconds (a QEMU VM's RAM blocks and zero pages)."""
    if math.isinf(downtime):  # no downtime limit: the seed's rule has nothing to measure
        seed = {"converges": True, "dirty-bytes": None, "transfer-seconds": None}
    else:
        seed = seed_verdict(curve.at(downtime), downtime, link)
    return Verdict(link.bits_per_second, downtime, seed,
                   simulate_precopy(curve, link, downtime, max_iterations, switch_seconds=switch_seconds,
                                    zero_pages=zero_pages, **model), switch_seconds)


def switch_over_cost(vm, link):
    """Seconds our switch-over adds to the final copy: what crosses besides
    the pages (the control slot, each vCPU's registers, the HASHES record of
    8 bytes a page; the hashes themselves are taken while pages move).  The
    first validation run left these out and under-predicted downtime by a
    median 41 ms: the 2 MiB control slot alone takes 34 ms at 500 Mbit/s."""
    return switch_over_bytes(vm.control.size, len(vm.vcpus), vm.slot_pages) / link.goodput


def switch_over_bytes(control_bytes, vcpus, npages):
    """switch_over_cost's bytes, from the VM's dimensions (re-scoring a
    stored validation has no VM: microvm.machine.control_slot_size)."""
    return control_bytes + vcpus * VCPU_BYTES + npages * 8


def predict_for(vm, links, downtimes, mode="dirty-bitmap", max_iterations=30, curve="short"):
    """Measure this VM's dirty(t) once (`curve`: CURVES) and predict its
    migration over every link and downtime: (CurveMeasurement,
    {(link, downtime): Verdict})."""
    from ..dirtyrate import DirtyRateMonitor

    slowest = min(links, key=lambda link: link.goodput)
    horizon = short_horizon(downtimes, vm.slot_pages, slowest) if curve == "short" else None
    windows = curve_windows(downtimes, vm.slot_pages, slowest, dense=curve != "separate", horizon=horizon)
    measured = measure_curve(vm, DirtyRateMonitor(vm), mode, windows, curve,
                             first_pass_seconds(vm.slot_pages, slowest))
    return measured, {(link, d): verdict(measured.curve, link, d, max_iterations, switch_over_cost(vm, link),
                                         **measured.model_options)
                      for link in links for d in downtimes}


@dataclass(frozen=True)
class AidAdvice:
    """predict's answer for one link and downtime: converges without aid,
    with auto-converge (QEMU's parameters; at which throttle), with a dirty
    limit (the largest per-vCPU quota that converges), or not at all."""

    none: object  # Prediction
    auto_converge: object  # Prediction with auto-converge
    dirty_limit: object  # Prediction with the largest converging quota, or with the smallest (1 MB/s)
    dirty_limit_mb_s: int | None  # that quota; None if no quota converges

    @property
    def answer(self):
        if self.none.converges:
            return "converges without aid"
        options = []
        if self.auto_converge.converges:
            options.append(f"with auto-converge at ~{self.auto_converge.final_level} %")
        if self.dirty_limit_mb_s is not None:
            options.append(f"with a dirty limit of {self.dirty_limit_mb_s} MB/s per vCPU")
        return "converges " + " or ".join(options) if options else "does not converge, with or without aid"

    def to_json(self):
        return {"answer": self.answer, "none": self.none.to_json(), "auto-converge": self.auto_converge.to_json(),
                "dirty-limit": self.dirty_limit.to_json(), "dirty-limit-mb-s": self.dirty_limit_mb_s}


def advise(curve, link, downtime, vcpus=1, max_iterations=100, params=ThrottleParameters(), **model):
    """Model the migration without aid, with auto-converge, and with dirty
    limits: the largest quota (MB/s per vCPU, whole) that still converges,
    found by bisection between 1 MB/s and the guest's own per-vCPU rate
    (a larger quota would not slow it).  Convergence is monotone in the
    quota as far as the model goes: a smaller quota never dirties more."""
    def run(aid, p=params):
        return simulate_precopy(curve, link, downtime, max_iterations, aid=aid, params=p, vcpus=vcpus, **model)

    def with_limit(q):
        return run("dirty-limit", dataclasses.replace(params, vcpu_dirty_limit=q))

    none, throttled = run(None), run("auto-converge")
    rate = math.ceil(curve.rate * PAGE_SIZE / (1 << 20) / max(vcpus, 1))
    low = with_limit(1)
    if not low.converges:
        return AidAdvice(none, throttled, low, None)
    good, bad = 1, max(rate, 2)
    best = low
    while bad - good > 1:
        mid = (good + bad) // 2
        p = with_limit(mid)
        if p.converges:
            good, best = mid, p
        else:
            bad = mid
    return AidAdvice(none, throttled, best, good)
