"""`run`: drive the guest writer for a while and report what it achieved."""

import time
from dataclasses import dataclass

from .machine import MicroVm, VmConfig


@dataclass(frozen=True)
class VcpuRate:
    vcpu: int
    writes: int
    writes_per_second: float
    schedule_resets: int  # times the writer fell too far behind (host stalls) and restarted its schedule
    dropped_seconds: float  # schedule those restarts gave up: the writer was paced for seconds - this

    def expected_writes(self, wps, seconds):
        """What a writer paced at `wps` owes over `seconds` once the schedule
        it gave up to host stalls is taken off (to within wps * catch-up + 1)."""
        return wps * (seconds - self.dropped_seconds)


@dataclass(frozen=True)
class RunResult:
    mem: int
    vcpus: int
    target_wps: int  # per vCPU, 0 = unlimited
    pattern: str
    warmup_seconds: float
    seconds: float  # the measured interval, host clock
    per_vcpu: tuple  # VcpuRate
    writes: int
    writes_per_second: float

    def to_json(self):
        return {
            "mem": self.mem,
            "vcpus": self.vcpus,
            "target-wps": self.target_wps,
            "pattern": self.pattern,
            "warmup-seconds": round(self.warmup_seconds, 6),
            "seconds": round(self.seconds, 6),
            "writes": self.writes,
            "writes-per-second": round(self.writes_per_second, 1),
            "vcpu": [
                {"id": r.vcpu, "writes": r.writes, "writes-per-second": round(r.writes_per_second, 1),
                 "schedule-resets": r.schedule_resets,
                 "schedule-dropped-seconds": round(r.dropped_seconds, 6)}
                for r in self.per_vcpu
            ],
        }


def measure_writer(vm, duration, wps=0, pattern="random"):
    """Run the writer of a ready VM for `duration` seconds; counters are read
    from shared memory at both ends of the interval, after the writer is
    already going, so start-up is not in the figure."""
    vm.run_writer(wps, pattern)
    first = vm.snapshot()
    time.sleep(duration)
    last = vm.snapshot()
    vm.hold()
    seconds = last.time - first.time
    per = tuple(
        VcpuRate(k, b - a, (b - a) / seconds, s1.resets - s0.resets, s1.dropped - s0.dropped)
        for k, (a, b, s0, s1) in enumerate(zip(first.counters, last.counters, first.schedules, last.schedules))
    )
    return seconds, per


def run(mem, wps, duration, vcpus=1, pattern="random", seed=1, prefault=True):
    with MicroVm(VmConfig(mem=mem, vcpus=vcpus, seed=seed, prefault=prefault)) as vm:
        vm.start()
        warm = vm.wait_ready()
        seconds, per = measure_writer(vm, duration, wps, pattern)
    writes = sum(r.writes for r in per)
    return RunResult(mem, vcpus, wps, pattern, warm, seconds, per, writes, writes / seconds)
