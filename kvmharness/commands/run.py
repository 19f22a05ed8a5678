"""`run`: drive the guest writer for a while and report what it achieved."""

import json
from dataclasses import dataclass

from .. import units
from ..errors import UsageError
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.writer import measure_writer
from .measuring import writer_options


@dataclass(frozen=True)
class RunResult:
    mem: int
    vcpus: int
    target_wps: int  # per vCPU, 0 = unlimited
    pattern: str
    write_percent: float
    burst: str  # "ON/OFF" or "none"
    shared_region: bool
    warmup_seconds: float
    seconds: float  # the measured interval, host clock
    per_vcpu: tuple  # VcpuRate
    writes: int  # accesses: writes and reads
    writes_per_second: float

    def to_json(self):
        return {
            "mem": self.mem,
            "vcpus": self.vcpus,
            "target-wps": self.target_wps,
            "pattern": self.pattern,
            "write-percent": self.write_percent,
            "burst": self.burst,
            "shared-region": self.shared_region,
            "warmup-seconds": round(self.warmup_seconds, 6),
            "seconds": round(self.seconds, 6),
            "writes": self.writes,
            "writes-per-second": round(self.writes_per_second, 1),
            "reads": sum(r.reads for r in self.per_vcpu),
            "vcpu": [
                {"id": r.vcpu, "writes": r.writes, "writes-per-second": round(r.writes_per_second, 1),
                 "reads": r.reads, "schedule-resets": r.schedule_resets,
                 "schedule-dropped-seconds": round(r.dropped_seconds, 6),
                 "burst-idle-seconds": round(r.idled_seconds, 6)}
                for r in self.per_vcpu
            ],
        }


def run(mem, wps, duration, vcpus=1, pattern="random", seed=1, prefault=True, write_percent=100, burst=None,
        shared_region=None):
    """`writes` here count accesses; with a write percentage below 100,
    `reads` of them were reads."""
    with MicroVm(VmConfig(mem=mem, vcpus=vcpus, seed=seed, prefault=prefault)) as vm:
        vm.start()
        warm = vm.wait_ready()
        seconds, per = measure_writer(vm, duration, wps, pattern, write_percent=write_percent, burst=burst,
                                      shared_region=shared_region)
    writes = sum(r.writes for r in per)
    return RunResult(mem, vcpus, wps, pattern, float(write_percent), str(burst) if burst else "none",
                     bool(shared_region), warm, seconds, per, writes, writes / seconds)


def main(args):
    if args.duration <= 0:
        raise UsageError("the duration must be more than 0")
    result = run(args.mem, args.wps, args.duration, args.vcpus, args.pattern, args.seed, args.prefault,
                 **writer_options(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    target = "unlimited" if not args.wps else f"{units.format_rate(args.wps)}writes/s per vCPU"
    shape = [args.pattern, f"{result.write_percent:g} % writes"]
    shape += [f"bursts {result.burst}"] if args.burst else []
    shape += ["shared region"] if args.shared_region else []
    print(f"{args.mem >> 20} MiB, {args.vcpus} vCPU(s), {', '.join(shape)}, target {target}")
    print(f"warm-up: {result.warmup_seconds * 1e3:.1f} ms (every page touched once)")
    for r in result.per_vcpu:
        stalls = (f", {r.schedule_resets} host stalls gave up {r.dropped_seconds * 1e3:.1f} ms of schedule"
                  if r.schedule_resets else "")
        reads = f", of which {r.reads} reads" if r.reads else ""
        print(f"  vCPU {r.vcpu}: {units.format_rate(r.writes_per_second)}writes/s ({r.writes} accesses{reads}{stalls})")
    print(f"total: {units.format_rate(result.writes_per_second)}writes/s over {result.seconds:.3f} s")
    return 0
