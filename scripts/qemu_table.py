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
import statistics
import subprocess
import sys

from results_doc import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "qemu"
EXE = os.path.join(os.path.dirname(sys.executable), "kvmharness")


def fmt_range(lo, hi):
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}..{hi:.0f}"


def beyond_ms(r):
    """For an exact mode: how many milliseconds of the guest's writing QEMU
    counted beyond the most generous window its brackets allow (its pages
    less the upper bracket, or the ring entries' upper end for the ring,
    over the pages the guest dirtied per millisecond in the window).  A
    count over a longer span than the one QEMU divides by shows as a
    positive, roughly constant number of milliseconds at every window."""
    if r["mode"] == "page-sampling":
        return None
    seconds = r["calc-time-ms"] / 1000
    pages = r["qemu-mb-s"] * seconds * 256  # MiB/s x s -> 4 KiB pages (QEMU truncates to whole MiB/s)
    top = r["ring-entries"][1] if r["ring-entries"] else r["truth-pages"][2]
    return (pages - top) / (r["truth-pages"][1] / r["calc-time-ms"])


def table(reports):
    lines = ["| region | window | mode | QEMU MB/s | truth MB/s (unique pages) | QEMU / truth | ring entries MB/s "
             "| counted beyond the window (ms) | kvmharness MB/s | its truth | kvmharness exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mem, report in reports:
        for r in report["rows"]:
            lo, hi = r["truth-mb-s-range"]
            entries = fmt_range(*r["ring-entries-mb-s"]) if r["ring-entries-mb-s"] else "-"
            exact = {True: "yes", False: "NO", None: "(estimate)"}[r["kvmharness-exact"]]
            beyond = beyond_ms(r)
            lines.append(f"| {mem} | {r['calc-time-ms']} ms | {r['mode']} | {r['qemu-mb-s']} | "
                         f"{fmt_range(lo, hi)} | {r['qemu-over-truth']:.2f} | {entries} | "
                         f"{'-' if beyond is None else f'{beyond:+.1f}'} | "
                         f"{r['kvmharness-mb-s']:.0f} | {r['kvmharness-truth-mb-s']:.0f} | {exact} |")
    return "\n".join(lines)


def summary(reports):
    """Per region, mode and window: the median QEMU / truth, its range, and
    the median milliseconds counted beyond the window (exact modes)."""
    lines = ["| region | mode | " + " | ".join(f"{ms} ms" for ms in windows(reports)) + " |",
             "|---|---|" + "---|" * len(windows(reports))]
    for mem, report in reports:
        for mode in ("page-sampling", "dirty-bitmap", "dirty-ring"):
            cells = []
            for ms in windows(reports):
                rows = [r for r in report["rows"] if r["mode"] == mode and r["calc-time-ms"] == ms]
                if not rows:
                    cells.append("-")
                    continue
                ratios = [r["qemu-over-truth"] for r in rows]
                beyond = [b for b in map(beyond_ms, rows) if b is not None]
                cell = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                if beyond:
                    cell += f", {statistics.median(beyond):+.1f} ms"
                cells.append(cell)
            lines.append(f"| {mem} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def windows(reports):
    return sorted({r["calc-time-ms"] for _, report in reports for r in report["rows"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wps", default="3M")
    ap.add_argument("--mems", default="1GiB,4GiB")
    ap.add_argument("--calc-times", default="1s,2s")
    ap.add_argument("--qemu", help="the QEMU binary (default: qemu-check's, the newest found)")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--from-json", action="store_true", help="no measuring: the tables from OUT/check-*.json")
    args = ap.parse_args()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    qemu = ["--qemu", args.qemu] if args.qemu else []
    for mem in args.mems.split(","):
        if args.from_json:  # the tables again from the committed measurements
            reports.append((mem, json.loads((out_dir / f"check-{mem}.json").read_text())))
            continue
        out = subprocess.run([EXE, "qemu-check", *qemu, "--mem", mem, "--wps", args.wps, "--calc-times",
                              args.calc_times, "--repeat", str(args.repeat), "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"qemu-check --mem {mem} failed: {out.stderr.strip()}")
        report = json.loads(out.stdout)
        (out_dir / f"check-{mem}.json").write_text(json.dumps(report, indent=2) + "\n")
        reports.append((mem, report))
        print(f"{mem}: {len(report['rows'])} rows in {report['seconds']} s, QEMU RAM exact: "
              f"{report['qemu-ram-exact']}", flush=True)
    block = (f"QEMU {reports[0][1]['qemu-version']} ({reports[0][1]['windows']}), writer random at "
             f"{args.wps} writes/s, {args.repeat} runs per cell, dirty-ring-size {reports[0][1]['dirty-ring-size']}:"
             f"\n\nMedian QEMU / truth per cell (its range over the runs) and, for the exact modes, the median "
             f"milliseconds counted beyond the window:\n\n{summary(reports)}\n\nEvery run:\n\n{table(reports)}")
    replace_block(out_dir / "README.md", "CHECK", block, "# QEMU as a target")
    print(table(reports))


if __name__ == "__main__":
    main()
