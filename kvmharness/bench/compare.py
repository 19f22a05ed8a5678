"""`bench --compare`: several hosts' bench results (results.json, as
bench/__init__.py writes them) side by side, so a fleet's numbers read in
one table and one plot: the cells (size, mode, calc-time, pattern) every
file measured, with each host's kind, CPU, kernel and first-write cost.

Older results lack some fields (the pattern before workloads existed: it
was random then; the CPU count outside the description): what a file does
not say reads "unknown".
"""

import json
import os
import re
from dataclasses import dataclass

from ..errors import UsageError
from .plan import MODES
from .plots import calc_time_axes, plt, save

GiB = 1 << 30
UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostResults:
    label: str  # A, B, ...
    path: str
    host_kind: str
    cpu: str
    cpus: str
    kernel: str
    first_write_us: str
    tsc_khz: str
    cells: dict  # (size, mode, calc-time-ms, pattern) -> the cell as results.json has it


def _field(value, fmt="{}"):
    return UNKNOWN if value is None else fmt.format(value)


def load(label, path):
    try:
        with open(path) as f:
            data = json.load(f)
        probe, host, pattern = data.get("probe", {}), data.get("host", {}), data["plan"].get("pattern", "random")
        cells = {(c["size"], c["mode"], c["calc-time-ms"], pattern): c for c in data["cells"]}
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{path} is not a kvmharness bench results.json ({type(e).__name__}: {e})") from None
    cpus = re.search(r"(\d+) CPUs", host.get("description", ""))
    return HostResults(label, path, _field(probe.get("host-kind")), _field(probe.get("cpu-model")),
                       cpus.group(1) if cpus else UNKNOWN, _field(probe.get("kernel")),
                       _field(probe.get("calibration", {}).get("first-write-under-dirty-logging-us"), "{:.2f}"),
                       _field(probe.get("tsc-khz")), cells)


def common_cells(hosts):
    """The cells every host measured, in bench order (size, mode, calc-time)."""
    keys = set.intersection(*(set(h.cells) for h in hosts))
    return sorted(keys, key=lambda k: (k[3], k[0], MODES.index(k[1]), k[2]))


def markdown(hosts, keys):
    lines = ["# Bench results side by side", "",
             "| host | file | kind | CPU | CPUs | kernel | first write under dirty logging (us) | TSC (kHz) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {h.label} | {h.path} | {h.host_kind} | {h.cpu} | {h.cpus} | {h.kernel} | {h.first_write_us} | "
              f"{h.tsc_khz} |" for h in hosts]
    lines += ["", "Dirty rate in MiB/s (median of the runs), and in brackets the ratio to the rate expected "
              "from the writes the guest really made (1.00 = exact), and the guest's writes/s during the windows.",
              "", "| pattern | size | mode | calc-time (ms) | theoretical (MiB/s) | "
              + " | ".join(f"{h.label} (MiB/s) [ratio, guest wr/s]" for h in hosts) + " |",
              "|---|---|---|---|---|" + "---|" * len(hosts)]
    for key in keys:
        pattern, size, mode, ms = key[3], key[0], key[1], key[2]
        row = [pattern, f"{size / GiB:g} GiB", mode, str(ms), f"{hosts[0].cells[key]['theoretical-rate']:.0f}"]
        for h in hosts:
            c = h.cells[key]
            row.append(f"{c['median']:.0f} [{c['ratio-to-expected']:.3f}, {c['guest-wps'] / 1e6:.2f}M]")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(hosts, keys, path):
    """One panel per (pattern, size, mode): dirty rate against calc-time, a line per host."""
    panels = sorted({(k[3], k[0], k[1]) for k in keys}, key=lambda p: (p[0], p[1], MODES.index(p[2])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (pattern, size, mode) in zip(axes[0], panels):
        mine = sorted((k for k in keys if (k[3], k[0], k[1]) == (pattern, size, mode)), key=lambda k: k[2])
        xs = [k[2] for k in mine]
        for h in hosts:
            ax.plot(xs, [h.cells[k]["median"] for k in mine], marker="o",
                    label=f"{h.label}: {h.host_kind}, {h.cpu}, {h.first_write_us} us")
        ax.plot(xs, [hosts[0].cells[k]["theoretical-rate"] for k in mine], "k--", label="theoretical")
        ax.set_title(f"{mode}, {size / GiB:g} GiB, {pattern}")
        calc_time_axes(ax, "dirty rate (MiB/s)", legend_size=7)
    save(fig, path)


def compare(paths, out_dir):
    """Write compare.md and compare.png into out_dir; returns their paths."""
    if len(paths) < 2:
        raise UsageError("--compare needs at least two results.json files")
    hosts = [load(chr(ord("A") + i), p) for i, p in enumerate(paths)]
    keys = common_cells(hosts)
    if not keys:
        raise UsageError("the results share no cell (size, mode, calc-time and pattern): nothing to compare")
    out = {"table": os.path.join(out_dir, "compare.md"), "plot": os.path.join(out_dir, "compare.png")}
    with open(out["table"], "w") as f:
        f.write(markdown(hosts, keys))
    plot(hosts, keys, out["plot"])
    return out
