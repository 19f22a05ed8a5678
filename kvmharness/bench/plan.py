"""What `kvmharness bench` measures: the seed's table (one vCPU writing
randomly at 3 M writes/s, calc-time 100..2000 ms, 1/4/24 GiB), with 50 ms
added, dirty-ring added, 16 GiB where the host cannot hold 24, and at least
three runs per cell."""

from dataclasses import dataclass

from ..kvm.memory import host_available_bytes

GiB = 1 << 30
SEED_CALC_TIMES = (50, 100, 200, 300, 400, 500, 750, 1000, 1500, 2000)
QUICK_CALC_TIMES = (50, 100, 200, 500, 1000)
# The seed table's column order; the modes are dirtyrate/modes.py's (tests/test_bench.py)
MODES = ("page-sampling", "dirty-bitmap", "dirty-ring")


@dataclass(frozen=True)
class BenchPlan:
    sizes: tuple  # bytes
    calc_times: tuple  # ms
    runs: int = 3
    wps: int = 3_000_000
    modes: tuple = MODES
    pattern: str = "random"  # patterns.parse_pattern's canonical name
    backing: str = "anonymous"  # kvm/backing.py
    slots: int = 1  # memslots of the data region

    @property
    def windows(self):
        return len(self.sizes) * len(self.calc_times) * self.runs * len(self.modes)


def default_sizes(total_ram=None):
    """1, 4 and 16 GiB; 24 GiB (the seed's) where the host has >= 32 GiB."""
    if total_ram is None:
        with open("/proc/meminfo") as f:
            total_ram = int(f.readline().split()[1]) * 1024
    return (1 * GiB, 4 * GiB, 24 * GiB if total_ram >= 32 * GiB else 16 * GiB)


def plan(quick=False, sizes=None, calc_times=None, runs=3, pattern="random", backing="anonymous", slots=1):
    if quick:
        return BenchPlan(sizes or (1 * GiB,), calc_times or QUICK_CALC_TIMES, runs, pattern=pattern,
                         backing=backing, slots=slots)
    sizes = sizes or default_sizes()
    available = host_available_bytes()
    return BenchPlan(tuple(s for s in sizes if s < available) or sizes[:1], calc_times or SEED_CALC_TIMES, runs,
                     pattern=pattern, backing=backing, slots=slots)
