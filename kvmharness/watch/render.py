"""What `watch` shows: one live line per VM on a terminal (redrawn in
place), a line per reading when the output is not a terminal, JSON lines
for scripts, and a plot of each VM's dirty rate and verdict on exit."""

import json
import shutil
import time

from .. import units

PAGE = 4096


def _link(v):
    bw = units.format_bandwidth(v.bits_per_second).replace(" ", "")
    if v.converges:
        return f"{bw}: converges, {v.total_seconds:.1f} s"
    aids = ([f"auto-converge ~{v.throttle_pct} %"] if v.throttle_pct is not None else []) + \
        ([f"limit {v.dirty_limit_mb_s} MB/s/vCPU"] if v.dirty_limit_mb_s is not None else [])
    return f"{bw}: no" + (f" (converges with {' or '.join(aids)})" if aids else " (no aid helps)")


def line(reading, trend, now=None):
    """One VM's line: how old it is, dirty rate and its trend since the
    first reading, dirty(downtime), then each link's verdict and total
    time, or the aid that would make it converge (what matters first
    comes first: a narrow terminal cuts the end)."""
    now = time.time() if now is None else now
    age = f"[{now - reading.at:.0f} s old]"
    if not reading.up:
        return f"{reading.address} {age} {'REFUSED' if reading.refused else 'DOWN'}: {reading.error}"
    rate = reading.rate_pages * PAGE / 2**20
    change = "" if trend is None else f" (trend {trend * PAGE / 2**20:+.1f})"
    return (f"{reading.address} {age} {rate:.1f} MiB/s dirty{change}, {reading.dirty_pages_at_downtime:.0f} pages "
            f"per downtime ({reading.mode}) | " + " | ".join(_link(v) for v in reading.links))


def json_line(reading, trend):
    return json.dumps(reading.to_json() | {"trend-pages-per-second": None if trend is None else round(trend, 1)})


class Screen:
    """The live block of lines on a terminal: redrawn in place each time
    (cursor up, clear line), so each VM keeps one line.  Each line is cut
    to the terminal's width: a line that wrapped would take two rows and
    the next redraw would climb one row short."""

    def __init__(self, out):
        self.out = out
        self.drawn = 0

    def draw(self, lines, header):
        width = max(shutil.get_terminal_size().columns - 1, 20)
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        for text in [header, *lines]:
            shown = text if len(text) <= width else text[: width - 3] + "..."
            self.out.write("\x1b[2K" + shown + "\n")
        self.out.flush()
        self.drawn = len(lines) + 1


def plot(fleet, path):
    """Each VM's dirty rate over time, its points marked by the verdict on
    the first link (filled: converges, hollow: does not; x: down, +:
    refused by its QEMU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for address in fleet.vms:
        history = fleet.history(address)
        up = [r for r in history if r.up]
        if up:
            t = [r.at - fleet.started for r in up]
            rate = [r.rate_pages * PAGE / 2**20 for r in up]
            (drawn,) = ax.plot(t, rate, label=address)
            yes = [(x, y) for x, y, r in zip(t, rate, up) if r.links and r.links[0].converges]
            no = [(x, y) for x, y, r in zip(t, rate, up) if not (r.links and r.links[0].converges)]
            if yes:
                ax.scatter(*zip(*yes), color=drawn.get_color())
            if no:
                ax.scatter(*zip(*no), facecolors="none", edgecolors=drawn.get_color())
        for marker, refused in (("x", False), ("+", True)):
            missed = [r.at - fleet.started for r in history if not r.up and r.refused == refused]
            if missed:
                ax.scatter(missed, [0] * len(missed), marker=marker, color="black")
    first = units.format_bandwidth(fleet.links[0].bits_per_second)
    ax.set_xlabel("seconds since the watch began")
    ax.set_ylabel("dirty rate (MiB/s)")
    ax.set_title(f"dirty rate; filled: converges over {first} with {fleet.downtime * 1e3:g} ms downtime, "
                 f"hollow: does not, x: down, +: refused", fontsize=9)
    if fleet.vms:
        ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
