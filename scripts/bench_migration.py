#!/usr/bin/env python3
"""Loopback migration benchmark: kvmharness beside QEMU 7.2 and QEMU 10
(with and without multifd), all migrating the same writer in one run.

A 512 MiB region written at 200 k random writes/s, downtime limit 300 ms,
over loopback, --runs times each, the configurations interleaved run by run
so that a slow spell of the host hits all of them alike:

* kvmharness: `kvmharness migrate-listen` and `kvmharness migrate`, two
  processes (bandwidth unlimited);
* QEMU 7.2 / QEMU 10: our writer booted in each QEMU found (issue 15's
  multiboot image), a destination QEMU with `-incoming defer`,
  max-bandwidth 10 GiB/s (QEMU's default 128 MiB/s would be the limit);
* QEMU 10 + multifd: the same with the multifd capability on both ends
  (QEMU's default 2 channels).

Every QEMU destination's RAM is checked against replay after the switch
(ours verifies every page's hash itself).  Prints each run and the medians
with their spread; --out writes bench-migration.json and the table into
OUT/README.md (between the MIGBENCH markers).

Usage: sudo .venv/bin/python scripts/bench_migration.py [--runs 5] [--mem 512MiB] [--wps 200k]
           [--out docs/results/qemu10] [--profile FILE]
"""

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

from kvmharness import units
from kvmharness.microvm.truth import tag_mismatches
from kvmharness.qemu.guest import QemuGuest
from kvmharness.qemu.launch import find_qemus
from kvmharness.qemu.migrate import migrate_qemu
from results_doc import replace_block

KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")
DOWNTIME_MS = 300
QEMU_MAX_BANDWIDTH = 10 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(mem, wps, profile=None):
    port = free_port()
    dest = subprocess.Popen([KVMHARNESS, "migrate-listen", "--port", str(port), "--run-after", "100ms", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        source = [KVMHARNESS, "migrate", "--to", f"127.0.0.1:{port}", "--mem", f"{mem >> 20}MiB", "--wps", str(wps),
                  "--downtime", f"{DOWNTIME_MS}ms", "--json"]
        if profile:
            source = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "kvmharness.cli", *source[1:]]
        src = subprocess.run(source, capture_output=True, text=True, timeout=300)
        dest.communicate(timeout=60)
    finally:
        dest.kill()
    if src.returncode != 0:
        raise RuntimeError(src.stderr)
    r = json.loads(src.stdout)
    its = ", ".join(f"{i['pages']} pages at {i['bytes'] / i['seconds'] / 1e9:.2f} GB/s" for i in r["iterations"])
    detail = (f"{r['downtime-basis']}, final {r['final-pages']} pages, hashing {r['source-hash-ms']:.1f} + "
              f"{r['destination'].get('hash-ms', 0):.1f} ms; {its}")
    return {"total-s": r["total-seconds"], "downtime-ms": r["downtime-ms"], "converged": r["converged"],
            "ram-exact": r["verified"], "syncs": len(r["iterations"]) + 1, "detail": detail}


def qemu_run(qemu, mem, wps, multifd, seed):
    caps = ("multifd",) if multifd else ()
    port = free_port()
    with QemuGuest(mem, seed=seed, qemu=qemu) as src, QemuGuest(mem, seed=seed, qemu=qemu, incoming="defer") as dst:
        src.wait_ready()
        if caps:
            dst.qmp.execute("migrate-set-capabilities", {"capabilities": [{"capability": "multifd", "state": True}]})
        dst.qmp.execute("migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
        src.run_writer(wps, "random")
        time.sleep(0.5)
        m = migrate_qemu(src.qmp, f"tcp:127.0.0.1:{port}", 120,
                         {"max-bandwidth": QEMU_MAX_BANDWIDTH, "downtime-limit": DOWNTIME_MS}, caps)
        exact = None
        if m.completed:
            dst.adopt(src.logs)
            dst.hold()
            exact = tag_mismatches(dst) == (0, 0)
    info, ram = m.info, m.info.get("ram", {})
    return {"total-s": info.get("total-time", 0) / 1000, "downtime-ms": info.get("downtime"),
            "converged": m.completed, "ram-exact": exact, "syncs": ram.get("dirty-sync-count"),
            "detail": f"{info.get('status')}, {ram.get('transferred', 0) / 2**20:.0f} MiB sent at "
                      f"{ram.get('mbps', 0):.0f} Mbit/s (QEMU's last rate)"}


def configurations():
    found = find_qemus()
    seconds = [q for q in found if not q.millisecond]
    ms = [q for q in found if q.millisecond]
    out = [("kvmharness", None, False)]
    if seconds:
        out.append((f"QEMU {seconds[-1].version_text}", seconds[-1], False))
    if ms:
        out += [(f"QEMU {ms[-1].version_text}", ms[-1], False), (f"QEMU {ms[-1].version_text} + multifd", ms[-1], True)]
    return out


def spread(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(results, runs, mem, wps):
    lines = [f"{mem >> 20} MiB written at {wps:,} random writes/s, downtime limit {DOWNTIME_MS} ms, loopback, "
             f"{runs} runs each, interleaved; median (min-max):", "",
             "| migration | total (s) | downtime (ms) | converged | destination RAM = replay |",
             "|---|---|---|---|---|"]
    for name, rows in results.items():
        done = [r for r in rows if r["converged"]]
        total = spread([r["total-s"] for r in done]) if done else "-"
        down = spread([r["downtime-ms"] for r in done]) if done else "-"
        exact = sum(1 for r in rows if r["ram-exact"])
        lines.append(f"| {name} | {total} | {down} | {len(done)} of {len(rows)} | {exact} of {len(rows)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mem", type=units.parse_size, default=units.parse_size("512MiB"))
    ap.add_argument("--wps", type=units.parse_rate, default=units.parse_rate("200k"))
    ap.add_argument("--out", type=pathlib.Path, help="write bench-migration.json and the README table here")
    ap.add_argument("--profile", help="cProfile the kvmharness source of one more run into this file")
    args = ap.parse_args()
    configs = configurations()
    results = {name: [] for name, _, _ in configs}
    for run in range(args.runs):
        for name, qemu, multifd in configs:
            r = ours(args.mem, args.wps) if qemu is None else qemu_run(qemu, args.mem, args.wps, multifd, run + 1)
            results[name].append(r)
            print(f"[{run}] {name}: total {r['total-s']:.3f} s, downtime {r['downtime-ms']} ms, RAM exact "
                  f"{r['ram-exact']}; {r['detail']}", flush=True)
    text = table(results, args.runs, args.mem, args.wps)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench-migration.json").write_text(json.dumps(
            {"mem": args.mem, "wps": args.wps, "downtime-limit-ms": DOWNTIME_MS, "runs": results}, indent=2) + "\n")
        replace_block(args.out / "README.md", "MIGBENCH", text, "# QEMU 10")
    if args.profile:
        ours(args.mem, args.wps, args.profile)
        print(f"source profile: {args.profile} (python -m pstats {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
