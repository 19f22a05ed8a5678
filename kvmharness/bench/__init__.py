"""`kvmharness bench`: the seed's measurement table, reproduced side by side
with dirty-ring, actual guest rates, expectations and plots."""

import json
import os
import platform

from ..probe import probe
from .plan import plan
from .plots import plot_rates, plot_ratios
from .report import aggregate, markdown
from .runner import run_bench

__all__ = ["bench", "plan"]


def bench(the_plan, out_dir):
    """Run the plan, write table.md, results.json and the PNGs; return paths."""
    os.makedirs(out_dir, exist_ok=True)
    report = probe()
    records, baselines = run_bench(the_plan)
    cells = aggregate(records)
    host_line = f"{report.host_kind} KVM, {report.cpu_model}, {os.cpu_count()} CPUs, kernel {report.kernel}"
    paths = {
        "table": os.path.join(out_dir, "table.md"),
        "json": os.path.join(out_dir, "results.json"),
        "rates": os.path.join(out_dir, "rates.png"),
        "ratios": os.path.join(out_dir, "ratios.png"),
    }
    with open(paths["table"], "w") as f:
        f.write(markdown(the_plan, cells, records, baselines, host_line))
    with open(paths["json"], "w") as f:
        json.dump({
            "plan": {"sizes": the_plan.sizes, "calc-times-ms": the_plan.calc_times, "runs": the_plan.runs,
                     "wps": the_plan.wps, "modes": the_plan.modes, "pattern": the_plan.pattern,
                     "backing": the_plan.backing, "slots": the_plan.slots},
            "host": {"description": host_line, "python": platform.python_version(),
                     "memory-bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
            "probe": report.to_json(),
            "baselines": baselines,
            "cells": list(cells.values()),
            "windows": records,
        }, f, indent=1)
    plot_rates(the_plan, cells, paths["rates"])
    plot_ratios(the_plan, cells, paths["ratios"])
    return paths
