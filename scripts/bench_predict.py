#!/usr/bin/env python3
"""`predict` before and after issue 24, side by side in one run: wall time
end to end (the command as a user runs it) and the verdicts of the seed
author's table (5 bandwidths x 5 downtimes), for our own VM and for a
QEMU 10 VM over QMP, at 1 GiB and 4 GiB.

* old: `--curve full` (dirty(t) measured over the whole first pass, up to
  10 s; own VM: 4 KiB pages prefaulted, `--backing anonymous`);
* new: the default (`--curve short`: a few downtimes, at most 2 s, and the
  working-set model beyond; own VM on transparent huge pages, not
  prefaulted; over QMP the zero pages read from the QEMU process).

The runs alternate old and new, so the host's state is shared.  Writes
docs/results/predict/bench.json and the README block BENCH.

Usage (root): scripts/bench_predict.py [--sizes 1GiB,4GiB] [--wps 1M] [--runs 2]
"""

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from kvmharness import units
from kvmharness.qemu.guest import QemuGuest
from kvmharness.qemu.launch import find_qemus
from results_doc import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent
KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")
COMMAND = ["--downtime", "300ms", "--bandwidth", "1Gbit/s"]
HOW = {"old": ["--curve", "full"], "new": []}
OWN_OLD = ["--backing", "anonymous"]


def predict(args, table=False):
    """(wall seconds, parsed --json output) of one `kvmharness predict`."""
    t0 = time.perf_counter()
    out = subprocess.run([KVMHARNESS, "predict", *args, *COMMAND, "--json", *(["--table"] if table else [])],
                         capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return seconds, json.loads(out.stdout)


def verdicts(out):
    return "".join("y" if v["converges"] else "n" for v in out["table"])


@contextlib.contextmanager
def target(kind, size, wps):
    """The predict arguments that reach the VM: our own (built by predict)
    or a QEMU 10 VM running our writer (RAM in /dev/shm), over its second
    QMP socket."""
    if kind == "own":
        yield ["--mem", str(size), "--wps", str(wps)]
        return
    qemu = [q for q in find_qemus() if q.millisecond][-1]
    with tempfile.TemporaryDirectory(prefix="kvmh-bench-") as work:
        sock = os.path.join(work, "predict.sock")
        with QemuGuest(size, qemu=qemu, extra_qmp=sock) as vm:
            vm.wait_ready()
            vm.run_writer(wps, "random")
            time.sleep(0.5)
            yield ["--qmp", sock]


def bench(kind, size, wps, runs):
    row = {"vm": kind, "size": size}
    with target(kind, size, wps) as args:
        times = {"old": [], "new": []}
        for _ in range(runs):
            for how in ("old", "new"):
                extra = HOW[how] + (OWN_OLD if kind == "own" and how == "old" else [])
                seconds, out = predict(args + extra)
                times[how].append(seconds)
                row[f"{how}-converges"] = out["converges"]
                row[f"{how}-total-s"] = out["model"]["total-seconds"]
                row[f"{how}-curve"] = {k: out.get(k) for k in ("curve-measurement", "curve-horizon-ms",
                                                              "curve-extrapolated-ms", "working-set")}
        for how in ("old", "new"):
            row[f"{how}-wall-s"] = statistics.median(times[how])
            row[f"{how}-table-wall-s"], table = predict(args + HOW[how] + (OWN_OLD if kind == "own" and how == "old"
                                                                           else []), table=True)
            row[f"{how}-table"] = verdicts(table)
    row["table-agree"] = sum(a == b for a, b in zip(row["old-table"], row["new-table"]))
    print(json.dumps(row), flush=True)
    return row


def markdown(rows, wps):
    lines = [f"`predict {' '.join(COMMAND)}` on a guest writing {units.format_rate(wps)} writes/s (random), "
             "end to end (median of the runs); then `--table`: 25 verdicts each.", "",
             "| VM | size | old wall | new wall | new/old | old verdict, total | new verdict, total | "
             "table: old wall, new wall | table verdicts agree | new: extrapolated, model |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = r["new-curve"]["working-set"]
        fitted = f"{model['family']} {model['pages']} pages" if model else "-"
        lines.append(
            f"| {r['vm']} | {r['size'] >> 30} GiB | {r['old-wall-s']:.1f} s | {r['new-wall-s']:.1f} s | "
            f"{r['new-wall-s'] / r['old-wall-s']:.2f} | {'yes' if r['old-converges'] else 'no'}, "
            f"{r['old-total-s']:.1f} s | {'yes' if r['new-converges'] else 'no'}, {r['new-total-s']:.1f} s | "
            f"{r['old-table-wall-s']:.1f} s, {r['new-table-wall-s']:.1f} s | {r['table-agree']}/25 | "
            f"{(r['new-curve']['curve-extrapolated-ms'] or 0) / 1e3:.1f} s, {fitted} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1GiB,4GiB")
    ap.add_argument("--wps", type=units.parse_rate, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--kinds", default="own,qmp")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/results/predict")
    args = ap.parse_args()
    rows = [bench(kind, units.parse_size(size), args.wps, args.runs)
            for size in args.sizes.split(",") for kind in args.kinds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"wps": args.wps, "rows": rows}, indent=1))
    table = markdown(rows, args.wps)
    print(table)
    replace_block(args.out / "README.md", "BENCH", table, "# predict: short and full curves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
