#!/usr/bin/env python3
"""Micro-VM benchmarks (issue 2), side by side in one run:

1. time from VM creation to the first guest write, 1 GiB data slot
   (target < 20 ms): MicroVm() is timed from before /dev/kvm is opened until
   the host sees the guest's first warm-up store in page 0;
2. guest writer rate against the very same machine code run in a host
   process (target >= 0.9x): the guest image's entry is called as a C
   function in a forked child, on host memory of the same size, so both
   sides execute identical instructions on an identical working set.

Usage: scripts/bench_vm.py [--repeat N] [--json]
"""

import argparse
import json
import statistics
import sys
import time

from kvmharness.microvm.host_loop import host_loop_rate
from kvmharness.microvm.machine import MicroVm, VmConfig
from kvmharness.microvm.writer import CATCH_UP_SECONDS
from kvmharness.microvm.writer import measure_writer

GiB, MiB = 1 << 30, 1 << 20


def time_to_first_write(mem, prefault):
    t0 = time.perf_counter()
    with MicroVm(VmConfig(mem=mem, prefault=prefault)) as vm:
        vm.start()
        words = vm.data_words()
        while words[0] == 0:
            pass
        elapsed = time.perf_counter() - t0
        del words
        vm.wait_ready()
    return elapsed


def guest_rate(mem, seconds, wps):
    with MicroVm(VmConfig(mem=mem)) as vm:
        vm.start()
        vm.wait_ready()
        _, per = measure_writer(vm, seconds, wps)
    return per[0].writes_per_second


def host_rate(mem, seconds, wps, tsc_khz):
    return host_loop_rate(mem, seconds, wps, tsc_khz * 1000, CATCH_UP_SECONDS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    results = {"first-write-ms": {}, "writer-rate": []}
    for prefault in (False, True):
        times = [time_to_first_write(GiB, prefault) * 1e3 for _ in range(args.repeat)]
        results["first-write-ms"]["prefault" if prefault else "no-prefault"] = {
            "median": statistics.median(times), "min": min(times), "max": max(times),
        }
    with MicroVm(VmConfig(mem=64 * MiB, warm=False, prefault=False)) as vm:
        tsc_khz = vm.tsc_khz
    for mem in (64 * MiB, GiB):
        for wps in (0, 3_000_000):
            g = statistics.median(guest_rate(mem, 0.5, wps) for _ in range(args.repeat))
            h = statistics.median(host_rate(mem, 0.5, wps, tsc_khz) for _ in range(args.repeat))
            results["writer-rate"].append({"mem-mib": mem >> 20, "target-wps": wps,
                                           "guest-wps": g, "host-wps": h, "ratio": g / h})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("time from VM creation to the first guest write, 1 GiB slot (target < 20 ms):")
    for mode, r in results["first-write-ms"].items():
        print(f"  {mode:<12} median {r['median']:7.2f} ms  (min {r['min']:.2f}, max {r['max']:.2f})")
    print("guest writer vs the same code in a host process (target >= 0.9x):")
    print(f"  {'region':>8} {'target':>10} {'guest w/s':>14} {'host w/s':>14} {'ratio':>7}")
    for r in results["writer-rate"]:
        target = "unlimited" if not r["target-wps"] else f"{r['target-wps'] / 1e6:.0f}M"
        print(f"  {r['mem-mib']:>6}Mi {target:>10} {r['guest-wps']:14,.0f} "
              f"{r['host-wps']:14,.0f} {r['ratio']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
