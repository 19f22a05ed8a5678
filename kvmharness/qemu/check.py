"""`qemu-check`: QEMU's calc-dirty-rate against exact ground truth.

Our writer runs in QEMU with its RAM in a file we map (guest.py); QEMU
measures its dirty rate in each mode it offers; we replay which pages the
guest wrote while QEMU measured (microvm/replay.py) and put QEMU's figure
next to the truth, and next to kvmharness measuring the same workload on its
own VM (whose windows we check against replay the same way).

What the truth is, exactly:
* QEMU's window is the stretch between its two dirty-log syncs, which lies
  somewhere between our sending calc-dirty-rate and its answering
  "measured".  We read the guest's counter every millisecond meanwhile and
  replay every placement of a window of calc-time inside those brackets:
  the truth is a range, usually narrow (a steady writer dirties as much in
  any second).
* QEMU counts all guest RAM; our guest also writes its control block page
  (its counter) all the time: one page more than the region's.
* dirty-ring mode counts ring entries, not pages: a page written again
  after a ring reset is collected again.  KVM resets nothing by itself:
  QEMU reaps and resets a vCPU's ring when it fills (KVM exits when the ring
  holds size - KVM_DIRTY_RING_RSVD_ENTRIES (64) entries,
  include/linux/kvm_dirty_ring.h) and every second from its reaper thread
  (accel/kvm/kvm-all.c, kvm_dirty_ring_reaper_thread), at a phase we cannot
  see.  So the "entries" truth replays the writes with a reset at every
  ring-full and at each reaper phase we try: a range again.
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from ..dirtyrate.monitor import DirtyRateMonitor
from ..dirtyrate.verify import check_window
from ..microvm import guest as writer_guest
from ..microvm import replay
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.truth import tag_mismatches
from .dirty_rate import calc_dirty_rate, calc_support
from .guest import QemuGuest

KVM_DIRTY_RING_RSVD_ENTRIES = 64
REAPER_PERIOD = 1.0  # seconds: QEMU's dirty ring reaper thread
REAPER_PHASES = (0.0, 0.25, 0.5, 0.75)
PLACEMENTS = 5  # window placements replayed between the brackets
CONTROL_PAGES = 1  # the guest's control block, written with every access
MIB = 1 << 20


def mb_per_s(pages, seconds):
    return pages * writer_guest.PAGE_SIZE / MIB / seconds


def ring_entries(pages, soft_limit, resets=()):
    """Entries a dirty ring collects for the write sequence `pages` when it
    is reset whenever it holds `soft_limit` entries and at the positions
    `resets` (indices into `pages`).  Between two resets each distinct page
    is one entry."""
    total, pos = 0, 0
    for end in sorted(set(r for r in resets if 0 < r < len(pages))) + [len(pages)]:
        while pos < end:
            span = min(end - pos, 4 * soft_limit)
            while True:
                uniq, first = np.unique(pages[pos:pos + span], return_index=True)
                if len(uniq) >= soft_limit or pos + span >= end:
                    break
                span = min(end - pos, 2 * span)
            if len(uniq) < soft_limit:  # the ring does not fill before `end`
                total += len(uniq)
                break
            first.sort()
            total += soft_limit
            pos += int(first[soft_limit - 1]) + 1  # the ring-full exit follows the write that filled it
        pos = end
    return total


@dataclass(frozen=True)
class WindowTruth:
    """What the guest dirtied in QEMU's window, over the placements its
    brackets allow: region pages + CONTROL_PAGES, and ring entries."""

    pages: tuple  # (lowest, middle placement, highest)
    entries: tuple | None  # (lowest, highest) over placements and reaper phases; None: not a ring
    writes: int  # in the middle placement
    bracket_seconds: float  # how much longer than calc-time the brackets are


def _readings(measured):
    """The guest's counter readings taken around `measured` as arrays
    (times, counts), in the order taken (times rise)."""
    return (np.array([t for t, _ in measured.samples], dtype=np.float64),
            np.array([c for _, c in measured.samples], dtype=np.int64))


def _written(guest, lo, hi):
    """Pages the guest wrote between its counter values `lo` and `hi`, replayed."""
    return replay.unique_pages(guest.logs[0], guest.slot_pages, int(lo), int(hi))


def _placements(measured):
    """counter_at(t) from the readings, and the window starts the brackets allow."""
    times, counts = _readings(measured)
    latest = max(measured.sent, measured.done - measured.calc_ms / 1000)
    return (lambda t: int(round(np.interp(t, times, counts)))), np.linspace(measured.sent, latest, PLACEMENTS)


def replayed_curve(guest, measured, windows_ms):
    """dirty(t) at `windows_ms` from inside one measured window (its middle
    placement), replayed: ((seconds, pages), ...), pages including the
    control page as QEMU counts it.  What a QEMU with millisecond windows
    would report (its bitmap mode is exact), under the same dirty logging."""
    counter_at, starts = _placements(measured)
    t0 = starts[PLACEMENTS // 2]
    return tuple((ms / 1000, _written(guest, counter_at(t0), counter_at(t0 + ms / 1000)) + CONTROL_PAGES)
                 for ms in windows_ms if ms <= measured.calc_ms)


def window_truth(guest, measured, ring_size=0):
    """The truth of one QEMU measurement (the module docstring says what it
    is); `ring_size` entries per vCPU when the QEMU has a dirty ring."""
    counter_at, starts = _placements(measured)
    seconds = measured.calc_ms / 1000
    pages, entries = [], []
    for t in starts:
        lo, hi = counter_at(t), counter_at(t + seconds)
        pages.append(_written(guest, lo, hi) + CONTROL_PAGES)
        if ring_size:
            written = np.concatenate([p for _, p in guest.logs[0].chunks(lo, hi)] or [np.zeros(0, np.uint64)])
            for phase in REAPER_PHASES:
                resets = [counter_at(t + (k + phase) * REAPER_PERIOD) - lo for k in range(math.ceil(seconds) + 1)]
                entries.append(ring_entries(written, ring_size - KVM_DIRTY_RING_RSVD_ENTRIES, resets)
                               + CONTROL_PAGES)
    mid = PLACEMENTS // 2
    lo_c, hi_c = counter_at(starts[mid]), counter_at(starts[mid] + seconds)
    return WindowTruth((min(pages), pages[mid], max(pages)), (min(entries), max(entries)) if entries else None,
                       hi_c - lo_c, measured.done - measured.sent - seconds)


def fewest_pages(guest, measured, step_share=0.1):
    """The fewest pages any window of calc-time placed within the brackets
    can hold, soundly: for starts every step (step_share x calc-time) from
    our send to the answer less calc-time, the pages written between
    start + step and start + calc-time, which every window starting within
    that step holds, read between the counter readings inside that stretch
    (never interpolated).  window_truth's five placements assume a steady
    writer; a writer slowed in part of the brackets (QEMU 10 once took 845 ms
    to answer a 50 ms window while the guest ran on under new dirty logging)
    has a slowest stretch that five placements miss.  Without the control
    page: a bound, not an estimate."""
    times, counts = _readings(measured)
    window = measured.calc_ms / 1000
    step = window * step_share
    last = max(measured.sent, measured.done - window)
    fewest = None
    for start in np.arange(measured.sent, last + step, step):
        first = int(np.searchsorted(times, start + step, "left"))  # the first reading at or after it
        end = int(np.searchsorted(times, start + window, "right")) - 1  # the last one at or before the end
        pages = _written(guest, counts[first], counts[end]) if first < end else 0
        fewest = pages if fewest is None else min(fewest, pages)
    return fewest


def bracketed_pages(guest, measured):
    """The most pages any exact count of QEMU's can hold for `measured`:
    every page the guest wrote between our sending calc-dirty-rate and
    QEMU's answering "measured" (+ CONTROL_PAGES).  What QEMU counts beyond
    its window (the clear before its clock starts, the sync after it stops;
    docs/results/qemu10) lies within those brackets too.  The counter
    readings taken are the last one before the send and the first one after
    the answer, not an interpolation, so that the bound holds however far
    apart the host let them be."""
    times, counts = _readings(measured)
    before = int(np.searchsorted(times, measured.sent, "right")) - 1  # the last reading at or before the send
    after = int(np.searchsorted(times, measured.done, "left"))  # the first at or after the answer
    if before < 0 or after >= len(times):
        shown = f"{times[0]}..{times[-1]}" if len(times) else "none"
        raise ValueError(f"the counter readings ({shown}) do not bracket the measurement "
                         f"({measured.sent}..{measured.done})")
    return _written(guest, counts[before], counts[after]) + CONTROL_PAGES


@dataclass(frozen=True)
class QemuRow:
    """One mode and window: QEMU's answer, the truth, and ours."""

    mode: str
    calc_ms: int
    qemu_mb_s: int
    truth: WindowTruth
    ours_mb_s: float | None  # kvmharness on its own VM, same workload and window
    ours_truth_mb_s: float | None
    ours_exact: bool | None  # our count within replay's brackets (exact modes), None for sampling

    @property
    def truth_mb_s(self):
        return mb_per_s(self.truth.pages[1], self.calc_ms / 1000)

    @property
    def entries_mb_s(self):
        return None if self.truth.entries is None else tuple(mb_per_s(e, self.calc_ms / 1000)
                                                              for e in self.truth.entries)

    @property
    def ratio(self):
        return self.qemu_mb_s / self.truth_mb_s if self.truth_mb_s else math.nan

    def to_json(self):
        s = self.calc_ms / 1000
        return {"mode": self.mode, "calc-time-ms": self.calc_ms, "qemu-mb-s": self.qemu_mb_s,
                "truth-mb-s": round(self.truth_mb_s, 1),
                "truth-pages": list(self.truth.pages), "truth-mb-s-range": [round(mb_per_s(p, s), 1)
                                                                          for p in self.truth.pages[::2]],
                "ring-entries": list(self.truth.entries) if self.truth.entries else None,
                "ring-entries-mb-s": [round(x, 1) for x in self.entries_mb_s] if self.truth.entries else None,
                "guest-writes": self.truth.writes, "bracket-extra-s": round(self.truth.bracket_seconds, 3),
                "qemu-over-truth": round(self.ratio, 3),
                "kvmharness-mb-s": None if self.ours_mb_s is None else round(self.ours_mb_s, 1),
                "kvmharness-truth-mb-s": None if self.ours_truth_mb_s is None else round(self.ours_truth_mb_s, 1),
                "kvmharness-exact": self.ours_exact}


@dataclass(frozen=True)
class CheckPlan:
    mem: int
    wps: int
    pattern: str
    modes: tuple
    calc_ms: tuple
    dirty_ring_size: int
    seed: int = 1
    repeat: int = 1
    settle: float = 0.5
    ours: bool = True  # also measure on kvmharness's own VM
    qemu: object = None  # a binary's path or a launch.Qemu; None: the newest found


def _qemu_rows(plan, ring, modes):
    """Boot one QEMU (with a dirty ring when `ring`), measure `modes`, then
    check its RAM against replay: (rows, CalcSupport, RAM exact)."""
    rows = []
    with QemuGuest(plan.mem, seed=plan.seed, qemu=plan.qemu, dirty_ring_size=plan.dirty_ring_size if ring else 0) as g:
        g.wait_ready()
        support = calc_support(g.qmp)
        g.run_writer(plan.wps, plan.pattern)
        time.sleep(plan.settle)
        for mode in modes:
            for ms in plan.calc_ms:
                for _ in range(plan.repeat):
                    m = calc_dirty_rate(g.qmp, support, ms, mode, counter=lambda: g.counters()[0])
                    rows.append((mode, ms, m.dirty_rate, window_truth(g, m, g.dirty_ring_size)))
        g.hold()
        return rows, support, tag_mismatches(g) == (0, 0)


def _our_rates(plan, mode):
    """kvmharness on its own VM, same region, rate, pattern and windows:
    {calc_ms: [(rate MB/s, replayed truth MB/s, exact or None), ...]}."""
    ring = plan.dirty_ring_size if mode == "dirty-ring" else 0
    out = {}
    config = VmConfig(mem=plan.mem, vcpus=1, seed=plan.seed, dirty_ring_entries=ring)
    with MicroVm(config) as vm:
        vm.start()
        vm.wait_ready()
        vm.run_writer(plan.wps, plan.pattern)
        time.sleep(plan.settle)
        monitor = DirtyRateMonitor(vm)
        try:
            for ms in plan.calc_ms:
                for _ in range(plan.repeat):
                    result = monitor.measure(ms, "millisecond", mode=mode)
                    verdict = check_window(vm, result)
                    exact = verdict.ok if result.mode != "page-sampling" else None
                    out.setdefault(ms, []).append((mb_per_s(result.dirty_pages, result.window_us / 1e6),
                                                   mb_per_s(verdict.truth, result.window_us / 1e6), exact))
        finally:
            monitor.close()
        vm.hold()
    return out


@dataclass(frozen=True)
class CheckReport:
    plan: CheckPlan
    support: object  # CalcSupport (its version: QEMU's)
    rows: tuple  # QemuRow
    ram_exact: bool  # the QEMU guest's RAM equals replay, page for page, at the end
    seconds: float


def run_check(plan):
    """Every mode and window of `plan` in QEMU (one QEMU without a dirty
    ring for dirty-bitmap and page-sampling, one with a ring for
    dirty-ring, as QEMU offers them), then on our own VM."""
    t0 = time.perf_counter()
    raw, supports, ram_exact = [], [], True
    sides = ((False, tuple(m for m in plan.modes if m != "dirty-ring")),
             (True, tuple(m for m in plan.modes if m == "dirty-ring")))
    for ring, modes in sides:
        if modes:
            rows, support, exact = _qemu_rows(plan, ring, modes)
            raw += rows
            supports.append(support)
            ram_exact = ram_exact and exact
    ours = {m: _our_rates(plan, m) for m in plan.modes} if plan.ours else {}
    rows, seen = [], {}
    for mode, ms, rate, truth in raw:
        k = seen[(mode, ms)] = seen.get((mode, ms), -1) + 1
        mine = ours.get(mode, {}).get(ms, [])
        rows.append(QemuRow(mode, ms, rate, truth, *(mine[k] if k < len(mine) else (None, None, None))))
    return CheckReport(plan, supports[0], tuple(rows), ram_exact, time.perf_counter() - t0)
