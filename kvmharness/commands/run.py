"""`run`: drive the guest writer for a while and report what it achieved."""

from dataclasses import dataclass

from .. import units
from ..errors import UsageError
from .args import add_aid_arguments, add_vm_arguments, arg_type


def add_arguments(p):
    """A VM's arguments, how long to write, and the convergence aids."""
    add_vm_arguments(p)
    p.add_argument("--duration", type=arg_type(units.parse_duration), default=2.0,
                   help="how long to write after the warm-up, e.g. 500ms, 2s (default 2s)")
    add_aid_arguments(p)


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
    aids: str = "none"
    throttled_seconds: tuple = ()  # per vCPU, slept for the aids since the start

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
                 "burst-idle-seconds": round(r.idled_seconds, 6),
                 **({"dirty-pages": r.dirty_pages, "dirty-rate-mb-s": round(_mb_s(r.dirty_pages, self.seconds), 1)}
                    if r.dirty_pages is not None else {})}
                for r in self.per_vcpu
            ],
            "aids": self.aids,
            "throttled-seconds": [round(t, 6) for t in self.throttled_seconds],
        }


def _mb_s(pages, seconds):
    from ..microvm.guest import PAGE_SIZE

    return pages * PAGE_SIZE / (1 << 20) / seconds


@dataclass(frozen=True)
class Aids:
    """What slows the guest during the run: a dirty limit (MB/s per vCPU,
    on a dirty ring of `ring_entries`), or CPU throttling (%)."""

    dirty_limit: int | None = None
    dirty_limit_period_ms: int = 1000
    ring_entries: int = 0
    cpu_throttle: int | None = None

    @property
    def settle(self):
        """Seconds to let a dirty limit settle before measuring (five periods)."""
        return 5 * self.dirty_limit_period_ms / 1000 if self.dirty_limit else 0.0

    def __str__(self):
        parts = [f"dirty limit {self.dirty_limit} MB/s per vCPU (period {self.dirty_limit_period_ms} ms, "
                 f"ring {self.ring_entries} entries)"] if self.dirty_limit else []
        parts += [f"CPU throttle {self.cpu_throttle} %"] if self.cpu_throttle else []
        return ", ".join(parts) or "none"


def run(mem, wps, duration, vcpus=1, pattern="random", seed=1, prefault=True, write_percent=100, burst=None,
        shared_region=None, aids=Aids(), backing="anonymous", slots=1):
    """`writes` here count accesses; with a write percentage below 100,
    `reads` of them were reads.  With a dirty limit, each vCPU's distinct
    pages are replayed too (the rate the limit holds)."""
    from ..convergence.cpu_throttle import CpuThrottle
    from ..convergence.dirty_limit import DirtyLimit
    from ..microvm.machine import MicroVm, VmConfig
    from ..microvm.writer import measure_writer

    config = VmConfig(mem=mem, vcpus=vcpus, seed=seed, prefault=prefault, dirty_ring_entries=aids.ring_entries,
                      backing=backing, slots=slots)
    with MicroVm(config) as vm:
        vm.start()
        warm = vm.wait_ready()
        if aids.dirty_limit:
            DirtyLimit(vm, aids.dirty_limit_period_ms).set(aids.dirty_limit)
        if aids.cpu_throttle:
            CpuThrottle(vm).set(aids.cpu_throttle)
        seconds, per = measure_writer(vm, duration, wps, pattern, settle=aids.settle,
                                      count_pages=bool(aids.dirty_limit), write_percent=write_percent,
                                      burst=burst, shared_region=shared_region)
        slept = vm.throttled_seconds()
    writes = sum(r.writes for r in per)
    return RunResult(mem, vcpus, wps, pattern, float(write_percent), str(burst) if burst else "none",
                     bool(shared_region), warm, seconds, per, writes, writes / seconds, str(aids), tuple(slept))


def main(args):
    import json

    from .measuring import ring_size_for, writer_options

    if args.duration <= 0:
        raise UsageError("the duration must be more than 0")
    aids = Aids(args.dirty_limit, args.dirty_limit_period, ring_size_for(args) or 0, args.cpu_throttle)
    result = run(args.mem, args.wps, args.duration, args.vcpus, args.pattern, args.seed, args.prefault,
                 aids=aids, backing=args.backing, slots=args.slots, **writer_options(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    target = "unlimited" if not args.wps else f"{units.format_rate(args.wps)}writes/s per vCPU"
    shape = [args.pattern, f"{result.write_percent:g} % writes"]
    shape += [f"bursts {result.burst}"] if args.burst else []
    shape += ["shared region"] if args.shared_region else []
    print(f"{args.mem >> 20} MiB ({args.backing}, {args.slots} memslot{'s' if args.slots > 1 else ''}), "
          f"{args.vcpus} vCPU(s), {', '.join(shape)}, target {target}")
    print(f"warm-up: {result.warmup_seconds * 1e3:.1f} ms (every page touched once)")
    for r in result.per_vcpu:
        stalls = (f", {r.schedule_resets} host stalls gave up {r.dropped_seconds * 1e3:.1f} ms of schedule"
                  if r.schedule_resets else "")
        reads = f", of which {r.reads} reads" if r.reads else ""
        dirty = (f", {_mb_s(r.dirty_pages, result.seconds):.1f} MB/s of distinct pages (replayed)"
                 if r.dirty_pages is not None else "")
        print(f"  vCPU {r.vcpu}: {units.format_rate(r.writes_per_second)}writes/s ({r.writes} accesses{reads}"
              f"{stalls}){dirty}")
    if result.aids != "none":
        print(f"aids: {result.aids}; slept outside the guest: "
              + ", ".join(f"{t:.2f} s" for t in result.throttled_seconds))
    print(f"total: {units.format_rate(result.writes_per_second)}writes/s over {result.seconds:.3f} s")
    return 0
