"""dirty(t) of any running QEMU VM, from QMP alone, for `predict --qmp`.

No access to the VM's memory is assumed: the curve is what calc-dirty-rate
answers, one window per point, rate (MiB/s, whole) x window = dirtied MiB.
A QEMU with calc-time-unit (8.2+, the seed's patch) gets the same ladder
of windows as our own `predict` (50 ms up to the first iteration's length);
an older one only whole seconds.  Then the curve has no point below 1 s,
and dirty(d) for a downtime d < 1 s is read off the line from the origin to
dirty(1 s): d x dirty(1 s).  dirty(t) is concave (a page dirtied twice
counts once), so that under-estimates the dirty volume of a short window
and the verdict leans optimistic; the output says so.
"""

import dataclasses
import math
import time
from dataclasses import dataclass

from ..errors import QmpError, UsageError
from ..migration.model import PAGE_SIZE
from ..migration.predict import (CurveMeasurement, curve_windows, first_pass_seconds, fitted_curve, short_horizon,
                                 verdict)
from ..qmp.client import QmpClient
from ..qmp import replies
from . import zero_pages
from .dirty_rate import calc_dirty_rate, calc_support

MIB = 1 << 20
LONGEST_SECONDS_WINDOW_MS = 10_000  # whole-second ladders stop here: a 7.2 curve costs their sum


@dataclass(frozen=True)
class QmpTarget:
    """What the QMP peer is and what it let us measure."""

    address: str
    version: tuple | None
    ram_bytes: int
    vcpus: int
    support: object  # CalcSupport
    mode: str  # the mode dirty(t) was measured in
    windows_ms: tuple
    notes: tuple  # what limits the prediction, in words
    answers: tuple = ()  # the QemuDirtyRate of each window
    zeros: object = None  # zero_pages.ZeroPageEstimate of its RAM


def windows_for(support, downtimes, npages, slowest_link, curve="short"):
    """The windows to measure, one calc-dirty-rate each (QEMU has no
    x-periods, so their sum is what a prediction waits).  The short curve:
    50 and 100 ms, the downtimes, half the horizon and the horizon; the full
    one: our own `predict`'s ladder.  A QEMU without millisecond windows
    gets each rounded up to whole seconds."""
    if curve == "short":
        horizon = short_horizon(downtimes, npages, slowest_link)
        ladder = sorted({50, 100, round(horizon * 500), round(horizon * 1000)}
                        | {round(d * 1000) for d in downtimes if math.isfinite(d)})
        ladder = [ms for ms in ladder if ms <= horizon * 1000]
    else:
        ladder = curve_windows(downtimes, npages, slowest_link)
    if support.millisecond:
        return tuple(ladder)
    seconds = sorted({max(1, math.ceil(ms / 1000)) * 1000 for ms in ladder if ms <= LONGEST_SECONDS_WINDOW_MS})
    return tuple(seconds)


def measure_points(client, support, mode, windows, counter=None):
    """dirty(t) at `windows` (ms), one calc-dirty-rate each: ((seconds,
    pages), ...) and the QemuDirtyRate answers (with the guest's counter
    readings where `counter` is given)."""
    points, answers = [], []
    for ms in windows:
        m = calc_dirty_rate(client, support, ms, mode, counter=counter)
        points.append((ms / 1000, m.dirty_rate * MIB / PAGE_SIZE * ms / 1000))
        answers.append(m)
    return tuple(points), tuple(answers)


def predict_over_qmp(address, links, downtimes, mode, max_iterations, curve="short"):
    """(QmpTarget, CurveMeasurement, {(link, downtime): Verdict})."""
    with QmpClient(address) as client:
        return predict_with(client, address, links, downtimes, mode, max_iterations, curve=curve)


def predict_with(client, address, links, downtimes, mode, max_iterations, counter=None, seconds_only=False,
                 curve="short", zeros=True):
    """predict_over_qmp on an open session; with `counter`, the guest's
    counter is read during each window (QmpTarget.answers keeps them).
    `seconds_only` measures whole seconds even where the QEMU has
    millisecond windows: what a QEMU before 8.2 would give (the seed's claim
    is tested by the difference).  `curve`: "short" (a horizon of a few
    downtimes, the working-set model beyond) or "full" (the whole first
    pass, as before).  `zeros`: estimate the VM's zero pages from the QEMU
    process where it runs on this host (zero_pages.py); else all RAM is
    counted as data, as QMP alone must."""
    support = calc_support(client)
    if seconds_only and support.millisecond:
        support = dataclasses.replace(support, millisecond=False, source=f"{support.source}, whole seconds asked")
    ram = replies.whole(client, "query-memory-size-summary", client.execute("query-memory-size-summary"),
                        "base-memory", PAGE_SIZE, replies.MAX_RAM)
    vcpus = len(replies.items(client, "query-cpus-fast", client.execute("query-cpus-fast"), low=1))
    npages = ram // PAGE_SIZE
    slowest = min(links, key=lambda link: link.goodput)
    windows = windows_for(support, downtimes, npages, slowest, curve)
    notes = [f"windows measured: {', '.join(f'{w} ms' for w in windows)} ({support.windows_note()}, "
             f"known from {support.source})"]
    if mode not in support.modes:
        raise UsageError(f"this QEMU offers {', '.join(support.modes)}, not {mode}")
    t0 = time.perf_counter()
    try:
        points, answers = measure_points(client, support, mode, windows, counter)
    except QmpError as e:
        if mode != "dirty-bitmap" or "page-sampling" not in support.modes:
            raise
        notes.append(f"dirty-bitmap refused ({e}): measured with page-sampling, an estimate")
        mode = "page-sampling"
        points, answers = measure_points(client, support, mode, windows, counter)
    seconds = time.perf_counter() - t0
    short = [d for d in downtimes if math.isfinite(d) and d * 1000 < windows[0]]
    if short:
        notes.append(f"no window shorter than {windows[0]} ms: dirty({', '.join(f'{d * 1e3:g} ms' for d in short)}) "
                     f"is taken on the line to dirty({windows[0]} ms), which under-estimates a concave curve "
                     f"(the seed's patch, QEMU 8.2+, measures it directly)")
    if mode == "dirty-ring":
        notes.append("dirty-ring mode counts ring entries, not pages (a page re-dirtied after a reset counts "
                     "again): it over-states dirty(t) (see qemu-check)")
    needed = first_pass_seconds(npages, slowest)
    found = zero_pages.estimate(client) if zeros else zero_pages.unknown("not asked for")
    notes.append(found.describe())
    measured = CurveMeasurement(fitted_curve(points, npages, needed), found.zero, seconds, curve, needed,
                                found.pages if found.known else None, found.scan_seconds)
    verdicts = {(link, d): verdict(measured.curve, link, d, max_iterations, **measured.model_options)
                for link in links for d in downtimes}
    target = QmpTarget(address, support.version, ram, vcpus, support, mode, windows, tuple(notes), answers, found)
    return target, measured, verdicts
