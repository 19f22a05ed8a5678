"""`probe`: what this KVM host is and what it costs to measure on it.

The calibrations matter for interpreting every result: the guest's loop
rate against the same loop run as a host process proves the guest is not
emulated (on any host: ~1x native, ~0.0005x emulated), the cost of the first write
to a clean page under dirty logging is what slows a writer while bitmap or
ring tracking is on (docs/platform.md), and how long the guest takes to be
back at its pace after one 500 ms dirty-bitmap window on 1 GiB says what a
measurement costs it after its window (dirtyrate/cost.py), with QEMU's log
stop and with the one that shortens it under shadow paging
(dirtyrate/log_stop.py).
"""

import os
import time
from dataclasses import dataclass, field

from .dirtyrate import DirtyRateMonitor, log_stop
from .dirtyrate.cost import measure_cost, wait_steady
from .dirtyrate.trackers.bitmap import DirtyBitmapTracker
from .microvm.dirty_ring import GFN_SIZE, max_ring_bytes
from .kvm import Kvm
from .kvm.backing import offers
from .kvm.memory import host_available_bytes
from .kvm.mmu import host_mmu
from .microvm.host_loop import host_loop_rate
from .microvm.machine import MicroVm, VmConfig
from .microvm.writer import CATCH_UP_SECONDS, measure_writer
from .kvm.system import DEFAULT_DEVICE

CAPS = [
    "KVM_CAP_USER_MEMORY",
    "KVM_CAP_EXT_CPUID",
    "KVM_CAP_SYNC_MMU",
    "KVM_CAP_GET_TSC_KHZ",
    "KVM_CAP_IMMEDIATE_EXIT",
    "KVM_CAP_NR_VCPUS",
    "KVM_CAP_MAX_VCPUS",
    "KVM_CAP_NR_MEMSLOTS",
    "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
    "KVM_CAP_DIRTY_LOG_RING",
    "KVM_CAP_DIRTY_LOG_RING_ACQ_REL",
]
CALIBRATION_MEM = 64 << 20
COST_MEM, COST_CALC_TIME_MS, COST_WPS, COST_CAP_SECONDS = 1 << 30, 500, 3_000_000, 20.0


@dataclass(frozen=True)
class WindowCost:
    """What one dirty-bitmap window cost the guest (dirtyrate/cost.py)."""

    log_stop: str
    before_wps: float
    window_ratio: float  # its rate in the window over its rate before
    recovery_seconds: float | None  # after the window, until back within 10 %; None: not within the cap
    lost_seconds: float  # writes lost, in seconds of its work

    def to_json(self):
        return {"log-stop": self.log_stop, "before-wps": round(self.before_wps, 1),
                "window-ratio": round(self.window_ratio, 5),
                "recovery-seconds": None if self.recovery_seconds is None else round(self.recovery_seconds, 3),
                "lost-seconds": round(self.lost_seconds, 3)}


@dataclass(frozen=True)
class ProbeReport:
    host_kind: str  # vmx | svm | nested
    cpu_model: str
    kernel: str
    api_version: int
    caps: dict = field(default_factory=dict)
    dirty_ring_max_entries: int = 0
    tsc_khz: int = 0
    loop_writes_per_second: float = 0.0
    host_loop_writes_per_second: float = 0.0
    first_write_us: float = 0.0
    backing: tuple = ()  # kvm.backing.Offer per backing source: can the data region live there
    mmu: str = "shadow"  # kvm/mmu.py: ept | npt | shadow
    window_costs: tuple = ()  # WindowCost: recreate-slot, then clear-flag (QEMU's)
    window_cost_skipped: str | None = None  # why there are none

    def backing_json(self):
        return {o.name: {"offered": o.offered, "detail": o.detail} for o in self.backing}

    @property
    def guest_to_host_loop(self):
        """The guest loop's rate over the same loop's on the host: ~1 native
        (0 when not calibrated)."""
        host = self.host_loop_writes_per_second
        return self.loop_writes_per_second / host if host else 0.0

    def to_json(self):
        return {
            "host-kind": self.host_kind,
            "cpu-model": self.cpu_model,
            "kernel": self.kernel,
            "api-version": self.api_version,
            "capabilities": self.caps,
            "dirty-ring-max-entries": self.dirty_ring_max_entries,
            "tsc-khz": self.tsc_khz,
            "backing-sources": self.backing_json(),
            "mmu": self.mmu,
            "calibration": {
                "loop-writes-per-second": round(self.loop_writes_per_second, 1),
                "host-loop-writes-per-second": round(self.host_loop_writes_per_second, 1),
                "guest-to-host-loop": round(self.guest_to_host_loop, 4),
                "first-write-under-dirty-logging-us": round(self.first_write_us, 3),
                "after-window": {"mem": COST_MEM, "mode": "dirty-bitmap", "calc-time-ms": COST_CALC_TIME_MS,
                                 "asked-wps": COST_WPS, "cap-seconds": COST_CAP_SECONDS,
                                 "skipped": self.window_cost_skipped,
                                 "log-stops": [c.to_json() for c in self.window_costs]},
            },
        }


def host_kind():
    """vmx / svm: hardware virtualization; nested: KVM without it (kvm_pvm)."""
    flags, model = set(), "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
    for kind in ("vmx", "svm"):
        if kind in flags:
            return kind, model
    return "nested", model


def calibrate_loop_rate(vm, seconds=0.3):
    """Unthrottled random writes over the VM's region, writes/s."""
    _, per = measure_writer(vm, seconds, wps=0, pattern="random")
    return sum(r.writes_per_second for r in per)


def calibrate_first_write(vm, loop_rate):
    """Seconds per first write to a clean page under dirty logging: one
    sequential pass over a freshly write-protected region (the bitmap
    tracker's start edge protects every page), less what the same number
    of writes costs without faults."""
    npages = vm.slot_pages
    tracker = DirtyBitmapTracker(vm)
    try:
        tracker.begin()
        target = vm.counter_total() + npages
        vm.run_writer(0, "sequential")
        t0 = time.perf_counter()
        while vm.counter_total() < target:
            pass
        elapsed = time.perf_counter() - t0
        vm.hold()
    finally:
        tracker.close()
    return max(elapsed - npages / loop_rate, 0.0) / npages


def calibrate_window_cost(device=DEFAULT_DEVICE):
    """One 500 ms dirty-bitmap window on a 1 GiB guest asked for 3 M
    writes/s, followed until the guest is back: with the recreate-slot log
    stop, then with QEMU's, our default (log_stop.py; recreate-slot first: a
    window that leaves the guest slow past the cap would spoil the next).
    (WindowCost, ...) and None, or () and why not."""
    if host_available_bytes() < 2 * COST_MEM:
        return (), f"needs {2 * COST_MEM >> 30} GiB of available memory"
    stops = (log_stop.RECREATE_SLOT, log_stop.QEMU)
    out = []
    with MicroVm(VmConfig(mem=COST_MEM, device=device)) as vm:
        vm.start()
        vm.wait_ready()
        vm.run_writer(COST_WPS)
        wait_steady(vm, COST_WPS, cap=2.0)
        monitor = DirtyRateMonitor(vm)
        for stop in stops:
            c = measure_cost(vm, monitor, "dirty-bitmap", COST_CALC_TIME_MS, stop, cap=COST_CAP_SECONDS)
            out.append(WindowCost(c.log_stop, c.before_wps, c.window_ratio, c.recovery_seconds, c.lost_seconds))
            if c.recovery_seconds is None:
                break  # the next window would start from a guest this one still slows
        vm.hold()
    return tuple(out), None


def probe(device=DEFAULT_DEVICE, calibrate=True, window_cost=True):
    """What this host is; with `calibrate`, what it costs (seconds), and with
    `window_cost` too, what one window costs a 1 GiB guest after it (about
    3 s on a host with EPT, 10-15 s under shadow paging)."""
    kind, model = host_kind()
    with Kvm(device) as kvm:
        caps = {name: kvm.check_extension(name) for name in CAPS}
        version = kvm.get_api_version()
        ring_bytes, _ = max_ring_bytes(kvm)
    report = dict(
        host_kind=kind,
        cpu_model=model,
        kernel=os.uname().release,
        api_version=version,
        caps=caps,
        dirty_ring_max_entries=ring_bytes // GFN_SIZE,
        backing=offers(),
        mmu=host_mmu(),
    )
    if calibrate:
        with MicroVm(VmConfig(mem=CALIBRATION_MEM, device=device)) as vm:
            vm.start()
            vm.wait_ready()
            loop = calibrate_loop_rate(vm)
            first = calibrate_first_write(vm, loop)
            host = host_loop_rate(CALIBRATION_MEM, 0.3, 0, vm.tsc_khz * 1000, CATCH_UP_SECONDS)
            report.update(tsc_khz=vm.tsc_khz, loop_writes_per_second=loop, host_loop_writes_per_second=host,
                          first_write_us=first * 1e6)
        if window_cost:
            report["window_costs"], report["window_cost_skipped"] = calibrate_window_cost(device)
    return ProbeReport(**report)

