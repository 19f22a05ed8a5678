"""`bench --measuring-cost`: what one measurement window costs the guest, in
the window and after it (dirtyrate/cost.py), for each mode, window length
and log stop (dirtyrate/log_stop.py), on 1 GiB and 4 GiB; and, at one
window length, the other ways the kernel offers to shorten it: plain
KVM_GET_DIRTY_LOG, which re-protects at every GET, and huge-page backed
memory, which KVM's own log stop recovers (kvm_mmu_recover_huge_pages).

What a shorter cost gives up is checked too: with a guest that also reads
(zipf:0.99, 30 % writes), three windows back to back, each count against
the pages replay says were written (a page only read is dirty to a window
that maps it anew, log_stop.py).

Each VM first measures its writer untracked; before each window the bench
waits until the guest writes that fast again, so that no window starts
while an earlier one still slows it (a window's own cost is what it
reports).  Cells run in a fixed order, each VM's cells one after another.
"""

import statistics
from dataclasses import dataclass

from ..dirtyrate import DirtyRateMonitor
from ..dirtyrate.cost import measure_cost, wait_steady
from ..dirtyrate.log_stop import CLEAR_FLAG, RECREATE_SLOT
from ..microvm.dirty_ring import host_max_ring_entries
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.truth import replay_window
from ..microvm.writer import measure_writer
from .runner import Progress

GiB = 1 << 30
CALC_TIMES = (50, 100, 200, 500, 1000)
ALTERNATIVES_CALC_TIME = 500
READER = {"pattern": "zipf:0.99", "write_percent": 30, "wps": 1_000_000}  # the exactness check's guest
READER_WINDOWS, READER_CALC_TIME = 3, 200
BASELINE_SECONDS = 1.0
CAP_SECONDS = 60.0
AFTER = ((0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 60))  # seconds after the window's end
CURVE_STEP = 0.1


@dataclass(frozen=True)
class Vm:
    """How a bench VM is built: its dirty log and its memory."""

    ring: bool = False
    manual_protect: bool = True  # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (False: plain GET re-protects)
    backing: str = "anonymous"

    @property
    def label(self):
        log = "dirty ring" if self.ring else ("bitmap, manual protect" if self.manual_protect else
                                               "bitmap, plain GET")
        return f"{log}, {self.backing}"


@dataclass(frozen=True)
class Cell:
    vm: Vm
    mode: str
    log_stop: str | None  # None: page-sampling stops no log
    calc_time_ms: int
    alternative: bool = False  # one of the alternatives' table, not the main one


@dataclass(frozen=True)
class CostPlan:
    sizes: tuple = (1 * GiB, 4 * GiB)
    calc_times: tuple = CALC_TIMES
    runs: int = 1
    wps: int = 3_000_000
    cap_seconds: float = CAP_SECONDS
    alternatives: bool = True

    def all_cells(self):
        """The main table (every mode and window, both log stops), then the
        alternatives at ALTERNATIVES_CALC_TIME, grouped by VM."""
        bitmap, ring = Vm(), Vm(ring=True)
        out = [Cell(bitmap, "page-sampling", None, ms) for ms in self.calc_times]
        for vm, mode in ((bitmap, "dirty-bitmap"), (ring, "dirty-ring")):
            out += [Cell(vm, mode, stop, ms) for stop in (CLEAR_FLAG, RECREATE_SLOT) for ms in self.calc_times]
        if self.alternatives:
            ms = ALTERNATIVES_CALC_TIME
            plain, thp, thp_ring = Vm(manual_protect=False), Vm(backing="anonymous-thp"), \
                Vm(ring=True, backing="anonymous-thp")
            out += [Cell(plain, "dirty-bitmap", CLEAR_FLAG, ms, True),
                    Cell(plain, "dirty-bitmap", RECREATE_SLOT, ms, True),
                    Cell(thp, "dirty-bitmap", CLEAR_FLAG, ms, True),
                    Cell(thp, "dirty-bitmap", RECREATE_SLOT, ms, True),
                    Cell(thp_ring, "dirty-ring", CLEAR_FLAG, ms, True)]
        return tuple(out)

    @property
    def windows(self):
        return len(self.sizes) * self.runs * len(self.all_cells())


def cost_plan(sizes=None, calc_times=None, runs=1, wps=3_000_000, alternatives=True):
    return CostPlan(tuple(sizes or (1 * GiB, 4 * GiB)), tuple(calc_times or CALC_TIMES), runs, wps,
                    alternatives=alternatives)


def record(size, cell, run, cost, steady_wait, baseline_wps):
    """One window's cost as results.json holds it: fractions of the rate
    before, seconds after the window's end edge."""
    return {
        "size": size, "vm": cell.vm.label, "ring": cell.vm.ring, "manual-protect": cell.vm.manual_protect,
        "backing": cell.vm.backing, "mode": cell.mode, "log-stop": cost.log_stop,
        "calc-time-ms": cell.calc_time_ms, "alternative": cell.alternative, "run": run,
        "asked-wps": cost.asked_wps, "baseline-wps": round(baseline_wps, 1),
        "steady-wait-seconds": None if steady_wait is None else round(steady_wait, 3),
        "before-wps": round(cost.before_wps, 1), "window-wps": round(cost.window_wps, 1),
        "window-ratio": round(cost.window_ratio, 5), "window-seconds": round(cost.window_seconds, 6),
        "after-ratio": {f"{a}-{b}": _ratio(cost, a, b) for a, b in AFTER},
        "recovery-seconds": None if cost.recovery_seconds is None else round(cost.recovery_seconds, 3),
        "cap-seconds": cost.cap_seconds,
        "writes-lost": round(cost.writes_lost), "lost-seconds": round(cost.lost_seconds, 4),
        "schedule-lost": None if cost.schedule_lost is None else round(cost.schedule_lost),
        "dirty-rate": cost.dirty_rate,
        "curve": [[round(t, 3), round(wps)] for t, wps in cost.curve(CURVE_STEP)],
    }


def _ratio(cost, a, b):
    """The rate between a and b seconds after the window over the rate
    before; None once the guest was back."""
    if cost.recovered and a >= cost.recovery_seconds:
        return None
    wps = cost.rate_over(a, b)
    return None if wps is None else round(wps / cost.before_wps, 4)


def _vm_cells(plan, size, vm_kind, cells, run, progress, records, seed):
    config = VmConfig(mem=size, seed=seed, dirty_ring_entries=host_max_ring_entries() if vm_kind.ring else 0,
                      manual_protect=vm_kind.manual_protect, backing=vm_kind.backing)
    with MicroVm(config) as vm:
        vm.start()
        vm.wait_ready()
        _, per = measure_writer(vm, BASELINE_SECONDS, plan.wps)
        baseline = sum(r.writes_per_second for r in per)
        vm.run_writer(plan.wps)
        monitor = DirtyRateMonitor(vm)
        for cell in cells:
            waited = wait_steady(vm, baseline, cap=plan.cap_seconds)
            cost = measure_cost(vm, monitor, cell.mode, cell.calc_time_ms, cell.log_stop, cap=plan.cap_seconds)
            records.append(record(size, cell, run, cost, waited, baseline))
            back = "not back" if cost.recovery_seconds is None else f"back {cost.recovery_seconds:.1f} s"
            progress.step(f"{size / GiB:g} GiB {cell.mode} {cell.log_stop or ''} {cell.calc_time_ms} ms: {back}")
        vm.hold()


def run_cost(plan, seed=1):
    """Every cell of the plan, `runs` times; the raw records."""
    progress = Progress(plan.windows)
    records = []
    cells = plan.all_cells()
    kinds = list(dict.fromkeys(c.vm for c in cells))
    for run in range(plan.runs):
        for size in plan.sizes:
            for kind in kinds:
                _vm_cells(plan, size, kind, [c for c in cells if c.vm == kind], run, progress, records, seed)
    return records


def aggregate(records):
    """Per cell (size, VM, mode, log stop, window): the median over runs of
    each number, and how many runs came back within the cap."""
    groups = {}
    for r in records:
        key = (r["size"], r["vm"], r["mode"], r["log-stop"], r["calc-time-ms"])
        groups.setdefault(key, []).append(r)
    out = []
    for key, runs in groups.items():
        back = [r["recovery-seconds"] for r in runs if r["recovery-seconds"] is not None]
        first = runs[0]
        out.append({
            **{k: first[k] for k in ("size", "vm", "ring", "manual-protect", "backing", "mode", "log-stop",
                                     "calc-time-ms", "alternative", "asked-wps", "cap-seconds")},
            "runs": len(runs), "recovered-runs": len(back),
            "before-wps": statistics.median(r["before-wps"] for r in runs),
            "window-ratio": statistics.median(r["window-ratio"] for r in runs),
            "after-ratio": {span: _median_or_none([r["after-ratio"][span] for r in runs])
                            for span in first["after-ratio"]},
            # a run that did not come back counts as the cap: the median is then a lower bound
            "recovery-seconds": statistics.median(r["recovery-seconds"] if r["recovery-seconds"] is not None
                                                  else r["cap-seconds"] for r in runs),
            "recovery-range": [min(back), max(back)] if back else None,
            "writes-lost": statistics.median(r["writes-lost"] for r in runs),
            "lost-seconds": statistics.median(r["lost-seconds"] for r in runs),
        })
    return out


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def exactness(size, seed=1):
    """Per way of ending the log that shortens the cost (and QEMU's), three
    windows back to back on a guest that also reads: [(vm label, log stop,
    [(counted, replayed narrow, replayed wide), ...]), ...]."""
    out = []
    for kind, stop in ((Vm(), CLEAR_FLAG), (Vm(), RECREATE_SLOT), (Vm(backing="anonymous-thp"), CLEAR_FLAG)):
        with MicroVm(VmConfig(mem=size, seed=seed, backing=kind.backing)) as vm:
            vm.start()
            vm.wait_ready()
            vm.run_writer(READER["wps"], READER["pattern"], write_percent=READER["write_percent"])
            monitor = DirtyRateMonitor(vm)
            results = [monitor.measure(READER_CALC_TIME, "millisecond", mode="dirty-bitmap", log_stop=stop)
                       for _ in range(READER_WINDOWS)]
            vm.hold()
            counts = []
            for r in results:
                replayed = replay_window(vm, r.edges)
                counts.append((int(r.dirty_pages), replayed["narrow"][0], replayed["wide"][0]))
        out.append({"vm": kind.label, "backing": kind.backing, "log-stop": stop, "windows": counts})
    return out
