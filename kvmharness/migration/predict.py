"""`predict`: measure dirty(t) on the running guest, then give the seed's
one-window verdict and the pre-copy model's, for one link or a table."""

import time
from dataclasses import dataclass

from ..dirtyrate.monitor import MAX_CALC_TIME_MS, MIN_CALC_TIME_MS
from .model import PAGE_WIRE_BYTES, DirtyCurve, seed_verdict, simulate_precopy

BASE_WINDOWS_MS = (50, 100, 200, 500, 1000, 2000, 5000)
LONGEST_DEFAULT_MS = 10_000
TABLE_BANDWIDTHS = (100e6, 1e9, 10e9, 25e9)
TABLE_DOWNTIMES = (0.05, 0.1, 0.3, 1.0)


def curve_windows(downtimes, npages, slowest_link, longest_ms=LONGEST_DEFAULT_MS):
    """The windows to measure: every downtime asked about (the seed's rule
    needs a window of exactly that length), and a ladder from 50 ms up to
    the first iteration's length (a full copy over the slowest link),
    capped at `longest_ms`; the model extrapolates beyond."""
    full_copy_ms = npages * PAGE_WIRE_BYTES / slowest_link.goodput * 1e3
    top = min(max(full_copy_ms, max(downtimes) * 1e3), longest_ms, MAX_CALC_TIME_MS)
    ladder = [w for w in BASE_WINDOWS_MS if w <= top] + [int(top)]
    wanted = {round(d * 1e3) for d in downtimes} | set(ladder)
    return sorted(w for w in wanted if MIN_CALC_TIME_MS <= w <= MAX_CALC_TIME_MS)


def measure_curve(vm, monitor, mode, windows_ms):
    points = []
    for ms in windows_ms:
        result = monitor.measure(ms, "millisecond", mode=mode)
        points.append((result.window_us / 1e6, float(result.dirty_pages)))
    return DirtyCurve(tuple(sorted(points)), vm.slot_pages)


@dataclass(frozen=True)
class Verdict:
    bits_per_second: float
    downtime: float
    seed: dict
    model: object  # Prediction

    def to_json(self):
        return {"bandwidth-bps": self.bits_per_second, "downtime-ms": round(self.downtime * 1e3, 3),
                "seed-verdict": self.seed, "model": self.model.to_json(), "converges": self.model.converges}


def verdict(curve, link, downtime, max_iterations=30, switch_seconds=0.0):
    return Verdict(link.bits_per_second, downtime, seed_verdict(curve.at(downtime), downtime, link),
                   simulate_precopy(curve, link, downtime, max_iterations, switch_seconds=switch_seconds))


def switch_over_cost(vm):
    """Seconds our switch-over adds to the final copy: every page hashed on
    the source, then again on the destination (same speed assumed)."""
    t0 = time.perf_counter()
    vm.page_hashes()
    return 2 * (time.perf_counter() - t0)


def predict_for(vm, links, downtimes, mode="dirty-bitmap", max_iterations=30):
    """Measure this VM's dirty(t) once and predict its migration over every
    link and downtime: (curve, {(link, downtime): Verdict})."""
    from ..dirtyrate import DirtyRateMonitor

    windows = curve_windows(downtimes, vm.slot_pages, min(links, key=lambda link: link.goodput))
    curve = measure_curve(vm, DirtyRateMonitor(vm), mode, windows)
    switch = switch_over_cost(vm)
    return curve, {(link, d): verdict(curve, link, d, max_iterations, switch) for link in links for d in downtimes}
