#!/usr/bin/env python3
"""The seed's claim on the seed's QEMU (issue 23, items 4 and 5): QEMU 10 to
QEMU 10 live migrations over a tc-shaped veth link, each predicted first
from QMP alone three ways, then run; the ones that do not converge run
again with QEMU's aids beside our advice.  As root.

For each scenario (region, writer rate and pattern, bursts, link, downtime
limit), on a fresh QEMU 10 source in one network namespace:

1. "ms": `predict --qmp`'s prediction from QEMU 10's own millisecond
   windows (calc-time-unit, the ladder from 50 ms; dirty-bitmap), then the
   pre-copy model;
2. "whole-s": the same from whole-second windows only (what QEMU before 8.2
   offers): dirty(downtime) read off the line to dirty(1 s);
3. "seed": the seed's one-window rule, dirty(downtime) measured in a window
   as long as the downtime (the ms ladder's point), over the link, against
   the downtime: a verdict, no total time;
4. QEMU's real migration to a QEMU 10 destination in the other namespace
   (max-bandwidth above the link, downtime-limit set); one not completed
   by a deadline is cancelled.  A completed one's destination RAM is
   checked against replay, page for page.
5. Where QEMU did not converge: our advice (`advise`, the aids' model on
   the ms curve: auto-converge's final throttle, dirty-limit's largest
   quota) beside QEMU 10 migrating the same workload again with
   auto-converge, and with dirty-limit (dirty ring on, our quota).

Writes OUT/migration.json and the tables in OUT/README.md (between the
MIGRATION10 markers).

    sudo .venv/bin/python scripts/validate_qemu10.py [--out docs/results/qemu10] [--only 0 3 ...]
"""

import argparse
import json
import math
import pathlib
import statistics
import time

from kvmharness.microvm.truth import tag_mismatches
from kvmharness.migration.model import PAGE_SIZE, Link, simulate_precopy
from kvmharness.migration.predict import advise
from kvmharness.migration.testbed import veth_testbed
from kvmharness.patterns import parse_burst
from kvmharness.qemu.curve import predict_with
from kvmharness.qemu.guest import QemuGuest
from kvmharness.qemu.launch import find_qemus
from kvmharness.qemu.migrate import migrate_qemu
from results_doc import replace_block

MIB = 1 << 20
G, M = 1_000_000_000, 1_000_000
SCENARIOS = [  # (region MiB, writes/s, pattern, burst, link bit/s, downtime s)
    (256, 2_000, "random", None, G, 0.3),
    (256, 10_000, "random", None, G, 0.3),
    (256, 25_000, "random", None, G, 0.3),
    (256, 60_000, "random", None, G, 0.3),
    (512, 5_000, "random", None, G, 0.3),
    (512, 15_000, "random", None, G, 0.3),
    (512, 40_000, "random", None, G, 0.3),
    (256, 20_000, "random", None, 500 * M, 0.3),
    (256, 8_000, "random", None, 500 * M, 0.1),
    (256, 5_000, "random", None, 500 * M, 0.05),
    (256, 15_000, "random", None, G, 1.0),
    (256, 30_000, "random", None, G, 0.05),
    (256, 40_000, "random", None, 2 * G, 0.3),
    (512, 20_000, "random", None, 2 * G, 0.1),
    (256, 50_000, "sequential", None, G, 0.3),
    (256, 300_000, "hotcold:0.02:0.98", None, G, 0.3),
    (256, 100_000, "hotcold:0.1:0.9", None, G, 0.3),
    (512, 30_000, "hotcold:0.05:0.95", None, G, 0.05),
    (256, 200_000, "hotcold:0.1:0.9", None, 500 * M, 0.3),
    (256, 100_000, "zipf:1.0", None, G, 0.3),
    (256, 300_000, "zipf:1.2", None, G, 0.1),
    (512, 50_000, "zipf:0.8", None, G, 0.3),
    (256, 40_000, "random", "200ms/800ms", G, 0.3),
    (256, 100_000, "hotcold:0.05:0.95", "100ms/400ms", 500 * M, 0.3),
]
PREDICTORS = ("ms", "whole-s", "seed")
PORT = 4800
RING = 4096
MAX_ITERATIONS = 30


def qemu10():
    found = [q for q in find_qemus() if q.millisecond]
    if not found:
        raise SystemExit("no QEMU with millisecond windows: run scripts/setup.sh")
    return found[-1]


def _writer(guest, wps, pattern, burst):
    guest.run_writer(wps, pattern, burst=parse_burst(burst) if burst else None)


def predict(src, link, downtime):
    """{"ms", "whole-s", "seed"}: each prediction, with its curve and the
    seconds its measuring took; and the ms curve (for the aids' advice).
    As in the 7.2 validation (scripts/validate_qemu_migration.py), the
    guest RAM outside the writer's region (boot area, tables) is known to be
    zero pages, which QMP alone cannot tell."""
    counter = lambda: src.counters()[0]  # noqa: E731  (the replay keeps the answers checkable)
    out = {}
    for name, seconds_only in (("ms", False), ("whole-s", True)):
        t0 = time.perf_counter()
        target, measured, verdicts = predict_with(src.qmp, "source", [link], [downtime], "dirty-bitmap",
                                                  MAX_ITERATIONS, counter=counter, seconds_only=seconds_only)
        spent = time.perf_counter() - t0
        v = verdicts[(link, downtime)]
        zero = (target.ram_bytes - src.mem) // PAGE_SIZE
        model = simulate_precopy(measured.curve, link, downtime, MAX_ITERATIONS, zero_pages=zero)
        out[name] = {"converges": model.converges, "total-s": model.total_seconds,
                     "iterations": len(model.iterations), "downtime-ms": model.downtime_seconds * 1e3,
                     "windows-ms": list(target.windows_ms), "measure-s": round(spent, 2),
                     "curve": [[round(t * 1e3, 3), round(p)] for t, p in measured.curve.points]}
        if name == "ms":
            out["seed"] = {"converges": v.seed["converges"], "total-s": None,
                           "dirty-bytes": v.seed["dirty-bytes"], "transfer-s": v.seed["transfer-seconds"]}
            ms_curve, version, ms_zero = measured.curve, target.version, zero
    return out, ms_curve, version, ms_zero


def migrate(src, qemu, tb, port, link, downtime, deadline, capabilities=(), extra=None):
    """`qemu` migrates `src` to a fresh destination; (QemuMigration, dest RAM exact or None)."""
    params = {"max-bandwidth": int(link.bits_per_second / 8 * 4), "downtime-limit": int(round(downtime * 1000))}
    with QemuGuest(src.mem, seed=src.seed, qemu=qemu, dirty_ring_size=src.dirty_ring_size,
                   incoming=f"tcp:{tb.destination_ip}:{port}", enter=tb.enter(tb.destination_ns)) as dst:
        m = migrate_qemu(src.qmp, f"tcp:{tb.destination_ip}:{port}", deadline, params | (extra or {}), capabilities)
        exact = None
        if m.completed:
            dst.adopt(src.logs)
            dst.hold()
            exact = tag_mismatches(dst) == (0, 0)
    return m, exact


def deadline_for(predicted, link, mem):
    full_copy = mem * MIB / link.goodput
    converging = [p["total-s"] for p in predicted.values() if p.get("converges") and p.get("total-s")]
    return min(max(3 * max(converging, default=0), 4 * full_copy + 10), 90)


def run(n, scenario, qemu):
    mem, wps, pattern, burst, bps, downtime = scenario
    link = Link(bps)
    port = PORT + 10 * n
    result = {"scenario": n, "mem-mib": mem, "wps": wps, "pattern": pattern, "burst": burst, "link-bps": bps,
              "downtime-ms": downtime * 1e3}
    with veth_testbed(bps, subnet=4) as tb:
        with QemuGuest(mem * MIB, seed=n + 1, qemu=qemu, enter=tb.enter(tb.source_ns)) as src:
            src.wait_ready()
            _writer(src, wps, pattern, burst)
            time.sleep(0.5)
            predicted, ms_curve, version, zero = predict(src, link, downtime)
            result["qemu-version"] = ".".join(map(str, version or ()))
            result.update(predicted)
            deadline = deadline_for(predicted, link, mem)
            m, exact = migrate(src, qemu, tb, port, link, downtime, deadline)
        result["qemu"] = m.to_json() | {"deadline-s": round(deadline, 1)}
        result["destination-ram-exact"] = exact
        if not m.completed:
            result["aids"] = aids(n, scenario, qemu, tb, link, ms_curve, zero, port)
    return result


def aids(n, scenario, qemu, tb, link, curve, zero, port):
    """Our advice beside QEMU 10 with each aid, on fresh guests."""
    mem, wps, pattern, burst, _, downtime = scenario
    advice = advise(curve, link, downtime, 1, 100, zero_pages=zero)
    out = {"advice": advice.to_json()}
    plans = (("auto-converge", 0, {}),
             ("dirty-limit", RING, {"vcpu-dirty-limit": advice.dirty_limit_mb_s or 1}))
    for k, (aid, ring, extra) in enumerate(plans):
        p = advice.auto_converge if aid == "auto-converge" else advice.dirty_limit
        deadline = min(max(3 * p.total_seconds if p.converges else 0, 4 * mem * MIB / link.goodput + 10), 120)
        with QemuGuest(mem * MIB, seed=n + 1, qemu=qemu, dirty_ring_size=ring, enter=tb.enter(tb.source_ns)) as src:
            src.wait_ready()
            _writer(src, wps, pattern, burst)
            time.sleep(0.5)
            m, exact = migrate(src, qemu, tb, port + 1 + k, link, downtime, deadline, (aid,), extra)
        out[aid] = {"qemu": m.to_json() | {"deadline-s": round(deadline, 1)}, "destination-ram-exact": exact,
                    "parameters": extra}
    return out


# ---- tables ------------------------------------------------------------------------------------------------

def error(pred, real):
    if not (pred.get("converges") and real["converged"] and pred.get("total-s")):
        return None
    return (pred["total-s"] - real["total-s"]) / real["total-s"]


def pct(values, q):
    values = sorted(values)
    if not values:
        return math.nan
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(results):
    out = {}
    for key in PREDICTORS:
        right = sum(r[key]["converges"] == r["qemu"]["converged"] for r in results)
        errors = [abs(e) for r in results if (e := error(r[key], r["qemu"])) is not None]
        out[key] = {"convergence-right": right, "of": len(results), "compared": len(errors),
                    "median-abs-total-error": statistics.median(errors) if errors else None,
                    "p90-abs-total-error": pct(errors, 0.9) if errors else None,
                    "median-measure-s": statistics.median(r[key]["measure-s"] for r in results)
                    if "measure-s" in results[0][key] else None}
    return out


def _verdict(p, real):
    right = "right" if p["converges"] == real["converged"] else "WRONG"
    e = error(p, real)
    total = f", {p['total-s']:.1f} s ({e * 100:+.0f} %)" if e is not None else ""
    return f"{'yes' if p['converges'] else 'no'} ({right}){total}"


def table(results):
    lines = ["| # | region | writes/s | pattern | link | downtime | QEMU 10: converged, total, downtime, syncs | "
             "ms windows | whole-s windows | seed's rule | dirty(downtime) pages: whole-s line / ms | dest RAM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n, q = r["scenario"], r["qemu"]
        real = (f"yes, {q['total-s']:.2f} s, {q['downtime-ms']} ms, {q['dirty-sync-count']}" if q["converged"]
                else f"no ({q['status']})")
        ms_pts, s_pts = dict((t, p) for t, p in r["ms"]["curve"]), r["whole-s"]["curve"]
        at = ms_pts.get(r["downtime-ms"])
        line = s_pts[0][1] * r["downtime-ms"] / s_pts[0][0]
        dirty = f"{line:.0f} / {at:.0f} ({at / line:.2f}x)" if at and line else "-"
        pattern = r["pattern"] + (f" burst {r['burst']}" if r["burst"] else "")
        exact = {True: "exact", False: "MISMATCH", None: "-"}[r["destination-ram-exact"]]
        lines.append(f"| {n} | {r['mem-mib']} MiB | {r['wps'] // 1000}k | {pattern} | {r['link-bps'] // M} Mbit/s "
                     f"| {r['downtime-ms']:.0f} ms | {real} | " + " | ".join(_verdict(r[k], q) for k in PREDICTORS)
                     + f" | {dirty} | {exact} |")
    return "\n".join(lines)


def aids_table(results):
    lines = ["| # | scenario | aid | our advice: level, converges, total | QEMU 10 with the aid: converged, total, "
             "downtime, throttle seen | dest RAM |", "|---|---|---|---|---|---|"]
    for r in results:
        n = r["scenario"]
        if "aids" not in r:
            continue
        a = r["aids"]["advice"]
        for aid in ("auto-converge", "dirty-limit"):
            ours = a[aid]
            level = (f"{ours.get('final-level')} %" if aid == "auto-converge"
                     else f"{a.get('dirty-limit-mb-s') or 1} MB/s")
            q = r["aids"][aid]["qemu"]
            real = (f"yes, {q['total-s']:.2f} s, {q['downtime-ms']} ms" if q["converged"]
                    else f"no ({q['status']})")
            if aid == "auto-converge":
                real += f", {q['max-cpu-throttle-seen'] or 0} %"
            exact = {True: "exact", False: "MISMATCH", None: "-"}[r["aids"][aid]["destination-ram-exact"]]
            lines.append(f"| {n} | {r['mem-mib']} MiB, {r['wps'] // 1000}k {r['pattern']}, "
                         f"{r['link-bps'] // M} Mbit/s, {r['downtime-ms']:.0f} ms | {aid} | {level}, "
                         f"{'converges' if ours['converges'] else 'no'}, {ours['total-seconds']:.2f} s | {real} | {exact} |")
    return "\n".join(lines)


def write_readme(out, results):
    s = summary(results)
    lines = []
    for k, v in s.items():
        line = f"- {k}: convergence called right in {v['convergence-right']} of {v['of']}"
        if v["median-abs-total-error"] is not None:
            line += (f"; |total-time error| median {v['median-abs-total-error'] * 100:.1f} %, 90th percentile "
                     f"{v['p90-abs-total-error'] * 100:.1f} % over the {v['compared']} where it and QEMU converged")
        if v["median-measure-s"] is not None:
            line += f"; measuring took a median {v['median-measure-s']:.1f} s"
        lines.append(line)
    block = (table(results) + "\n\n" + "\n".join(lines) + "\n\nWith QEMU's aids, where QEMU 10 did not converge "
             "without:\n\n" + aids_table(results))
    replace_block(out / "README.md", "MIGRATION10", block, "# QEMU 10")
    return block


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/qemu10")
    ap.add_argument("--only", type=int, nargs="*", help="scenario numbers (0-based) to run")
    ap.add_argument("--table-only", action="store_true", help="rewrite README.md from --out's migration.json")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "migration.json"
    results = json.loads(path.read_text())["results"] if path.exists() else []
    results.sort(key=lambda r: r["scenario"])
    if not args.table_only:
        qemu = qemu10()
        done = {(r["mem-mib"], r["wps"], r["pattern"], r["burst"], r["link-bps"], r["downtime-ms"]) for r in results}
        for n, scenario in enumerate(SCENARIOS):
            key = scenario[:5] + (scenario[5] * 1e3,)
            if (args.only is not None and n not in args.only) or key in done:
                continue
            t0 = time.monotonic()
            r = run(n, scenario, qemu)
            results.append(r)
            results.sort(key=lambda r: r["scenario"])
            print(f"[{n}] {scenario}: QEMU {r['qemu']['status']} {r['qemu']['total-s']} s; "
                  + "; ".join(f"{k} {r[k]['converges']}" for k in PREDICTORS)
                  + f"; dest RAM {r['destination-ram-exact']}; aids {'aids' in r} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
            path.write_text(json.dumps({"results": results, "summary": summary(results)}, indent=2) + "\n")
    print(write_readme(out, results))


if __name__ == "__main__":
    main()
