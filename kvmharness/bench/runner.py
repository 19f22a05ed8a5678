"""Running the benchmark: one VM per size and tracking kind, windows in a
fixed order, every window recorded raw.

Order matters: dirty logging leaves pages write-protected after it is
switched off, which slows the writer for a while, so on each bitmap VM the
page-sampling windows (which protect nothing) run before the bitmap ones,
and the untracked baseline rate is measured first of all.
"""

import sys
import time

from ..dirtyrate import DirtyRateMonitor
from ..microvm.dirty_ring import host_max_ring_entries
from ..dirtyrate.theory import pages_to_mib_per_s, theoretical_rate
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.writer import measure_writer

BASELINE_SECONDS = 1.0


class Progress:
    """A progress bar on a terminal, a line per step otherwise (CI logs)."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()

    def step(self, label):
        self.done += 1
        elapsed = time.monotonic() - self.t0
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label:<40}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{self.done}/{self.total}] {elapsed:5.0f}s {label}\n")
        self.stream.flush()


def _window_record(size, mode, calc_ms, run, result, plan, seed):
    seconds = result.window_us / 1e6
    record = {
        "size": size,
        "mode": mode,
        "calc-time-ms": calc_ms,
        "run": run,
        "window-us": result.window_us,
        "dirty-rate": pages_to_mib_per_s(result.dirty_pages, seconds),
        "dirty-rate-qmp": result.dirty_rate,
        "dirty-pages": result.dirty_pages,
        "dirty-events": result.dirty_events,
        "guest-writes": result.guest_writes,
        "guest-wps": result.guest_writes / seconds,
        "expected-rate": result.expected_rate,
        "theoretical-rate": theoretical_rate(size, plan.wps, calc_ms / 1000, plan.pattern, seed),
        "overhead-ms": result.overhead["total"],
    }
    if result.confidence:
        record["confidence"] = list(result.confidence)
    return record


def _vm_runs(plan, size, ring, modes, progress, seed):
    """All windows of `modes` on one VM; returns (baseline wps, records)."""
    records = []
    config = VmConfig(mem=size, seed=seed, dirty_ring_entries=ring, backing=plan.backing, slots=plan.slots)
    with MicroVm(config) as vm:
        vm.start()
        vm.wait_ready()
        _, per = measure_writer(vm, BASELINE_SECONDS, plan.wps, plan.pattern)
        baseline = per[0].writes_per_second
        vm.run_writer(plan.wps, plan.pattern)
        time.sleep(0.2)
        monitor = DirtyRateMonitor(vm)
        for mode in modes:
            for calc_ms in plan.calc_times:
                for run in range(plan.runs):
                    result = monitor.measure(calc_ms, "millisecond", mode=mode)
                    records.append(_window_record(size, mode, calc_ms, run, result, plan, seed))
                    progress.step(f"{size >> 30} GiB {mode} {calc_ms} ms #{run + 1}")
        vm.hold()
    return baseline, records


def run_bench(plan, seed=1):
    """Every window of the plan; returns (raw window records, baselines)."""
    progress = Progress(plan.windows)
    records, baselines = [], []
    ring_entries = host_max_ring_entries()
    for size in plan.sizes:
        bitmap_modes = [m for m in plan.modes if m != "dirty-ring"]
        if bitmap_modes:
            wps, recs = _vm_runs(plan, size, 0, bitmap_modes, progress, seed)
            baselines.append({"size": size, "vm": "bitmap", "guest-wps": wps})
            records += recs
        if "dirty-ring" in plan.modes:
            wps, recs = _vm_runs(plan, size, ring_entries, ["dirty-ring"], progress, seed)
            baselines.append({"size": size, "vm": "ring", "guest-wps": wps})
            records += recs
    return records, baselines
