"""The measuring-cost benchmark written out (bench/cost.py): the table of
what each window cost the guest, the alternatives side by side, and two
plots (time to be back against window length; the guest's rate around a
500 ms window)."""

from .cost import AFTER, ALTERNATIVES_CALC_TIME, READER, READER_CALC_TIME
from .plan import MODES
from .plots import plt, save

GiB = 1 << 30
STOPS = {None: "-", "clear-flag": "clear-flag (QEMU)", "recreate-slot": "recreate-slot"}
STYLES = {"clear-flag": "-", "recreate-slot": "--", None: ":"}
COLORS = dict(zip(MODES, ("tab:blue", "tab:orange", "tab:green")))


def _fixed(value, digits):
    """value to `digits` decimals, noise around zero printed as 0, not -0."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.lstrip("-0.") == "" and text.startswith("-") else text


def _pct(ratio):
    return "back" if ratio is None else f"{ratio:.0%}"


def _back(cell):
    if cell["recovered-runs"] == 0:
        return f"> {cell['cap-seconds']:.0f}"
    text = f"{cell['recovery-seconds']:.2f}"
    if cell["recovered-runs"] < cell["runs"]:
        text += f" ({cell['runs'] - cell['recovered-runs']} of {cell['runs']} runs not back)"
    return text


def _row(cell, first):
    back = cell["recovery-seconds"] if cell["recovered-runs"] == cell["runs"] else None
    after = ["back" if back is not None and a >= back else _pct(cell["after-ratio"][f"{a}-{b}"]) for a, b in AFTER]
    return (f"| {first} | {cell['before-wps'] / 1e6:.2f} | {cell['window-ratio']:.1%} | " + " | ".join(after)
            + f" | {_back(cell)} | {_fixed(cell['writes-lost'] / 1e6, 1)} | {_fixed(cell['lost-seconds'], 2)} |")


AFTER_HEADS = " | ".join(f"{a}-{b} s" for a, b in AFTER)
TAIL_HEADS = "back within 10 % after (s) | writes lost (M) | = s of work"


def _order(cell):
    return (cell["size"], MODES.index(cell["mode"]), str(cell["log-stop"]), cell["calc-time-ms"])


def markdown(plan, cells, host_line, seconds, checks=()):
    main = sorted((c for c in cells if not c["alternative"]), key=_order)
    lines = [
        f"# What one measurement costs the guest ({host_line})",
        "",
        f"One vCPU writing randomly, asked for {plan.wps / 1e6:g} M writes/s; {plan.runs} run(s) per cell "
        f"(medians), {seconds / 60:.0f} minutes in all. Before: the guest's writes/s over the 0.5 s before "
        "calc-dirty-rate was asked. Then its rate in the window (between the window's edges) and in the "
        "seconds after the window's end edge, as a share of the rate before, until over 0.5 s it is back "
        "within 10 % ('back': the span starts after that; a span the guest came back in holds its readings up "
        f"to then and 0.5 s on); followed for at most {plan.cap_seconds:.0f} s ('>' means not back by then, and a "
        "median with such runs counts them at the cap). Writes lost: what the guest would have written at its "
        "rate before, from the request until it was back, less what it wrote; and that in seconds of its work.",
        "",
        f"| size | mode | log stop | window (ms) | before (M wr/s) | in window | {AFTER_HEADS} | {TAIL_HEADS} |",
        "|---|---|---|---|---|---|" + "---|" * len(AFTER) + "---|---|---|",
    ]
    for c in main:
        first = f"{c['size'] / GiB:g} GiB | {c['mode']} | {STOPS[c['log-stop']]} | {c['calc-time-ms']}"
        lines.append(_row(c, first))
    alternatives = sorted((c for c in cells if c["alternative"] or _baseline_of_alternatives(c)), key=_alt_order)
    if any(c["alternative"] for c in cells):
        lines += ["", f"## Shortening it: the alternatives side by side ({ALTERNATIVES_CALC_TIME} ms window)", "",
                  f"| size | mode | dirty log | memory | log stop | before (M wr/s) | in window | {AFTER_HEADS} | "
                  f"{TAIL_HEADS} |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(AFTER) + "---|---|---|"]
        for c in alternatives:
            log = "ring" if c["ring"] else ("manual protect" if c["manual-protect"] else "plain GET")
            first = f"{c['size'] / GiB:g} GiB | {c['mode']} | {log} | {c['backing']} | {STOPS[c['log-stop']]}"
            lines.append(_row(c, first))
    if checks:
        lines += ["", "## What the next window counts", "",
                  f"{plan.sizes[0] / GiB:g} GiB, the guest writing {READER['pattern']} with "
                  f"{READER['write_percent']} % writes at {READER['wps'] / 1e6:g} M accesses/s, dirty-bitmap "
                  f"windows of {READER_CALC_TIME} ms back to back: pages counted against the pages replay says "
                  "were written in each (narrow..wide bracket of the window's edges).", "",
                  "| memory | log stop | windows: counted / written |", "|---|---|---|"]
        for c in checks:
            counts = ", ".join(f"{n} / {lo}" + (f"..{hi}" if hi != lo else "") for n, lo, hi in c["windows"])
            lines.append(f"| {c['backing']} | {STOPS[c['log-stop']]} | {counts} |")
    return "\n".join(lines) + "\n"


def _baseline_of_alternatives(cell):
    """The main table's 500 ms exact cells, repeated beside the alternatives."""
    return cell["mode"] != "page-sampling" and cell["calc-time-ms"] == ALTERNATIVES_CALC_TIME


def _alt_order(cell):
    return (cell["size"], MODES.index(cell["mode"]), not cell["manual-protect"], cell["backing"],
            str(cell["log-stop"]))


def plot_recovery(plan, cells, path):
    """Seconds until the guest is back, against the window, a panel per size."""
    fig, axes = plt.subplots(1, len(plan.sizes), figsize=(6 * len(plan.sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], plan.sizes):
        for mode in MODES:
            for stop in ("clear-flag", "recreate-slot", None):
                mine = sorted((c for c in cells if c["size"] == size and c["mode"] == mode and
                               c["log-stop"] == stop and not c["alternative"]), key=lambda c: c["calc-time-ms"])
                if not mine:
                    continue
                xs = [c["calc-time-ms"] for c in mine]
                ax.plot(xs, [c["recovery-seconds"] for c in mine], STYLES[stop], marker="o", color=COLORS[mode],
                        label=f"{mode}, {STOPS[stop]}" if stop else mode)
                capped = [c for c in mine if c["recovered-runs"] < c["runs"]]
                ax.plot([c["calc-time-ms"] for c in capped], [c["recovery-seconds"] for c in capped], "kx",
                        markersize=9)
        ax.set_xscale("log")
        ax.set_xlabel("window (ms)")
        ax.set_ylabel("seconds after the window until back within 10 %")
        ax.set_title(f"{size / GiB:g} GiB, {plan.wps / 1e6:g} M writes/s asked (x: not back within the cap)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def plot_curves(plan, records, path, calc_time_ms=ALTERNATIVES_CALC_TIME):
    """The guest's rate (share of its rate before) around one window of
    `calc_time_ms`, first run, a panel per size, a line per mode and log
    stop, and the alternatives dotted."""
    fig, axes = plt.subplots(1, len(plan.sizes), figsize=(7 * len(plan.sizes), 6), squeeze=False)
    for ax, size in zip(axes[0], plan.sizes):
        mine = [r for r in records if r["size"] == size and r["calc-time-ms"] == calc_time_ms and r["run"] == 0]
        for r in sorted(mine, key=lambda r: (r["alternative"], MODES.index(r["mode"]), str(r["log-stop"]))):
            xs = [t for t, _ in r["curve"]]
            ys = [wps / r["before-wps"] for _, wps in r["curve"]]
            label = f"{r['mode']}, {STOPS[r['log-stop']]}" if r["log-stop"] else r["mode"]
            style = STYLES[r["log-stop"]]
            if r["alternative"]:
                label += f" [{r['vm']}]"
                style = "-." if r["backing"] != "anonymous" else ":"
            ax.plot(xs, ys, style, color=COLORS[r["mode"]], label=label, linewidth=1.2, drawstyle="steps-post")
        ax.axvspan(-calc_time_ms / 1000, 0, color="grey", alpha=0.15)
        ax.axhline(0.9, color="k", lw=0.6, ls=":")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("seconds after the window's end (grey: the window)")
        ax.set_ylabel("guest writes/s over its rate before")
        ax.set_ylim(0, 1.15)
        ax.set_title(f"{size / GiB:g} GiB, one {calc_time_ms} ms window")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    save(fig, path)
