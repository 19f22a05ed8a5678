#!/usr/bin/env python3
"""Loopback migration benchmark (issue 13, item 4): a 512 MiB guest
writing 200 k writes/s, downtime limit 300 ms, max bandwidth unlimited,
both ends as separate processes over loopback (`kvmharness migrate-listen`
and `kvmharness migrate`), --runs times; total time, downtime, iteration
rates, and the switch-over's hashing on each side.

QEMU 7.2 on the same runner, our writer booted in it (max-bandwidth 10
GiB/s, downtime-limit 300 ms): 1.80 s total, 89 ms downtime at 4.8 Gbit/s
(issue 13's measurement; QEMU cannot boot our guest until the QEMU-target
issue's multiboot image exists, so it is quoted, not rerun here).

Usage: scripts/bench_migration.py [--runs 3] [--mem 512MiB] [--wps 200k] [--profile FILE]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")
QEMU_72 = {"total-s": 1.80, "downtime-ms": 89}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(mem, wps, profile=None):
    port = free_port()
    dest = subprocess.Popen([KVMHARNESS, "migrate-listen", "--port", str(port), "--run-after", "100ms", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        source = [KVMHARNESS, "migrate", "--to", f"127.0.0.1:{port}", "--mem", mem, "--wps", wps,
                  "--downtime", "300ms", "--json"]
        if profile:
            source = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "kvmharness.cli", *source[1:]]
        src = subprocess.run(source, capture_output=True, text=True, timeout=300)
        dest.communicate(timeout=60)
    finally:
        dest.kill()
    if src.returncode != 0:
        raise RuntimeError(src.stderr)
    return json.loads(src.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mem", default="512MiB")
    ap.add_argument("--wps", default="200k")
    ap.add_argument("--profile", help="cProfile the source of one more run into this file")
    args = ap.parse_args()
    totals, downtimes = [], []
    for _ in range(args.runs):
        r = one(args.mem, args.wps)
        totals.append(r["total-seconds"])
        downtimes.append(r["downtime-ms"])
        its = ", ".join(f"{i['pages']} pages at {i['bytes'] / i['seconds'] / 1e9:.2f} GB/s" for i in r["iterations"])
        print(f"total {r['total-seconds']:.3f} s, downtime {r['downtime-ms']:.1f} ms ({r['downtime-basis']}), "
              f"final {r['final-pages']} pages, hashing {r['source-hash-ms']:.1f} + "
              f"{r['destination'].get('hash-ms', 0):.1f} ms; {its}", flush=True)
    print(f"median: total {statistics.median(totals):.3f} s (QEMU 7.2: {QEMU_72['total-s']} s), downtime "
          f"{statistics.median(downtimes):.1f} ms (QEMU 7.2: {QEMU_72['downtime-ms']} ms)")
    if args.profile:
        one(args.mem, args.wps, args.profile)
        print(f"source profile: {args.profile} (python -m pstats {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
