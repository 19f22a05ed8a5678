#!/usr/bin/env python3
"""Validate the migration predictor against real migrations (issues 6, 13).

For every scenario of a grid (workload x write rate x bandwidth x
downtime): two network namespaces joined by a veth pair shaped by tc tbf to
the bandwidth; the destination (`kvmharness migrate-listen`) in one, the
source (`kvmharness migrate --predict-link B`) in the other.  The source
measures dirty(t) on its running guest (one window with x-periods),
predicts, then migrates for real; we compare the predicted and actual
convergence, total time and downtime, and the seed's one-window verdict.

The workloads (v2) are chosen so that both outcomes occur and so that the
seed's rule meets the cases where it should fail: a small hot set with a
slowly dirtied large cold part (the downtime-long window sees the hot set
only; a pre-copy pass lasts seconds and sees much of the cold part too),
bursts shorter than the window, skewed (Zipf) popularity.

Writes docs/results/migration/validation.{md,json} (or --out).
Usage (root): scripts/validate_migration.py [--quick] [--v1] [--out DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from kvmharness.migration.testbed import veth_testbed

KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")
MAX_ITERATIONS = 8
# (label, writer arguments, access rates): v2's workloads
WORKLOADS = [
    ("uniform", [], [5_000, 40_000, 150_000, 600_000]),
    ("hotcold:0.02:0.98", ["--pattern", "hotcold:0.02:0.98"], [100_000, 400_000, 2_000_000]),
    ("hotcold:0.1:0.9", ["--pattern", "hotcold:0.1:0.9"], [50_000, 300_000]),
    ("zipf:0.99", ["--pattern", "zipf:0.99"], [20_000, 100_000, 400_000]),
    ("zipf:1.2", ["--pattern", "zipf:1.2"], [200_000, 2_000_000]),
    ("bursts 50ms/950ms", ["--burst", "50ms/950ms"], [300_000, 2_000_000]),
]


def scenario(tb, port, size, wps, downtime_ms, workload=("uniform", [])):
    bandwidth = f"{tb.bits_per_second}bit/s"
    dest = subprocess.Popen([KVMHARNESS, "migrate-listen", "--host", tb.destination_ip, "--port", str(port),
                             "--secret-file", tb.secret_file, "--run-after", "300ms", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=tb.enter(tb.destination_ns))
    try:
        time.sleep(0.5)
        src = subprocess.run([KVMHARNESS, "migrate", "--to", f"{tb.destination_ip}:{port}", "--mem", size,
                              "--wps", str(wps), *workload[1], "--downtime", f"{downtime_ms}ms", "--max-iterations",
                              str(MAX_ITERATIONS), "--predict-link", bandwidth, "--secret-file", tb.secret_file, "--json"],
                             capture_output=True, text=True, timeout=600, preexec_fn=tb.enter(tb.source_ns))
        dest.communicate(timeout=60)
    finally:
        dest.kill()
    if src.returncode not in (0, 1) or not src.stdout:  # 1: it did not converge, a result too
        raise RuntimeError(src.stderr)
    r = json.loads(src.stdout)
    p = r["prediction"]["model"]
    return {
        "workload": workload[0],
        "size": size, "wps": wps, "bandwidth-bps": tb.bits_per_second, "downtime-ms": downtime_ms,
        "predicted-converges": p["converges"], "actual-converged": r["converged"],
        "seed-rule-converges": r["prediction"]["seed-verdict"]["converges"],
        "predicted-total-s": p["total-seconds"],
        "actual-total-s": r["total-seconds"],
        "predicted-downtime-ms": p["downtime-seconds"] * 1e3 if p["converges"] else None,
        "actual-downtime-ms": r["downtime-ms"] if r["converged"] else None,
        "predicted-iterations": len(p["iterations"]), "actual-iterations": len(r["iterations"]),
        "verified": r["verified"], "curve": r["prediction"]["curve"],
    }


def summarize(rows):
    right = sum(r["predicted-converges"] == r["actual-converged"] for r in rows)
    seed_right = sum(r["seed-rule-converges"] == r["actual-converged"] for r in rows)
    both = [r for r in rows if r["predicted-converges"] and r["actual-converged"]]
    total_err = sorted(abs(r["predicted-total-s"] / r["actual-total-s"] - 1) for r in both)
    down_err = [abs(r["predicted-downtime-ms"] - r["actual-downtime-ms"]) for r in both]
    return {
        "scenarios": len(rows),
        "converged": sum(r["actual-converged"] for r in rows),
        "convergence-call-right": right / len(rows),
        "seed-rule-call-right": seed_right / len(rows),
        "seed-rule-wrong": [f"{r['workload']} {r['wps']} w/s {r['bandwidth-bps'] / 1e6:.0f} Mbit/s "
                            f"{r['downtime-ms']} ms: seed says {'yes' if r['seed-rule-converges'] else 'no'}, "
                            f"{'converged' if r['actual-converged'] else 'did not converge'}"
                            for r in rows if r["seed-rule-converges"] != r["actual-converged"]],
        "model-wrong": [f"{r['workload']} {r['wps']} w/s {r['bandwidth-bps'] / 1e6:.0f} Mbit/s "
                        f"{r['downtime-ms']} ms" for r in rows if r["predicted-converges"] != r["actual-converged"]],
        "median-total-time-error": statistics.median(total_err) if total_err else None,
        "p90-total-time-error": total_err[min(len(total_err) - 1, int(0.9 * len(total_err)))] if total_err else None,
        "median-downtime-error-ms": statistics.median(down_err) if down_err else None,
        "all-verified": all(r["verified"] for r in rows if r["actual-converged"]),
    }


def markdown(rows, summary, host):
    lines = [f"# Migration predictor vs real migrations ({host})", "",
             f"{summary['scenarios']} scenarios; convergence call right in "
             f"{summary['convergence-call-right']:.0%} (the seed's one-window rule: "
             f"{summary['seed-rule-call-right']:.0%}); median total-time error "
             f"{(summary['median-total-time-error'] or 0):.1%} (90th percentile "
             f"{(summary['p90-total-time-error'] or 0):.1%}); median downtime error "
             f"{(summary['median-downtime-error-ms'] or 0):.0f} ms; RAM verified identical in every "
             f"completed migration: {summary['all-verified']}.", "",
             "| workload | size | writes/s | link | downtime limit | predicted | actual | seed rule | predicted total s | "
             "actual total s | predicted downtime ms | actual downtime ms | iterations (pred/actual) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pd = "-" if r["predicted-downtime-ms"] is None else f"{r['predicted-downtime-ms']:.0f}"
        ad = "-" if r["actual-downtime-ms"] is None else f"{r['actual-downtime-ms']:.0f}"
        lines.append(
            f"| {r.get('workload', 'uniform')} | {r['size']} | {r['wps']:,} | {r['bandwidth-bps'] / 1e6:.0f} Mbit/s | {r['downtime-ms']} ms | "
            f"{'yes' if r['predicted-converges'] else 'no'} | {'yes' if r['actual-converged'] else 'no'} | "
            f"{'yes' if r['seed-rule-converges'] else 'no'} | {r['predicted-total-s']:.2f} | "
            f"{r['actual-total-s']:.2f} | {pd} | {ad} | {r['predicted-iterations']}/{r['actual-iterations']} |")
    lines += ["", "Where the seed's one-window rule is wrong:", ""] + [f"* {w}" for w in summary["seed-rule-wrong"]]
    lines += ["", "Where the model is wrong:", ""] + [f"* {w}" for w in summary["model-wrong"] or ["none"]]
    return "\n".join(lines) + "\n"


def grid(quick, v1):
    """(size, workload, wps, downtime ms) per bandwidth."""
    if v1:
        rates = [20_000, 1_000_000] if quick else [5_000, 20_000, 60_000, 200_000, 1_000_000]
        return [("256MiB", ("uniform", []), wps, dt) for wps in rates for dt in (100, 300)]
    out = []
    for label, extra, rates in WORKLOADS:
        for wps in rates[:1] if quick else rates:
            for dt in (300,) if quick else (100, 300):
                out.append(("128MiB", (label, extra), wps, dt))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one rate and downtime per workload")
    ap.add_argument("--v1", action="store_true", help="issue 6's grid: uniform writes only, 256 MiB")
    ap.add_argument("--out", default="docs/results/migration")
    args = ap.parse_args()
    links = [1_000_000_000] if args.quick else [500_000_000, 2_000_000_000]
    rows = []
    port = 4600
    for bw in links:
        with veth_testbed(bw) as tb:
            for size, workload, wps, dt in grid(args.quick, args.v1):
                port += 1
                row = scenario(tb, port, size, wps, dt, workload)
                rows.append(row)
                print(f"{workload[0]:<18} {size} {wps:>9,} w/s {bw / 1e6:>5.0f} Mbit/s {dt:>4} ms: predicted "
                      f"{row['predicted-converges']}, actual {row['actual-converged']}, seed "
                      f"{row['seed-rule-converges']}, total {row['predicted-total-s']:.2f}/{row['actual-total-s']:.2f} s",
                      file=sys.stderr, flush=True)
    summary = summarize(rows)
    host = subprocess.run([KVMHARNESS, "probe", "--json"], capture_output=True, text=True).stdout
    host = json.loads(host)
    host_line = f"{host['host-kind']} KVM, {host['cpu-model']}, kernel {host['kernel']}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "validation.md"), "w") as f:
        f.write(markdown(rows, summary, host_line))
    with open(os.path.join(args.out, "validation.json"), "w") as f:
        json.dump({"summary": summary, "host": host, "max-iterations": MAX_ITERATIONS, "scenarios": rows}, f,
                  indent=1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
