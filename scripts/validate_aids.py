#!/usr/bin/env python3
"""Migrations that need QEMU's aids, predicted and then run (as root), on a
tc-shaped veth link between two network namespaces.

For each scenario (RAM, writes/s, link, downtime) and aid (none,
auto-converge, dirty-limit) one `kvmharness migrate --predict-link` run:
the model's verdict, total time and throttle level from the curve measured
just before, then the real migration with the same trigger and parameters;
the guest's throughput while it migrated (from its exact counters) and a
timeline plot.  Writes results.json, README.md and the plots to --out.

    sudo .venv/bin/python scripts/validate_aids.py --out docs/results/convergence
"""

import argparse
import json
import os
import pathlib
import sys

from kvmharness.migration.testbed import migrate_across, veth_testbed

SCENARIOS = [  # (mem, writes/s, link bit/s, downtime)
    ("256MiB", "30k", 800_000_000, "300ms"),
    ("256MiB", "45k", 1_000_000_000, "300ms"),
    ("512MiB", "25k", 1_000_000_000, "200ms"),
]
AIDS = (None, "auto-converge", "dirty-limit")
LIMIT = ["--parameter", "vcpu-dirty-limit=40", "--parameter", "x-vcpu-dirty-limit-period=100"]


def run_one(tb, port, mem, wps, downtime, aid, plot):
    args = ["--mem", mem, "--wps", wps, "--downtime", downtime, "--max-iterations", "60" if aid else "15",
            "--json", "--predict-link", f"{tb.bits_per_second // 10**6}Mbit/s", "--timeline", str(plot)]
    if aid:
        args += ["--capability", aid] + LIMIT
    if aid == "dirty-limit":
        args += ["--dirty-ring-size", "1024"]
    rc, out, err = migrate_across(tb, port, args)
    if not out:
        raise SystemExit(f"migrate failed: {err.strip()}")
    return json.loads(out)


def summary(report, wps):
    pred = report["prediction"]["model"]
    timeline = report["timeline"]
    live = timeline[-1][0] - timeline[0][0]
    throughput = (timeline[-1][1] - timeline[0][1]) / live if live > 0 else 0.0
    real_level = report.get("levels-per-iteration", [0])[-1] if report.get("aid") else 0
    return {
        "predicted-converges": pred["converges"], "converged": report["converged"],
        "predicted-total-s": pred["total-seconds"], "total-s": report["total-seconds"],
        "total-error": (pred["total-seconds"] - report["total-seconds"]) / report["total-seconds"],
        "predicted-level": pred.get("final-level", 0), "level": real_level,
        "predicted-steps": [s["level"] for s in pred.get("throttle-steps", [])],
        "steps": [s["level"] for s in report.get("throttle-steps", [])],
        "iterations": len(report["iterations"]), "predicted-iterations": len(pred["iterations"]),
        "downtime-ms": report["downtime-ms"],
        "guest-throughput": throughput / wps,  # share of the asked writes/s it kept while migrating
        "predicted-slowdown": pred.get("guest-slowdown", 0.0),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/convergence")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("validate_aids.py needs root (network namespaces, tc)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, port = [], 4600
    for mem, wps, bits, downtime in SCENARIOS:
        with veth_testbed(bits) as tb:
            for aid in AIDS:
                port += 1
                name = f"{mem}-{wps}-{bits // 10**6}mbit-{aid or 'none'}"
                report = run_one(tb, port, mem, wps, downtime, aid, out / f"timeline-{name}.png")
                rate = float(wps.rstrip("k")) * 1000
                row = {"scenario": name, "mem": mem, "wps": wps, "link-mbit": bits // 10**6, "downtime": downtime,
                       "aid": aid or "none", **summary(report, rate)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| scenario | aid | model | real | total model / real (s) | error | level model / real | "
             "steps real | guest kept | downtime ms |", "|" + "---|" * 10]
    for r in rows:
        unit = "%" if r["aid"] == "auto-converge" else (" MB/s" if r["aid"] == "dirty-limit" else "")
        lines.append(
            f"| {r['mem']} {r['wps']} w/s, {r['link-mbit']} Mbit/s, {r['downtime']} | {r['aid']} | "
            f"{'conv' if r['predicted-converges'] else 'no'} | {'conv' if r['converged'] else 'no'} | "
            f"{r['predicted-total-s']:.2f} / {r['total-s']:.2f} | {r['total-error'] * 100:+.1f} % | "
            f"{r['predicted-level']}{unit} / {r['level']}{unit} | {r['steps']} | "
            f"{r['guest-throughput'] * 100:.0f} % | {r['downtime-ms']:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
