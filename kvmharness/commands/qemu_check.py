"""`qemu-check`: QEMU's calc-dirty-rate next to exact ground truth (qemu/check.py)."""

from .. import patterns, units
from ..errors import UsageError
from .args import MODE_NAMES, add_json_argument, arg_type, path, positive_int, seed

# page-sampling first: after a dirty-bitmap window QEMU stops dirty logging,
# but on a shadow-paging (nested) host every page stays write-protected until
# the guest's next write to it faults, so the guest runs slower for seconds
# afterwards (measured: 4 GiB at 3 M writes/s kept 14-36 % of its rate
# during the six page-sampling windows that followed)
MODE_ORDER = ("page-sampling", "dirty-bitmap", "dirty-ring")


def parse_modes(text):
    """'dirty-bitmap,page-sampling' -> a tuple of calc-dirty-rate modes."""
    names = tuple(t.strip() for t in text.split(","))
    for name in names:
        if name not in MODE_NAMES:
            raise UsageError(f"unknown mode {name[:40]!r}: one of {', '.join(MODE_NAMES)}")
    return names


def parse_durations(text):
    """'1s,2s' or '200ms,1s' -> seconds, each 50 ms .. 60 s (calc-dirty-rate's range)."""
    out = tuple(units.parse_duration(t.strip()) for t in text.split(","))
    for d in out:
        if not 0.05 <= d <= 60:
            raise UsageError(f"a window of {d * 1e3:g} ms is outside calc-dirty-rate's 50ms..60s")
    return out


def add_arguments(p):
    """Which QEMU, the workload in its guest, the windows and modes to check."""
    p.add_argument("--qemu", type=path, metavar="PATH",
                   help="the QEMU binary (default: the newest QEMU found: on PATH, or unpacked by scripts/setup.sh "
                        "into .venv/qemu; `probe` lists them)")
    p.add_argument("--mem", type=arg_type(units.parse_size), default=units.parse_size("1GiB"),
                   help="the writer's region in the QEMU guest, e.g. 1GiB, 4GiB (default 1GiB)")
    p.add_argument("--wps", type=arg_type(units.parse_rate), default=units.parse_rate("3M"),
                   help="writes per second (default 3M)")
    p.add_argument("--pattern", type=arg_type(patterns.parse_pattern), default="random",
                   help=f"which pages the writer picks: {patterns.PATTERN_HELP} (default random)")
    p.add_argument("--modes", type=arg_type(parse_modes), default=tuple(MODE_NAMES),
                   help="comma-separated calc-dirty-rate modes (default: all three)")
    p.add_argument("--calc-times", type=arg_type(parse_durations), default=(1.0,),
                   help="comma-separated windows, e.g. 1s,2s or 200ms,1s (default 1s); a QEMU without "
                        "calc-time-unit (before 8.2) measures whole seconds only")
    p.add_argument("--dirty-ring-size", type=positive_int, default=65536,
                   help="QEMU's dirty-ring-size for the dirty-ring mode (default 65536)")
    p.add_argument("--repeat", type=positive_int, default=1, help="measurements per mode and window (default 1)")
    p.add_argument("--seed", type=seed, default=1, help="PRNG seed of the writer (default 1)")
    p.add_argument("--no-ours", dest="ours", action="store_false",
                   help="do not also measure the workload on kvmharness's own VM")
    add_json_argument(p)


def _range(values, fmt="{:.0f}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if round(lo) == round(hi) else f"{fmt.format(lo)}..{fmt.format(hi)}"


def main(args):
    import json

    from ..qemu.check import CheckPlan, run_check

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
