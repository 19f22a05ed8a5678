"""`run`: drive the guest writer for a while and report what it achieved."""

import json
from dataclasses import dataclass

from .. import units
from ..errors import UsageError
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.writer import measure_writer


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


def run(mem, wps, duration, vcpus=1, pattern="random", seed=1, prefault=True):
    with MicroVm(VmConfig(mem=mem, vcpus=vcpus, seed=seed, prefault=prefault)) as vm:
        vm.start()
        warm = vm.wait_ready()
        seconds, per = measure_writer(vm, duration, wps, pattern)
    writes = sum(r.writes for r in per)
    return RunResult(mem, vcpus, wps, pattern, warm, seconds, per, writes, writes / seconds)


def main(args):
    if args.duration <= 0:
        raise UsageError("the duration must be more than 0")
    result = run(args.mem, args.wps, args.duration, args.vcpus, args.pattern, args.seed, args.prefault)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    target = "unlimited" if not args.wps else f"{units.format_rate(args.wps)}writes/s per vCPU"
    print(f"{args.mem >> 20} MiB, {args.vcpus} vCPU(s), {args.pattern}, target {target}")
    print(f"warm-up: {result.warmup_seconds * 1e3:.1f} ms (every page touched once)")
    for r in result.per_vcpu:
        stalls = (f", {r.schedule_resets} host stalls gave up {r.dropped_seconds * 1e3:.1f} ms of schedule"
                  if r.schedule_resets else "")
        print(f"  vCPU {r.vcpu}: {units.format_rate(r.writes_per_second)}writes/s ({r.writes} writes{stalls})")
    print(f"total: {units.format_rate(result.writes_per_second)}writes/s over {result.seconds:.3f} s")
    return 0
