"""`qemu-check`: QEMU's calc-dirty-rate next to exact ground truth (qemu/check.py)."""

import json

from ..qemu.check import CheckPlan, run_check

# page-sampling first: after a dirty-bitmap window QEMU stops dirty logging,
# but on a shadow-paging (nested) host every page stays write-protected until
# the guest's next write to it faults, so the guest runs slower for seconds
# afterwards (measured: 4 GiB at 3 M writes/s kept 14-36 % of its rate
# during the six page-sampling windows that followed)
MODE_ORDER = ("page-sampling", "dirty-bitmap", "dirty-ring")


def _range(values, fmt="{:.0f}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if round(lo) == round(hi) else f"{fmt.format(lo)}..{fmt.format(hi)}"


def main(args):
    ordered = tuple(m for m in MODE_ORDER if m in args.modes)
    plan = CheckPlan(mem=args.mem, wps=args.wps, pattern=args.pattern, modes=ordered,
                     calc_ms=tuple(round(s * 1000) for s in args.calc_times), dirty_ring_size=args.dirty_ring_size,
                     seed=args.seed, repeat=args.repeat, ours=args.ours, qemu=args.qemu)
    report = run_check(plan)
    version = ".".join(map(str, report.support.version)) if report.support.version else "unknown"
    if args.json:
        print(json.dumps({"qemu-version": version, "windows": report.support.windows_note(),
                          "capabilities-from": report.support.source, "mem": args.mem, "wps": args.wps,
                          "pattern": args.pattern, "dirty-ring-size": args.dirty_ring_size,
                          "calc-times-ms": list(plan.calc_ms), "repeat": args.repeat,
                          "qemu-ram-exact": report.ram_exact, "seconds": round(report.seconds, 1),
                          "rows": [r.to_json() for r in report.rows]}, indent=2))
        return 0 if report.ram_exact else 1
    print(f"QEMU {version}: {report.support.windows_note()} ({report.support.source}); "
          f"writer {args.pattern} at {args.wps:,} writes/s over {args.mem >> 20} MiB")
    print("rates in MB/s (MiB/s); truth = unique pages the guest wrote in QEMU's window (replayed), "
          "ring entries = what a dirty ring collects for those writes")
    header = (f"{'mode':14} {'window':>7} {'QEMU':>7} {'truth':>11} {'QEMU/truth':>10} {'ring entries':>13} "
              f"{'kvmharness':>10} {'its truth':>9}")
    print(header)
    for r in report.rows:
        s = r.calc_ms / 1000
        truth = _range([p * 4096 / 2**20 / s for p in (r.truth.pages[0], r.truth.pages[2])])
        entries = _range(r.entries_mb_s) if r.entries_mb_s else "-"
        ours = "-" if r.ours_mb_s is None else f"{r.ours_mb_s:.0f}"
        ours_truth = "-" if r.ours_truth_mb_s is None else f"{r.ours_truth_mb_s:.0f}"
        flag = "" if r.ours_exact in (None, True) else "  (kvmharness outside replay's brackets!)"
        print(f"{r.mode:14} {r.calc_ms:>5}ms {r.qemu_mb_s:>7} {truth:>11} {r.ratio:>9.2f}x {entries:>13} "
              f"{ours:>10} {ours_truth:>9}{flag}")
    print(f"QEMU guest RAM vs replay at the end: {'exact, page for page' if report.ram_exact else 'MISMATCH'}; "
          f"{report.seconds:.0f} s in all")
    return 0 if report.ram_exact else 1
