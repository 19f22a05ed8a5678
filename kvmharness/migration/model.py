"""Predicting pre-copy live migration from a measured dirty(t) curve.

Two verdicts:

* the seed's: measure with calc-time set to the allowed downtime, turn the
  rate into the volume dirtied in that time, divide by the bandwidth; the
  migration converges if that fits in the downtime;
* an iterative pre-copy model (after the seed author's unmerged predictor,
  qemu-devel "Migration time prediction using calc-dirty-rate", 2023):
  iteration 0 copies every page; iteration i
  copies the pages dirtied during iteration i-1, i.e. dirty(T[i-1]) for the
  measured curve; switch over, as QEMU does, once what is left fits in
  bandwidth x downtime limit, unless one more pass would take less than
  half as long as the last (switch_now: the source follows the same rule).  Every page costs 4096 + 8 bytes on the wire
  (QEMU's page header; our stream's is the same size), and the link's
  TCP/IP framing is counted (reviewers of the seed asked for it).
"""

import math
from dataclasses import dataclass

from ..convergence.trigger import ThrottleParameters, ThrottleTrigger
from ..microvm.guest import PAGE_SIZE
from .stream import ZERO_WIRE_BYTES
from .working_set import bounds

PAGE_WIRE_BYTES = PAGE_SIZE + 8
# TCP over Ethernet, MTU 1500: 1448 payload bytes (20 IP + 20 TCP + 12
# timestamp option) per 1538 bytes on the wire (frame, preamble, gap).
TCP_EFFICIENCY = 1448 / 1538


@dataclass(frozen=True)
class Link:
    bits_per_second: float
    tcp_overhead: bool = True

    @property
    def goodput(self):
        """Payload bytes per second."""
        return self.bits_per_second / 8 * (TCP_EFFICIENCY if self.tcp_overhead else 1.0)


@dataclass(frozen=True)
class DirtyCurve:
    """Unique pages dirtied within t seconds, from windows measured in a row.

    Between points: linear.  Beyond the longest window: the working-set
    model fitted to the points where one is given (working_set.py, kept
    within what a concave curve through the points allows), else the
    saturating law N (1 - exp(-r t / N)) that a uniform writer follows (the
    seed's formula), with r fitted to the measured points (median of the
    per-point solutions).
    """

    points: tuple  # ((seconds, pages), ...) ascending
    npages: int
    model: object = None  # working_set.WorkingSet fitted to the points, or None

    def __post_init__(self):
        if not self.points:
            raise ValueError("a dirty curve needs at least one measured window")

    @property
    def rate(self):
        """Fitted unique-page dirtying rate at t -> 0 (pages/s)."""
        estimates = []
        for t, d in self.points:
            if 0 < d < self.npages:
                estimates.append(-self.npages * math.log1p(-d / self.npages) / t)
        if not estimates:
            return math.inf if any(d >= self.npages for _, d in self.points) else 0.0
        estimates.sort()
        return estimates[len(estimates) // 2]

    def at(self, t):
        if t <= 0:
            return 0.0
        xs = [0.0] + [p[0] for p in self.points]
        ys = [0.0] + [p[1] for p in self.points]
        if t <= xs[-1]:
            for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
                if t <= x1:
                    return y0 + (y1 - y0) * (t - x0) / (x1 - x0)
        if self.model is not None:
            low, high = bounds(self.points, t)
            return max(low, min(float(self.npages), high, self.model.at(t)))
        r = self.rate
        if math.isinf(r):
            return float(self.npages)
        law = -self.npages * math.expm1(-r * t / self.npages)
        return max(ys[-1], min(float(self.npages), law))


@dataclass(frozen=True)
class Iteration:
    """One pre-copy pass, predicted or measured."""

    pages: float
    bytes: float
    seconds: float


@dataclass(frozen=True)
class Prediction:
    converges: bool
    iterations: tuple  # Iteration, the copies before the switch-over
    downtime_seconds: float  # the final copy, vCPUs stopped
    total_seconds: float
    reason: str
    aid: str | None = None
    levels: tuple = ()  # the aid's level during each iteration
    steps: tuple = ()  # (seconds, iteration, level) when the trigger fired
    slowdown: float = 0.0  # share of the guest's pace lost while it ran during the migration

    @property
    def final_level(self):
        return self.levels[-1] if self.levels else 0

    def to_json(self):
        out = self._core_json()
        if self.aid:
            out.update({"aid": self.aid, "final-level": self.final_level, "levels-per-iteration": list(self.levels),
                        "throttle-steps": [{"seconds": round(t, 3), "iteration": i, "level": v}
                                           for t, i, v in self.steps],
                        "guest-slowdown": round(self.slowdown, 4)})
        return out

    def _core_json(self):
        return {
            "converges": self.converges,
            "iterations": [{"pages": round(i.pages), "bytes": round(i.bytes), "seconds": round(i.seconds, 6)}
                           for i in self.iterations],
            "downtime-seconds": round(self.downtime_seconds, 6),
            "total-seconds": round(self.total_seconds, 6),
            "reason": self.reason,
        }


def seed_verdict(dirty_pages_in_downtime, downtime, link):
    """The seed's one-window rule: volume dirtied in `downtime` over the link."""
    volume = dirty_pages_in_downtime * PAGE_SIZE
    transfer = volume / link.goodput
    return {"converges": transfer <= downtime, "dirty-bytes": round(volume),
            "transfer-seconds": round(transfer, 6)}


def switch_now(pending_bytes, limit_bytes, bytes_per_second, last_seconds, iterations, max_iterations):
    """The switch-over rule, shared by the source and the model: QEMU's
    (what is left fits in bandwidth x downtime limit), refined: while one
    more pass would take less than half as long as the last (so, dirtying
    at the same pace, leave about half as much for the downtime), take it.
    On a fast link QEMU's rule alone stops as soon as the pages left fit
    the limit, however large that leaves the downtime: 110-190 ms for a
    512 MiB guest at 200 k writes/s over loopback against 82-90 ms with
    the refinement (scripts/bench_migration.py)."""
    if pending_bytes > limit_bytes:
        return False
    if iterations >= max_iterations or pending_bytes < PAGE_WIRE_BYTES:  # nothing left: a model's
        return True  # geometric tail (pages dirtied per pass halving or faster) never reaches 0 exactly
    return pending_bytes / bytes_per_second >= last_seconds / 2


def aid_scale(aid, level, vcpu_rate_mb_s):
    """How fast the guest dirties under an aid at `level`, as a fraction of
    its own pace: auto-converge at p % leaves each vCPU (1 - p) of its time;
    a dirty limit of Q MB/s holds a vCPU that would dirty r MB/s to Q / r.
    Both slow the writer's clock alike, so dirty(t) becomes dirty(scale x t)."""
    if not level or aid is None:
        return 1.0
    if aid == "auto-converge":
        return 1 - level / 100
    return min(1.0, level / vcpu_rate_mb_s) if vcpu_rate_mb_s > 0 else 1.0


def simulate_precopy(curve, link, downtime, max_iterations=30, resident_pages=None, switch_seconds=0.0,
                     zero_pages=0, aid=None, params=ThrottleParameters(), vcpus=1, scan_seconds=0.0):
    """Iterate pre-copy on the curve; the source's switch-over rule.  The predicted
    downtime is the last copy plus `switch_seconds`, the fixed cost of the
    switch-over itself (for us: hashing every page on both sides).
    Iteration 0 sends `zero_pages` as flags (ZERO_WIRE_BYTES each) and
    takes `scan_seconds` more to find them (QEMU reads every page to tell;
    for a VM of zero pages that, not the wire, is the time); the pages
    dirtied later hold data.  `aid` ("auto-converge", "dirty-limit"
    or None) with `params` runs QEMU's trigger (convergence/trigger.py) at
    every sync, as the source does, and slows the curve by aid_scale."""
    npages = curve.npages if resident_pages is None else resident_pages
    zero_pages = min(max(zero_pages, 0), npages)
    limit_bytes = link.goodput * downtime
    vcpu_rate = curve.rate * PAGE_SIZE / (1 << 20) / max(vcpus, 1)  # MB/s per vCPU, unthrottled
    trigger = ThrottleTrigger(aid, params)
    trigger.sync(0.0, 0, 0)
    first = (npages - zero_pages) * PAGE_WIRE_BYTES + zero_pages * ZERO_WIRE_BYTES
    iterations = [Iteration(npages, first, first / link.goodput + scan_seconds)]
    levels, steps = [0], []
    elapsed, sent = iterations[0].seconds, first
    best = math.inf
    stalled = 0

    def done(converges, pending_bytes, reason, final=0.0):
        total = sum(i.seconds for i in iterations) + final
        return Prediction(converges, tuple(iterations), final if converges else pending_bytes / link.goodput,
                          total, reason, aid, tuple(levels), tuple(steps),
                          _slowdown(iterations, levels, aid, vcpu_rate, final))

    while True:
        scale = aid_scale(aid, levels[-1], vcpu_rate)
        pending = curve.at(iterations[-1].seconds * scale)
        pending_bytes = pending * PAGE_WIRE_BYTES
        step = trigger.sync(elapsed, pending, sent)
        if step is not None:
            steps.append((elapsed, len(iterations), step.level))
            stalled, best = 0, math.inf  # the aid changed: progress is possible again
        if switch_now(pending_bytes, limit_bytes, link.goodput, iterations[-1].seconds, len(iterations),
                      max_iterations):
            return done(True, pending_bytes, f"switch-over after {len(iterations)} iterations",
                        pending_bytes / link.goodput + switch_seconds)
        if len(iterations) >= max_iterations:
            return done(False, pending_bytes, f"still {round(pending)} pages to copy after {max_iterations} iterations")
        stalled = stalled + 1 if pending >= best * 0.999 else 0
        best = min(best, pending)
        if stalled >= 3 and not _aid_can_rise(aid, trigger, params):
            return done(False, pending_bytes, f"no progress: {round(pending)} pages dirtied per iteration, "
                                              f"{round(limit_bytes / PAGE_WIRE_BYTES)} fit in the downtime")
        iterations.append(Iteration(pending, pending_bytes, pending_bytes / link.goodput))
        levels.append(trigger.level)
        elapsed += iterations[-1].seconds
        sent += pending_bytes


def _aid_can_rise(aid, trigger, params):
    """Whether the aid may still slow the guest further (so a stall may end)."""
    if aid == "auto-converge":
        return trigger.level < min(params.max_cpu_throttle, 99)
    if aid == "dirty-limit":
        return trigger.level != params.vcpu_dirty_limit
    return False


def _slowdown(iterations, levels, aid, vcpu_rate, final):
    """The share of its pace the guest loses over the migration's live
    part (the downtime stops it whatever the aid)."""
    live = sum(i.seconds for i in iterations)
    if not live:
        return 0.0
    return sum(i.seconds * (1 - aid_scale(aid, level, vcpu_rate)) for i, level in zip(iterations, levels)) / live
