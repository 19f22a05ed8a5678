"""Aggregating the benchmark's raw windows and writing them out: a markdown
table in the seed's layout plus our columns, and the JSON with every run."""

import statistics
from collections import defaultdict

from .plan import MODES

GiB = 1 << 30
MODE_COLUMNS = ("{mode} (MiB/s)", "{mode} spread", "{mode} guest wr/s", "{mode} expected (MiB/s)")
TABLE_COLUMNS = ("calc-time (ms)", "theoretical (MiB/s)") + tuple(
    c.format(mode=m) for m in MODES for c in MODE_COLUMNS
)
OVERHEAD_COLUMNS = ("size", "no tracking (wr/s)") + tuple(f"{m} (wr/s)" for m in MODES)


def aggregate(records):
    """Per (size, mode, calc-time): medians and spreads over the runs."""
    cells = defaultdict(list)
    for r in records:
        cells[(r["size"], r["mode"], r["calc-time-ms"])].append(r)
    out = {}
    for key, runs in cells.items():
        rates = [r["dirty-rate"] for r in runs]
        out[key] = {
            "size": key[0],
            "mode": key[1],
            "calc-time-ms": key[2],
            "runs": len(runs),
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "guest-wps": statistics.median(r["guest-wps"] for r in runs),
            "expected-rate": statistics.median(r["expected-rate"] for r in runs),
            "theoretical-rate": runs[0]["theoretical-rate"],
            "ratio-to-expected": statistics.median(r["dirty-rate"] / r["expected-rate"] for r in runs),
            "ratio-to-theory": statistics.median(rates) / runs[0]["theoretical-rate"],
        }
    return out


def tracked_wps(records):
    """Guest writes/s while each mode tracked it, per size: all its windows'
    writes over all their time."""
    sums = defaultdict(lambda: [0, 0.0])
    for r in records:
        s = sums[(r["size"], r["mode"])]
        s[0] += r["guest-writes"]
        s[1] += r["window-us"] / 1e6
    return {key: writes / seconds for key, (writes, seconds) in sums.items()}


def _pattern_words(pattern):
    return "randomly" if pattern == "random" else f"with pattern {pattern}"


def _mw(wps):
    return f"{wps / 1e6:.2f}M"


def markdown(plan, cells, records, baselines, host_line):
    lines = [
        f"# Dirty rate, measured side by side ({host_line})",
        "",
        f"One vCPU writing {_pattern_words(plan.pattern)} at {plan.wps / 1e6:g} M writes/s; {plan.runs} runs "
        "per cell; rates in MiB/s are medians, spread is min..max; guest wr/s is what the guest really wrote "
        "during the window; expected is the pattern's theory (for random: the seed's formula) applied to "
        "those writes; theoretical is the same at the nominal rate.",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for size in plan.sizes:
        lines.append(f"| **{size / GiB:g} GiB** |" + " |" * (len(TABLE_COLUMNS) - 1))
        for ms in plan.calc_times:
            row = [str(ms)]
            theory = None
            cols = []
            for mode in MODES:
                c = cells.get((size, mode, ms))
                if c is None:
                    cols += ["-"] * 4
                    continue
                theory = c["theoretical-rate"]
                cols += [f"{c['median']:.0f}", f"{c['min']:.0f}..{c['max']:.0f}", _mw(c["guest-wps"]),
                         f"{c['expected-rate']:.0f}"]
            row.append(f"{theory:.0f}" if theory is not None else "-")
            lines.append("| " + " | ".join(row + cols) + " |")
    lines += ["", "## Guest writes/s without and with tracking", "",
              "| " + " | ".join(OVERHEAD_COLUMNS) + " |", "|" + "---|" * len(OVERHEAD_COLUMNS)]
    tracked = tracked_wps(records)
    for size in plan.sizes:
        base = [b["guest-wps"] for b in baselines if b["size"] == size]
        base_wps = statistics.median(base) if base else None
        row = [f"{size / GiB:g} GiB", _mw(base_wps) if base_wps else "-"]
        for mode in MODES:
            wps = tracked.get((size, mode))
            if wps is None:
                row.append("-")
            else:
                row.append(f"{_mw(wps)} ({wps / base_wps:.0%})" if base_wps else _mw(wps))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
