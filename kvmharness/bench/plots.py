"""PNG plots of the benchmark: dirty rate against calc-time per size (a line
per mode, theory dashed), and measured / expected ratios."""

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from .plan import MODES as MODE_ORDER  # noqa: E402

GiB = 1 << 30
MODES = dict(zip(MODE_ORDER, ("tab:blue", "tab:orange", "tab:green")))


def calc_time_axes(ax, ylabel, legend_size=None):
    """A log calc-time axis, a grid and the legend: every bench plot's frame."""
    ax.set_xscale("log")
    ax.set_xlabel("calc-time (ms)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_size)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _series(cells, size, mode):
    pts = sorted((c["calc-time-ms"], c) for (s, m, _), c in cells.items() if s == size and m == mode)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_rates(plan, cells, path):
    fig, axes = plt.subplots(1, len(plan.sizes), figsize=(5.5 * len(plan.sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], plan.sizes):
        theory_x, theory_y = [], []
        for mode, color in MODES.items():
            xs, cs = _series(cells, size, mode)
            if not xs:
                continue
            med = [c["median"] for c in cs]
            err = [[m - c["min"] for m, c in zip(med, cs)], [c["max"] - m for m, c in zip(med, cs)]]
            ax.errorbar(xs, med, yerr=err, marker="o", color=color, label=mode, capsize=3)
            theory_x, theory_y = xs, [c["theoretical-rate"] for c in cs]
        ax.plot(theory_x, theory_y, "k--", label="theoretical")
        ax.set_title(f"{size / GiB:g} GiB, {plan.pattern}, {plan.wps / 1e6:g} M writes/s")
        calc_time_axes(ax, "dirty rate (MiB/s)")
    save(fig, path)


def plot_ratios(plan, cells, path):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = ["-", "--", ":", "-."]
    for i, size in enumerate(plan.sizes):
        for mode, color in MODES.items():
            xs, cs = _series(cells, size, mode)
            if xs:
                ax.plot(xs, [c["ratio-to-expected"] for c in cs], styles[i % 4], marker="o", color=color,
                        label=f"{mode}, {size / GiB:g} GiB")
    ax.axhline(1.0, color="k", lw=0.8)
    calc_time_axes(ax, "measured / expected from the guest's writes", legend_size=8)
    save(fig, path)
