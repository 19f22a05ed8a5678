#!/usr/bin/env python3
"""QEMU's calc-dirty-rate against exact ground truth: `qemu-check` on 1 GiB
and 4 GiB, at the given windows (default 1 s and 2 s, what QEMU 7.2 takes;
the seed's 50,100,200,500,1000,2000 ms on a QEMU with millisecond windows),
every mode, a few runs each; writes OUT/check-*.json and the table in
OUT/README.md (between the CHECK markers).

    sudo .venv/bin/python scripts/qemu_table.py [--repeat 3] [--wps 3M]
    sudo .venv/bin/python scripts/qemu_table.py --qemu .venv/qemu/10.0.2/usr/bin/qemu-system-x86_64 \
        --calc-times 50ms,100ms,200ms,500ms,1s,2s --wps 1M --out docs/results/qemu10
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "qemu"
EXE = os.path.join(os.path.dirname(sys.executable), "kvmharness")
MARK = re.compile(r"<!-- CHECK -->.*<!-- /CHECK -->", re.S)


def fmt_range(lo, hi):
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}..{hi:.0f}"


def table(reports):
    lines = ["| region | window | mode | QEMU MB/s | truth MB/s (unique pages) | QEMU / truth | ring entries MB/s "
             "| kvmharness MB/s | its truth | kvmharness exact |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mem, report in reports:
        for r in report["rows"]:
            lo, hi = r["truth-mb-s-range"]
            entries = fmt_range(*r["ring-entries-mb-s"]) if r["ring-entries-mb-s"] else "-"
            exact = {True: "yes", False: "NO", None: "(estimate)"}[r["kvmharness-exact"]]
            lines.append(f"| {mem} | {r['calc-time-ms']} ms | {r['mode']} | {r['qemu-mb-s']} | "
                         f"{fmt_range(lo, hi)} | {r['qemu-over-truth']:.2f} | {entries} | "
                         f"{r['kvmharness-mb-s']:.0f} | {r['kvmharness-truth-mb-s']:.0f} | {exact} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wps", default="3M")
    ap.add_argument("--mems", default="1GiB,4GiB")
    ap.add_argument("--calc-times", default="1s,2s")
    ap.add_argument("--qemu", help="the QEMU binary (default: qemu-check's, the newest found)")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    qemu = ["--qemu", args.qemu] if args.qemu else []
    for mem in args.mems.split(","):
        out = subprocess.run([EXE, "qemu-check", *qemu, "--mem", mem, "--wps", args.wps, "--calc-times",
                              args.calc_times, "--repeat", str(args.repeat), "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"qemu-check --mem {mem} failed: {out.stderr.strip()}")
        report = json.loads(out.stdout)
        (out_dir / f"check-{mem}.json").write_text(json.dumps(report, indent=2) + "\n")
        reports.append((mem, report))
        print(f"{mem}: {len(report['rows'])} rows in {report['seconds']} s, QEMU RAM exact: "
              f"{report['qemu-ram-exact']}", flush=True)
    readme = out_dir / "README.md"
    text = readme.read_text() if readme.exists() else "# QEMU as a target\n\n<!-- CHECK -->\n<!-- /CHECK -->\n"
    block = (f"<!-- CHECK -->\nQEMU {reports[0][1]['qemu-version']} ({reports[0][1]['windows']}), writer random at "
             f"{args.wps} writes/s, {args.repeat} runs per cell, dirty-ring-size {reports[0][1]['dirty-ring-size']}:"
             f"\n\n{table(reports)}\n<!-- /CHECK -->")
    readme.write_text(MARK.sub(lambda m: block, text))
    print(table(reports))


if __name__ == "__main__":
    main()
