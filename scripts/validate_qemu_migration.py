#!/usr/bin/env python3
"""Predictions against QEMU's own live migration (as root).

Two QEMUs in two network namespaces joined by a tc-shaped veth pair
(migration/testbed.py), our writer in the source guest at several rates
and patterns.  For each scenario:

1. the prediction `predict --qmp` makes from QMP alone: dirty(t) from
   QEMU's calc-dirty-rate (dirty-bitmap) in the windows this QEMU allows
   (whole seconds on 7.2), then the pre-copy model;
2. the prediction from a millisecond curve, the stand-in for a QEMU with
   the seed's patch (8.2+): the same ladder from 50 ms, each point replayed
   exactly from the guest's counters read during QEMU's longest window
   (so under the same dirty logging), labelled "ms (replayed)";
3. QEMU's real migration (max-bandwidth above the link, downtime-limit
   set): query-migrate's status, total-time, downtime, dirty-sync-count;
   one that has not completed by a deadline is cancelled: it did not
   converge.  After a completed one the destination's RAM is checked
   against replay, page for page.

Writes results.json and the table in README.md (between the MIGRATION
markers) under --out.

    sudo .venv/bin/python scripts/validate_qemu_migration.py --out docs/results/qemu
"""

import argparse
import json
import math
import pathlib
import statistics
import time

from kvmharness.microvm.truth import tag_mismatches
from kvmharness.migration.model import PAGE_SIZE, DirtyCurve, Link, simulate_precopy
from kvmharness.migration.predict import curve_windows
from kvmharness.migration.testbed import veth_testbed
from kvmharness.qemu.check import replayed_curve
from kvmharness.qemu.curve import predict_with
from kvmharness.qemu.guest import QemuGuest
from kvmharness.qemu.migrate import migrate_qemu
from results_doc import replace_block

MIB = 1 << 20
SCENARIOS = [  # (region MiB, writes/s, pattern, link bit/s, downtime s)
    (256, 2_000, "random", 1_000_000_000, 0.3),
    (256, 10_000, "random", 1_000_000_000, 0.3),
    (256, 25_000, "random", 1_000_000_000, 0.3),
    (256, 60_000, "random", 1_000_000_000, 0.3),
    (512, 5_000, "random", 1_000_000_000, 0.3),
    (512, 15_000, "random", 1_000_000_000, 0.3),
    (512, 40_000, "random", 1_000_000_000, 0.3),
    (256, 20_000, "random", 500_000_000, 0.3),
    (256, 8_000, "random", 500_000_000, 0.1),
    (256, 50_000, "sequential", 1_000_000_000, 0.3),
    (256, 300_000, "hotcold:0.02:0.98", 1_000_000_000, 0.3),
    (256, 100_000, "hotcold:0.1:0.9", 1_000_000_000, 0.3),
    (512, 30_000, "hotcold:0.05:0.95", 1_000_000_000, 0.05),
]
PORT = 4700


def predictions(src, link, downtime, max_iterations=30):
    """(whole-second Prediction, replayed-ms Prediction, QmpTarget, the two curves)."""
    target, measured, verdicts = predict_with(src.qmp, "source", [link], [downtime], "dirty-bitmap",
                                              max_iterations, counter=lambda: src.counters()[0])
    npages = target.ram_bytes // PAGE_SIZE
    zero = (target.ram_bytes - src.mem) // PAGE_SIZE  # the boot area and the tables are zero pages
    seconds = simulate_precopy(measured.curve, link, downtime, max_iterations, zero_pages=zero)
    longest = max(target.answers, key=lambda a: a.calc_ms)
    ms_windows = curve_windows([downtime], npages, link, longest_ms=longest.calc_ms)
    ms_curve = DirtyCurve(replayed_curve(src, longest, ms_windows), npages)
    ms = simulate_precopy(ms_curve, link, downtime, max_iterations, zero_pages=zero)
    return seconds, ms, target, measured.curve, ms_curve


def run(mem_mib, wps, pattern, bps, downtime, port):
    link = Link(bps)
    with veth_testbed(bps, subnet=3) as tb:
        with QemuGuest(mem_mib * MIB, seed=port, enter=tb.enter(tb.source_ns)) as src:
            src.wait_ready()
            src.run_writer(wps, pattern)
            time.sleep(0.5)
            seconds, ms, target, curve, ms_curve = predictions(src, link, downtime)
            full_copy = target.ram_bytes / link.goodput
            converging = [p.total_seconds for p in (seconds, ms) if p.converges]
            deadline = min(max(3 * max(converging, default=0), 4 * full_copy + 10), 90)
            with QemuGuest(mem_mib * MIB, seed=port, incoming=f"tcp:{tb.destination_ip}:{port}",
                           enter=tb.enter(tb.destination_ns)) as dst:
                m = migrate_qemu(src.qmp, f"tcp:{tb.destination_ip}:{port}", deadline,
                                 {"max-bandwidth": int(link.bits_per_second / 8 * 4),
                                  "downtime-limit": int(round(downtime * 1000))})
                info, finished, completed = m.info, m.finished, m.completed
                ram_exact = None
                if completed:
                    dst.adopt(src.logs)
                    dst.hold()
                    ram_exact = tag_mismatches(dst) == (0, 0)
    ram = info.get("ram", {})
    return {
        "mem-mib": mem_mib, "wps": wps, "pattern": pattern, "link-bps": bps, "downtime-ms": downtime * 1000,
        "qemu-version": ".".join(map(str, target.version or ())), "windows-ms": list(target.windows_ms),
        "whole-seconds": {"converges": seconds.converges, "total-s": seconds.total_seconds,
                          "iterations": len(seconds.iterations), "downtime-ms": seconds.downtime_seconds * 1e3,
                          "curve": [[t, round(p)] for t, p in curve.points]},
        "ms-replayed": {"converges": ms.converges, "total-s": ms.total_seconds, "iterations": len(ms.iterations),
                        "downtime-ms": ms.downtime_seconds * 1e3,
                        "curve": [[t, p] for t, p in ms_curve.points]},
        "qemu": {"status": info.get("status") if finished else "not completed by the deadline",
                 "converged": completed, "total-s": info.get("total-time", 0) / 1000 if completed else None,
                 "downtime-ms": info.get("downtime") if completed else None,
                 "dirty-sync-count": ram.get("dirty-sync-count"), "transferred": ram.get("transferred"),
                 "deadline-s": round(deadline, 1)},
        "destination-ram-exact": ram_exact,
    }


def error(pred, real):
    if not (pred["converges"] and real["converged"]):
        return None
    return (pred["total-s"] - real["total-s"]) / real["total-s"]


def dirty_at_downtime(r, key):
    """dirty(downtime) on a result's curve, pages: what the seed's rule sends."""
    npages = (r["mem-mib"] << 20) // PAGE_SIZE
    return DirtyCurve(tuple(tuple(p) for p in r[key]["curve"]), npages).at(r["downtime-ms"] / 1000)


def table(results):
    lines = ["| region | writes/s | pattern | link | downtime | QEMU: converged, total, downtime, syncs | "
             "whole-second windows: verdict, total (error) | ms (replayed): verdict, total (error) | "
             "dirty(downtime) pages: whole-s line / ms | dest RAM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        q = r["qemu"]
        real = (f"yes, {q['total-s']:.1f} s, {q['downtime-ms']} ms, {q['dirty-sync-count']}" if q["converged"]
                else f"no ({q['status']}, {q['dirty-sync-count']} syncs)")
        cells = []
        for key in ("whole-seconds", "ms-replayed"):
            p = r[key]
            e = error(p, q)
            right = "right" if p["converges"] == q["converged"] else "WRONG"
            cells.append(f"{'converges' if p['converges'] else 'no'} ({right})"
                         + (f", {p['total-s']:.1f} s ({e * 100:+.0f} %)" if e is not None else ""))
        exact = {True: "exact", False: "MISMATCH", None: "-"}[r["destination-ram-exact"]]
        line_s, ms_pages = dirty_at_downtime(r, "whole-seconds"), dirty_at_downtime(r, "ms-replayed")
        lines.append(f"| {r['mem-mib']} MiB | {r['wps'] // 1000}k | {r['pattern']} | {r['link-bps'] // 10**6} Mbit/s "
                     f"| {r['downtime-ms']:.0f} ms | {real} | {cells[0]} | {cells[1]} | "
                     f"{line_s:.0f} / {ms_pages:.0f} ({ms_pages / line_s:.2f}x) | {exact} |")
    return "\n".join(lines)


def summary(results):
    out = {}
    for key in ("whole-seconds", "ms-replayed"):
        right = sum(r[key]["converges"] == r["qemu"]["converged"] for r in results)
        errors = [abs(e) for r in results if (e := error(r[key], r["qemu"])) is not None]
        out[key] = {"convergence-right": right, "of": len(results),
                    "median-abs-total-error": statistics.median(errors) if errors else math.nan,
                    "compared": len(errors)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/qemu")
    ap.add_argument("--only", type=int, nargs="*", help="scenario numbers (0-based) to run")
    ap.add_argument("--table-only", action="store_true", help="rewrite README.md from --out's migration.json")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "migration.json").read_text())["results"] if args.table_only else []
    for n, scenario in enumerate(SCENARIOS):
        if args.table_only or (args.only is not None and n not in args.only):
            continue
        t0 = time.monotonic()
        r = run(*scenario, PORT + n)
        results.append(r)
        print(f"[{n}] {scenario}: QEMU {r['qemu']['status']} total {r['qemu']['total-s']} s; whole-seconds "
              f"{r['whole-seconds']['converges']} {r['whole-seconds']['total-s']:.1f} s; ms "
              f"{r['ms-replayed']['converges']} {r['ms-replayed']['total-s']:.1f} s; dest RAM "
              f"{r['destination-ram-exact']} ({time.monotonic() - t0:.0f} s)", flush=True)
        (out / "migration.json").write_text(json.dumps({"results": results, "summary": summary(results)},
                                                       indent=2) + "\n")
    s = summary(results)
    lines = [f"- {k}: convergence called right in {v['convergence-right']} of {v['of']}; median |total-time error| "
             f"{v['median-abs-total-error'] * 100:.1f} % over the {v['compared']} that both converged"
             for k, v in s.items()]
    replace_block(out / "README.md", "MIGRATION", table(results) + "\n\n" + "\n".join(lines), "# QEMU as a target")
    print(table(results))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
