#!/usr/bin/env python3
"""Workload benchmark (issue 12): what each pattern costs the writer, and
its dirty curve against its theory.

1. Unthrottled writer rate per workload on 64 MiB and 1 GiB, each measured
   right after `random` on the same VM (side by side, so host noise hits
   both), reported as a ratio to `random` (target: >= 0.5x).
2. Dirty pages against window length on one 1 GiB region (dirty-bitmap,
   one window per length and pattern, from 50 ms to 2 s, the writer paced
   at --wps): measured, replayed truth and the pattern's theory at the
   accesses the guest really made; a plot of the measured points over the
   theory curves.

Usage: scripts/bench_patterns.py [--out docs/results/patterns] [--wps 3M] [--reps 3]
"""

import argparse
import json
import os
import statistics
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kvmharness import patterns, units  # noqa: E402
from kvmharness.dirtyrate import DirtyRateMonitor  # noqa: E402
from kvmharness.dirtyrate.theory import expected_dirty_pages  # noqa: E402
from kvmharness.microvm.machine import MicroVm, VmConfig  # noqa: E402
from kvmharness.microvm.writer import measure_writer  # noqa: E402
from kvmharness.probe import probe  # noqa: E402
from kvmharness.pytest_plugin import replayed  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
RATE_WORKLOADS = [  # (label, writer options)
    ("sequential", {"pattern": "sequential"}),
    ("hotcold:0.1:0.9", {"pattern": "hotcold:0.1:0.9"}),
    ("hotcold:0.02:0.98", {"pattern": "hotcold:0.02:0.98"}),
    ("zipf:0.99", {"pattern": "zipf:0.99"}),
    ("zipf:1.2", {"pattern": "zipf:1.2"}),
    ("random, 50 % writes", {"pattern": "random", "write_percent": 50}),
    ("zipf:0.99, 30 % writes", {"pattern": "zipf:0.99", "write_percent": 30}),
    ("random, bursts 100ms/100ms (rate while on)", {"pattern": "random", "burst": patterns.parse_burst("100ms/100ms")}),
]
CURVE_PATTERNS = ["random", "hotcold:0.1:0.9", "hotcold:0.02:0.98", "zipf:0.99", "zipf:1.2"]
CURVE_WINDOWS_MS = [50, 100, 200, 500, 1000, 2000]


def _rate(vm, seconds, options):
    """Accesses/s; with bursts, while writing: over 20 whole periods, the
    accesses over the writing phases' share of the time (the idle count
    moves in whole phases, so it is not used to divide)."""
    burst = options.get("burst")
    if burst:
        seconds = 20 * (burst.on + burst.off)
    measured, per = measure_writer(vm, seconds, 0, **options)
    return per[0].writes / (measured * (burst.duty if burst else 1.0))


def writer_rates(sizes, reps, seconds=0.5):
    rows = []
    for size in sizes:
        with MicroVm(VmConfig(mem=size, seed=7)) as vm:
            vm.start()
            vm.wait_ready()
            for label, options in RATE_WORKLOADS:
                pairs = []
                for _ in range(reps):
                    base = _rate(vm, seconds, {"pattern": "random", "write_percent": 100,
                                               "burst": patterns.NO_BURST})
                    other = _rate(vm, seconds, {"write_percent": 100, "burst": patterns.NO_BURST, **options})
                    pairs.append((base, other))
                vm.set_writer(burst=patterns.NO_BURST, write_percent=100)
                ratio = statistics.median(o / b for b, o in pairs)
                rows.append({"size": size, "workload": label, "random-wps": statistics.median(b for b, _ in pairs),
                             "wps": statistics.median(o for _, o in pairs), "ratio": ratio})
                print(f"{size >> 20} MiB {label}: {rows[-1]['wps'] / 1e6:.1f} M/s, "
                      f"random {rows[-1]['random-wps'] / 1e6:.1f} M/s: {ratio:.2f}x", flush=True)
    return rows


def dirty_curves(wps):
    points = []
    with MicroVm(VmConfig(mem=GiB, seed=9)) as vm:
        vm.start()
        vm.wait_ready()
        monitor = DirtyRateMonitor(vm)
        for pattern in CURVE_PATTERNS:
            vm.run_writer(wps, pattern)
            time.sleep(0.2)
            for ms in CURVE_WINDOWS_MS:
                result = monitor.measure(ms, "millisecond", mode="dirty-bitmap")
                truth = replayed(vm, result.edges)["truth"][0]
                stream = vm.writer.streams()[0]
                theory = expected_dirty_pages([(stream, result.guest_writes)])
                points.append({"pattern": pattern, "window-ms": result.window_us / 1e3, "calc-time-ms": ms,
                               "dirty-pages": result.dirty_pages, "replay": truth, "accesses": result.guest_writes,
                               "theory": theory, "stream": [stream.seed, stream.npages, stream.table_seed]})
                print(f"{pattern} {ms} ms: {result.dirty_pages} pages, replay {truth}, theory {theory:.0f}, "
                      f"{result.guest_writes} accesses", flush=True)
            vm.hold()
    return points


def plot_curves(points, path):
    """Left: dirty pages against window length, measured (points) and the
    theory at the accesses the guest really made in each window (lines: the
    tracked writer speeds up as its hot pages stay dirty, so no constant
    rate fits).  Right: the same against accesses, theory continuous."""
    from kvmharness.microvm.replay import WriterStream

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for i, pattern in enumerate(CURVE_PATTERNS):
        pts = [p for p in points if p["pattern"] == pattern]
        color = f"C{i}"
        left.plot([p["window-ms"] for p in pts], [p["dirty-pages"] for p in pts], "o", color=color, label=pattern)
        left.plot([p["window-ms"] for p in pts], [p["theory"] for p in pts], "-", color=color, alpha=0.6)
        seed, npages, table_seed = pts[0]["stream"]
        stream = WriterStream(seed, 0, npages, pattern, 0, table_seed)
        ns = np.geomspace(min(p["accesses"] for p in pts) / 2, max(p["accesses"] for p in pts) * 2, 40)
        right.plot([p["accesses"] for p in pts], [p["dirty-pages"] for p in pts], "o", color=color, label=pattern)
        right.plot(ns, [expected_dirty_pages([(stream, n)]) for n in ns], "-", color=color, alpha=0.6)
    left.set_xlabel("window (ms)")
    right.set_xlabel("accesses in the window")
    left.set_title("1 GiB, dirty-bitmap: measured (points), theory at the window's accesses (lines)", fontsize=9)
    right.set_title("the same against accesses: theory curves", fontsize=9)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("dirty pages (of 262144)")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(host, rates, points, wps):
    lines = [f"# Workloads: writer cost and dirty curves ({host})", "",
             "## Unthrottled writer rate, each workload right after `random` on the same VM", "",
             "| size | workload | accesses/s | random | ratio |", "|---|---|---|---|---|"]
    for r in rates:
        lines.append(f"| {r['size'] >> 20} MiB | {r['workload']} | {r['wps'] / 1e6:.1f} M | "
                     f"{r['random-wps'] / 1e6:.1f} M | {r['ratio']:.2f}x |")
    lines += ["", f"## Dirty pages against window length, 1 GiB, dirty-bitmap, writer paced at "
                  f"{wps / 1e6:g} M accesses/s (tracked: what the host lets it do)", "",
              "| pattern | calc-time | window (ms) | accesses | measured | replay | theory | theory / replay |",
              "|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['pattern']} | {p['calc-time-ms']} | {p['window-ms']:.1f} | {p['accesses']} | "
                     f"{p['dirty-pages']} | {p['replay']} | {p['theory']:.0f} | {p['theory'] / p['replay']:.4f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from OUT/patterns.json")
    ap.add_argument("--out", default="results/patterns")
    ap.add_argument("--wps", type=units.parse_rate, default=3_000_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(args.out, "patterns.json")) as f:
            plot_curves(json.load(f)["curves"], os.path.join(args.out, "dirty_curves.png"))
        return 0
    os.makedirs(args.out, exist_ok=True)
    report = probe()
    host = f"{report.host_kind} KVM, {report.cpu_model}, {os.cpu_count()} CPUs, kernel {report.kernel}"
    rates = writer_rates((64 * MiB, GiB), args.reps)
    points = dirty_curves(args.wps)
    with open(os.path.join(args.out, "patterns.md"), "w") as f:
        f.write(markdown(host, rates, points, args.wps))
    with open(os.path.join(args.out, "patterns.json"), "w") as f:
        json.dump({"host": host, "rates": rates, "curves": points}, f, indent=1)
    plot_curves(points, os.path.join(args.out, "dirty_curves.png"))
    print(f"written: {args.out}/patterns.md, patterns.json, dirty_curves.png")
    worst = min(r["ratio"] for r in rates)
    return 0 if worst >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
